"""Latent-direction traversal (paper 001, Sec. IV-E and Fig. 5).

A reference code (z ~ N(0, I) as in paper 001, or the mean code of the encoded real images) is moved
along the latent direction of a property (the weight vector of a linear model fitted on the encoded
real images, :func:`fit_linear_direction`) until the model predicts each target value; the generator
turns every moved code into an image, and the property is measured on the generated image with the
same threshold that measured the real ones.  The figure shows the middle slices of each image with the
target and the measured value under it, and the outline of the measurement mask.

:func:`traversal_warnings` says when a traversal does not mean what it seems to: a reference code
whose prediction lies far outside the real values (the linear model is extrapolated, e.g. when the
encoder maps every real image near one point), or generated images whose measured property barely
moves across the targets (the generator does not respond to the direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.io_utils import atomic_path
from synthmed.latent.properties import (
    DEFAULT_THRESHOLDS,
    IMAGE_PROPERTIES,
    UNITS,
    ThresholdOptions,
    brain_mask,
    measure_images,
    ventricle_mask,
)
from synthmed.latent.regression import LinearDirection


@dataclass
class Traversal:
    """Images generated along a latent direction.

    Attributes:
        property: the property.
        targets: (T,) values the linear model is moved to.
        predicted: (T,) the model's prediction at each moved code (equal to ``targets``).
        measured: (T,) the property measured on the generated images (None for non-image properties).
        images: (T, 1, *S) generated images in [-1, 1].
        reference: the model's prediction at the reference code.
        seed: seed of the reference code (prior samples).
        reference_kind: ``prior`` or ``codes-mean``.
        warnings: what makes this traversal hard to read (:func:`traversal_warnings`).
    """

    property: str
    targets: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray | None
    images: np.ndarray
    reference: float
    seed: int
    reference_kind: str = "prior"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "targets": self.targets.tolist(), "predicted": self.predicted.tolist(),
                "measured": None if self.measured is None else self.measured.tolist(), "reference": self.reference,
                "reference_kind": self.reference_kind, "seed": self.seed, "warnings": list(self.warnings)}


def traversal_warnings(trav: Traversal, real_values: np.ndarray, flat_fraction: float = 0.05) -> list[str]:
    """Warnings for a traversal, given the property's real values: the reference prediction lies more than
    one real range outside the real values; or the measured values span less than ``flat_fraction`` of
    the targets' span."""
    real = np.asarray(real_values, dtype=np.float64)
    real = real[np.isfinite(real)]
    out = []
    if len(real):
        lo, hi = float(real.min()), float(real.max())
        span = hi - lo
        if span > 0 and not lo - span <= trav.reference <= hi + span:
            out.append(f"the reference code ({trav.reference_kind}) predicts {trav.property} = {trav.reference:.4g}, "
                       f"far outside the real values [{lo:.4g}, {hi:.4g}]: the linear model is extrapolated there"
                       + (" (try --reference codes-mean)" if trav.reference_kind == "prior" else ""))
    if trav.measured is not None and len(trav.targets) > 1:
        moved = float(np.nanmax(trav.measured) - np.nanmin(trav.measured))
        asked = float(np.max(trav.targets) - np.min(trav.targets))
        if asked > 0 and moved < flat_fraction * asked:
            out.append(f"the measured {trav.property} spans {moved:.4g} across targets spanning {asked:.4g}: the "
                       "generated images barely respond to this direction")
    return out


def traverse(family: Any, params: Any, nets: dict[str, torch.nn.Module], direction: LinearDirection,
             targets: np.ndarray, spacing: list[float], seed: int = 0, device: torch.device | str = "cpu",
             opts: ThresholdOptions = DEFAULT_THRESHOLDS, z_ref: np.ndarray | None = None) -> Traversal:
    """Generate the traversal of ``direction`` through ``targets`` from the reference code ``z_ref`` (1, D)
    (default: the prior sample of ``seed``)."""
    kind = "prior" if z_ref is None else "codes-mean"
    if z_ref is None:
        z_ref = family.sample_latent(params, 1, torch.Generator().manual_seed(seed)).numpy()
    z_ref = np.asarray(z_ref, dtype=np.float64).reshape(1, -1)
    targets = np.asarray(targets, dtype=np.float64)
    z = direction.move_to(z_ref, targets)
    images = family.generate_images(nets, torch.as_tensor(z, dtype=torch.float32, device=device))
    measured = measure_images(images, spacing, direction.property, opts) if direction.property in IMAGE_PROPERTIES else None
    return Traversal(direction.property, targets, direction.predict(z), measured, images,
                     float(direction.predict(z_ref)[0]), seed, kind)


def _planes(img: np.ndarray) -> list[np.ndarray]:
    """Middle slices of a (*S) image along every axis, transposed for display (RAS: sagittal, coronal, axial)."""
    if img.ndim == 2:
        return [img.T]
    return [np.take(img, img.shape[a] // 2, axis=a).T for a in range(img.ndim)]


def save_traversal_figure(trav: Traversal, path: str | Path, spacing: list[float] | None = None,
                          opts: ThresholdOptions = DEFAULT_THRESHOLDS) -> Path:
    """Write the traversal as slice images (rows: planes; columns: steps) with target and measured value
    under each column; the measurement mask is drawn in green (as paper 001, Fig. 5)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: the user's backend stays
    from matplotlib.figure import Figure

    path = Path(path)
    n = len(trav.targets)
    unit = UNITS.get(trav.property, "")
    planes = [_planes(img[0]) for img in trav.images]
    masks = None
    if trav.property in IMAGE_PROPERTIES and spacing is not None:
        fn = ventricle_mask if trav.property == "ventricle_volume" else (lambda im, sp, o: brain_mask(im, o))
        masks = [_planes(fn(img[0], spacing, opts)) for img in trav.images]
    rows = len(planes[0])
    fig = Figure(figsize=(1.9 * n, 1.9 * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, n, squeeze=False)
    for j in range(n):
        for i in range(rows):
            ax = axes[i][j]
            ax.imshow(planes[j][i], cmap="gray", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
            if masks is not None and masks[j][i].any():  # the outline, so that the anatomy stays visible
                ax.contour(masks[j][i].astype(np.float32), levels=[0.5], colors=["#00e000"], linewidths=0.8)
            ax.set_xticks([]), ax.set_yticks([])
        label = f"target {trav.targets[j]:.1f}"
        if trav.measured is not None:
            label += f"\nmeasured {trav.measured[j]:.1f}"
        axes[-1][j].set_xlabel(f"{label} {unit}".strip(), fontsize=8)
    ref = f"seed {trav.seed}" if trav.reference_kind == "prior" else "mean code of the real images"
    fig.suptitle(f"latent direction of {trav.property} ({ref}; reference predicts {trav.reference:.1f} {unit})",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    return path
