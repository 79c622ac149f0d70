"""Paper 003's "GAN-train": a support vector machine on extracted image features.

Paper 003 trains "the simplest SVM" on features of a pretrained CNN (VGG-16) of synthetic images
and tests it on real ones, reporting sensitivity, specificity and their harmonic mean.  Here the
features come from any registered extractor (:mod:`synthmed.features`): VGG-16 / Inception /
MedicalNet with local weights, or by default ``indomain-ae``, the in-domain autoencoder trained per
fold on that fold's REAL TRAINING images only (unsupervised), so no validation or test subject
shapes the feature space.  Features are standardised on the training set; the SVM is scikit-learn's
``SVC`` (linear kernel by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synthmed.registry import CLASSIFIERS


@dataclass
class SVMParams:
    """GAN-train SVM settings.

    Attributes:
        extractor: registered feature extractor (``synthmed list``), e.g. ``indomain-ae``,
            ``vgg16`` (paper 003), ``medicalnet-resnet50``, ``planes:vgg16``.
        weights: the extractor's local weight file; empty with ``indomain-ae``: trained per fold
            on the fold's real training images.
        extractor_iterations: training steps of the per-fold ``indomain-ae``.
        kernel: SVM kernel.
        C: SVM regularisation.
    """

    extractor: str = "indomain-ae"
    weights: str = ""
    extractor_iterations: int = 300
    kernel: Literal["linear", "rbf"] = "linear"
    C: float = 1.0


@CLASSIFIERS.register("svm", help="Paper 003 GAN-train: SVM on extracted features (sensitivity, specificity, HM)")
class GANTrainSVM:
    """Standardise features, fit ``sklearn.svm.SVC``; scores are decision values (class 1 positive).

    Args:
        params: :class:`SVMParams`.
        seed: seeds the SVM's internal randomness.
    """

    Params = SVMParams

    def __init__(self, params: SVMParams | None = None, seed: int = 0) -> None:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.params = params or SVMParams()
        self.model = make_pipeline(StandardScaler(), SVC(kernel=self.params.kernel, C=self.params.C,
                                                         decision_function_shape="ovr", random_state=seed))

    def fit(self, features: np.ndarray, labels: np.ndarray) -> GANTrainSVM:
        """features: (N, D); labels: (N,) integers."""
        self.model.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))
        return self

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N,) decision values of class 1 (two classes) or (N, K) softmax of the one-vs-rest
        decision values (scores that sum to one, as the multi-class AUC needs)."""
        d = np.asarray(self.model.decision_function(np.asarray(features, dtype=np.float64)))
        if d.ndim == 1:
            return d
        e = np.exp(d - d.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(features, dtype=np.float64)))


def fold_extractor(params: SVMParams, train_images: np.ndarray, cache: Path, seed: int, device: str,
                   progress: bool) -> object:
    """The feature extractor of one fold: with weights, the registered extractor; ``indomain-ae``
    without weights is trained on ``train_images`` (the fold's real training images) and cached at
    ``cache`` (reused on resume)."""
    from synthmed.features.base import build_extractor
    from synthmed.features.indomain import train_indomain_extractor

    weights = params.weights or None
    if weights is None and params.extractor == "indomain-ae":
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            train_indomain_extractor(np.asarray(train_images, dtype=np.float32), cache,
                                     iterations=params.extractor_iterations, seed=seed, device=device,
                                     progress=progress)
        weights = str(cache)
    return build_extractor(params.extractor, weights=weights).to(device).eval()
