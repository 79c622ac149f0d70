"""Occlusion feature-importance maps (paper 004, S.7) with MONAI's ``OcclusionSensitivity``.

Paper 004 masks every 2x2 neighbourhood of a test image in turn (no overlap), computes the increase
of the model's loss over the unmasked image, and normalises the map; similar maps of classifiers
trained on real and on synthetic data mean they attend to the same regions.  Here the loss is the
cross-entropy of the true label, ``-log p_y``; a patch's importance is ``-log p_y(masked) + log
p_y(image)``, and every map is divided by its largest absolute value.  The masked value is the
background (-1 in prepared images), the "zero" of paper 004's [0, 1] intensities.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from synthmed.utility.training import to_scores


class _Probabilities(nn.Module):
    """Class probabilities (B, K) of a classifier, also for the one-logit binary case."""

    def __init__(self, model: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.model = model
        self.n_classes = n_classes

    def forward(self, x: Tensor) -> Tensor:
        s = to_scores(self.model(x), self.n_classes)
        return torch.stack([1 - s, s], dim=1) if self.n_classes == 2 else s


@torch.no_grad()
def occlusion_importance(model: nn.Module, images: np.ndarray, labels: np.ndarray, n_classes: int = 2,
                         mask_size: int = 4, overlap: float = 0.0, fill: float = -1.0, n_batch: int = 16,
                         device: str | torch.device = "cpu") -> np.ndarray:
    """Normalised loss-increase maps of ``images`` under occlusion.

    Args:
        model: the trained classifier (logits); used in eval mode.
        images: (N, 1, *S) real test images in [-1, 1].
        labels: (N,) their true labels.
        n_classes: number of classes.
        mask_size: patch edge in voxels.
        overlap: overlap of neighbouring patches in [0, 1).
        fill: value of the occluded patch.
        n_batch: occluded images per forward pass.

    Returns:
        (N, *S) maps in [-1, 1]: positive where masking raises the loss (important regions).
    """
    from monai.visualize import OcclusionSensitivity

    wrapped = _Probabilities(model, n_classes).to(device).eval()
    occ = OcclusionSensitivity(wrapped, mask_size=mask_size, n_batch=n_batch, mode=float(fill), overlap=overlap,
                               activate=False, verbose=False)
    maps = []
    for img, y in zip(images, labels, strict=True):
        x = torch.from_numpy(np.ascontiguousarray(img[None], dtype=np.float32)).to(device)
        p_orig = float(wrapped(x)[0, int(y)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MONAI's indexing deprecation notice
            occ_map, _ = occ(x)
        p_masked = occ_map[0, int(y)].double().clamp_min(1e-12)
        m = (-torch.log(p_masked) + np.log(max(p_orig, 1e-12))).cpu().numpy()
        peak = float(np.abs(m).max())
        maps.append((m / peak if peak > 0 else m).astype(np.float32))
    return np.stack(maps)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps over all voxels (NaN when either is constant)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
