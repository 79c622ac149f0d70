"""Inception score (Salimans et al. 2016, "Improved Techniques for Training GANs", NeurIPS, Sec. 4)
and its 3D form on the middle planes of volumes (paper 001, HA-GAN, Sun et al., Sec. IV-B.1).

``IS = exp(E_x KL(p(y|x) || p(y)))``: high when each image is classified confidently (low entropy
of p(y|x)) and the classes are spread over the set (high entropy of the marginal p(y)); it lies in
[1, C] for C classes.  As in the reference implementation released with Salimans et al., the N
predictions are cut in ``splits`` consecutive parts, the score is computed with each part's own
marginal p(y), and the mean and standard deviation over parts are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import scipy.special
import torch
from torch import Tensor, nn

from synthmed.features.planes import PLANE_NAMES, plane_slices
from synthmed.progress import progress as progress_bar
from synthmed.registry import METRICS

#: Largest deviation from 1 tolerated in a row sum of ``probs`` (float32 softmax round-off).
_ROW_SUM_TOL = 1e-3


def _check_probs(probs: np.ndarray) -> np.ndarray:
    """Validated (N, C) float64 probabilities, round-off negatives clipped and rows renormalised."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"probs must be a non-empty (N, C) array of class probabilities, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"probs contains NaN or Inf in {int((~np.isfinite(p)).any(axis=1).sum())} of {len(p)} rows")
    if p.min() < -1e-6:
        raise ValueError(f"probs must be non-negative probabilities (softmax outputs, not logits); "
                         f"minimum is {p.min():.3g}")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > _ROW_SUM_TOL)
    if bad.size:
        raise ValueError(f"every row of probs must sum to 1 (softmax outputs, not logits); row {bad[0]} sums "
                         f"to {sums[bad[0]]:.6g} ({bad.size} of {len(p)} rows off by more than {_ROW_SUM_TOL})")
    p = np.clip(p, 0.0, None)
    return p / p.sum(axis=1, keepdims=True)


