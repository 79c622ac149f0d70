"""The feature-extractor interface, its registry and batched extraction.

Every fidelity/diversity metric (FID, KID, MMD, PRDC ...) is computed in a declared feature space;
a metric value is meaningless without it (DESIGN.md section 4, "Metrics take features").  A
:class:`FeatureExtractor` therefore carries everything a result must record: its name, the
SHA-256 of its weights and the input transform it applies (:meth:`FeatureExtractor.describe`).

Extractors are registered by name in :data:`EXTRACTORS` (as in torch-fidelity's feature-extractor
registry) and built with :func:`build_extractor`; ``planes:<name>`` wraps a 2D extractor into the
2.5D three-plane mode of :mod:`synthmed.features.planes`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthmed.errors import ConfigError
from synthmed.progress import progress as progress_bar
from synthmed.registry import Registry

#: Feature extractors by name; every entry is called as ``factory(weights=..., **kwargs)``.
EXTRACTORS: Registry[Any] = Registry("feature extractor")

#: The extractor metrics use when the user gives no external weights (trained on the real
#: training split, see :mod:`synthmed.features.indomain`).
DEFAULT_EXTRACTOR = "indomain-ae"

#: Prefix of the 2.5D wrapper: ``planes:indomain-ae`` applies ``indomain-ae`` to three planes.
PLANES_PREFIX = "planes:"


class FeatureExtractor(nn.Module):
    """Base class of every feature extractor: images (B, 1, *spatial) -> features (B, D).

    Subclasses set the attributes below in ``__init__`` and implement :meth:`forward`, which must
    apply the whole input transform itself (inputs are prepared images in [-1, 1]), so that the
    same call gives the same features wherever it is made.

    Attributes:
        name: the registry name (``medicalnet-resnet50``, ``indomain-ae`` ...).
        spatial_dims: 2 or 3, the dimensionality of the inputs.
        feature_dim: D, the length of one feature vector.
        weights_sha256: SHA-256 of the weight file, or None for untrained weights.
        preprocessing: JSON-serialisable description of the input transform applied in forward,
            e.g. ``{"range": [-1, 1], "resize": [64, 64, 64], "normalise": "zscore-per-volume"}``.
    """

    name: str = "feature-extractor"
    spatial_dims: int = 3
    feature_dim: int = 0
    weights_sha256: str | None = None
    preprocessing: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.preprocessing = {}

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Map images ``x: (B, 1, *spatial)`` in [-1, 1] to features ``(B, feature_dim)``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a metric result must record about its feature space.

        Returns:
            ``{"name", "spatial_dims", "feature_dim", "weights_sha256", "preprocessing"}``,
            JSON-serialisable.
        """
        return {
            "name": self.name,
            "spatial_dims": int(self.spatial_dims),
            "feature_dim": int(self.feature_dim),
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing,
        }

    def describe_sha256(self) -> str:
        """SHA-256 of :meth:`describe` as canonical JSON; identifies the feature space."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def check_input(self, x: Tensor) -> None:
        """ValueError unless ``x`` is (B, 1, *spatial) with ``spatial_dims`` spatial axes."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != 1:
            raise ValueError(f"{self.name}: expected images of shape (B, 1, {', '.join(['S'] * self.spatial_dims)}),"
                             f" got {tuple(x.shape)}")


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Features of a stack of images, batch by batch, in eval mode and without gradients.

    The extractor is moved to ``device``; its train/eval mode is restored afterwards.  Results do
    not depend on ``batch_size`` (eval-mode BatchNorm, per-volume preprocessing).

    Args:
        extractor: a :class:`FeatureExtractor`.
        images: (N, 1, *spatial) array in [-1, 1] (a memory map is fine; it is read per batch).
        batch_size: images per forward pass.
        device: where to run the extractor.
        progress: show a tqdm progress bar.

    Returns:
        (N, D) float32 features, D = ``extractor.feature_dim``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.ndim != extractor.spatial_dims + 2 or images.shape[1] != 1:
        raise ValueError(f"{extractor.name}: expected images (N, 1, *spatial) with {extractor.spatial_dims} "
                         f"spatial dims, got {images.shape}")
    was_training = extractor.training
    extractor.to(device).eval()
    out = np.empty((images.shape[0], extractor.feature_dim), dtype=np.float32)
    try:
        starts = range(0, images.shape[0], batch_size)
        for start in progress_bar(starts, desc=f"features {extractor.name}", disable=not progress, leave=False):
            batch = np.array(images[start:start + batch_size], dtype=np.float32)  # a writable copy (mmaps are read-only)
            feats = extractor(torch.from_numpy(batch).to(device))
            out[start:start + len(batch)] = feats.float().cpu().numpy()
    finally:
        extractor.train(was_training)
    return out


def build_extractor(name: str, weights: str | None = None, **kwargs: Any) -> FeatureExtractor:
    """Build a registered feature extractor by name.

    Args:
        name: a name in :data:`EXTRACTORS` (``medicalnet-resnet50``, ``indomain-ae`` ...) or
            ``planes:<name>`` for the 2.5D three-plane mode of a 2D extractor.
        weights: path of the weight file (required by every extractor; nothing downloads).
        **kwargs: passed to the extractor's factory (``sha256=``, ``resize=`` ...); for
            ``planes:`` names, ``slices_per_plane`` and ``reduce`` go to the wrapper.

    Raises:
        ConfigError: for an unknown name (listing the registered names).
        CheckpointError: for a missing or mismatching weight file.
    """
    import synthmed.features  # noqa: F401  (fills EXTRACTORS)

    if name in EXTRACTORS:
        return EXTRACTORS.get(name)(weights=weights, **kwargs)
    if name.startswith(PLANES_PREFIX):
        from synthmed.features.planes import ThreePlaneExtractor

        wrapper_kw = {k: kwargs.pop(k) for k in ("slices_per_plane", "reduce") if k in kwargs}
        inner = build_extractor(name[len(PLANES_PREFIX):], weights=weights, **kwargs)
        return ThreePlaneExtractor(inner, **wrapper_kw)
    choices = ", ".join(EXTRACTORS.names())
    raise ConfigError(f"unknown feature extractor {name!r}; expected one of: {choices} "
                      f"(or {PLANES_PREFIX}<2D extractor>)")