@METRICS.register("inception_score", help="Inception score exp(E KL(p(y|x) || p(y))) over splits (Salimans 2016).")
def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception score of class probabilities (Salimans et al. 2016, Sec. 4).

    Args:
        probs: (N, C) rows p(y|x) of a classifier (softmax outputs; rows must sum to 1).
        splits: number of consecutive parts the N rows are cut into (10 in Salimans et al.);
            1 <= splits <= N.

    Returns:
        ``(mean, std)`` of ``exp(mean_x KL(p(y|x) || p_part(y)))`` over the parts (population
        standard deviation, as the reference code's ``np.std``).

    Raises:
        ValueError: for a wrong shape, NaN/Inf, negative entries, rows not summing to 1 or an
            invalid ``splits``.
    """
    p = _check_probs(probs)
    n = p.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or not 1 <= splits <= n:
        raise ValueError(f"splits must be an integer in [1, N = {n}], got {splits!r}")
    scores = []
    for k in range(splits):
        part = p[k * n // splits:(k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)).sum(axis=1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass(frozen=True)
class InceptionScorePlanes(Mapping[str, Any]):
    """Inception score on the middle slices of the three orthogonal planes (paper 001, Sec. IV-B.1).

    A read-only mapping of its fields too, so it serialises to JSON as a dict; ``float(result)``
    is the mean.

    Attributes:
        mean: average over planes of each plane's mean score (the value paper 001 reports).
        std: average over planes of each plane's standard deviation over splits.
        per_plane: plane name -> (mean, std); ``sagittal``/``coronal``/``axial`` for volumes in RAS
            order (the planes normal to array axes 0, 1, 2), ``image`` for 2D inputs.
        n: number of images or volumes.
        splits: parts each plane's N predictions were cut into.
        num_classes: C, the classifier's outputs.
    """

    mean: float
    std: float
    per_plane: dict[str, tuple[float, float]]
    n: int
    splits: int
    num_classes: int

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def __float__(self) -> float:
        return float(self.mean)

    def __str__(self) -> str:
        planes = ", ".join(f"{name} {m:.3f} ± {s:.3f}" for name, (m, s) in self.per_plane.items())
        return f"{self.mean:.3f} ± {self.std:.3f} ({planes}; n={self.n}, {self.splits} splits)"


@torch.no_grad()
def inception_score_planes(
    volumes: np.ndarray | Tensor,
    classifier: Callable[[Tensor], Tensor],
    splits: int | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> InceptionScorePlanes:
    """Inception score of 3D volumes on their middle axial, coronal and sagittal slices.

    Paper 001 (HA-GAN, Sec. IV-B.1, "Quantitative Evaluation"; IS columns of Tables II and III),
    following 3D-StyleGAN (its ref. [29]): "we measure the Inception Scores on the middle slices on
    axial, coronal, and sagittal planes of the generated 3D images and report averaged
    performance."  So for each plane the middle slice of every volume (index ``(S - 1) // 2``,
    :func:`synthmed.features.planes.plane_slices`) is classified, the Inception score of those N
    slices is computed (:func:`inception_score`), and the three plane scores are averaged.  The
    paper's "±" comes from its 5-fold cross-validation (Sec. IV); here ``std`` is the average
    over planes of the spread over splits, so run once per fold to reproduce the paper's.

    2D inputs (N, 1, H, W) are scored directly (one plane, ``"image"``).

    Args:
        volumes: (N, 1, D, H, W) volumes (or (N, 1, H, W) images) in [-1, 1], NumPy (a memory map
            is read per batch) or torch.
        classifier: a 2D network or function (B, 1, S1, S2) -> logits (B, C), e.g.
            ``InceptionV3Extractor(...).logits``; it must accept every plane's slice size (the
            Inception extractor resizes).  If it is an ``nn.Module`` (or a bound method of one) it is
            run in eval mode and its mode restored afterwards; it is not moved.
        splits: parts for the score (default ``min(10, N)``, 10 being Salimans et al.'s).
        batch_size: volumes per forward pass (each gives three slices).
        device: where slices are sent; default the classifier's device (CPU for plain functions).
        progress: show a progress bar.

    Returns:
        :class:`InceptionScorePlanes` (mean, std, per-plane (mean, std), n, splits, num_classes).

    Raises:
        ValueError: for a wrong input shape, ``batch_size < 1`` or invalid ``splits``.
    """
    if volumes.ndim not in (4, 5) or volumes.shape[1] != 1 or volumes.shape[0] < 1:
        raise ValueError(f"volumes must be (N, 1, D, H, W) or (N, 1, H, W) with N >= 1, got {tuple(volumes.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(volumes.shape[0])
    splits = min(10, n) if splits is None else splits
    owner = getattr(classifier, "__self__", classifier)
    module = owner if isinstance(owner, nn.Module) else None
    if device is None:
        first = next(module.parameters(), None) if module is not None else None
        device = first.device if first is not None else torch.device("cpu")
    planes = list(PLANE_NAMES) if volumes.ndim == 5 else ["image"]
    probs: dict[str, list[np.ndarray]] = {name: [] for name in planes}
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        for start in progress_bar(range(0, n, batch_size), desc="inception score", disable=not progress,
                                  leave=False):
            batch = volumes[start:start + batch_size]
            batch = torch.from_numpy(np.array(batch, dtype=np.float32)) if not isinstance(batch, Tensor) else batch
            batch = batch.to(device=device, dtype=torch.float32)
            for axis, name in enumerate(planes):
                images = plane_slices(batch, axis, 1) if batch.ndim == 5 else batch
                logits = classifier(images)
                if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
                    raise ValueError(f"classifier must return logits (B, C) for B = {images.shape[0]} slices, "
                                     f"got shape {tuple(logits.shape)}")
                probs[name].append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    finally:
        if module is not None:
            module.train(was_training)
    per_plane = {name: inception_score(np.concatenate(chunks), splits) for name, chunks in probs.items()}
    return InceptionScorePlanes(
        mean=float(np.mean([m for m, _ in per_plane.values()])),
        std=float(np.mean([s for _, s in per_plane.values()])),
        per_plane=per_plane,
        n=n,
        splits=int(splits),
        num_classes=int(probs[planes[0]][0].shape[1]),
    )
