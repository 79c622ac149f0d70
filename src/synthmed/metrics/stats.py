"""Uncertainty of metric values: bootstrap confidence intervals.

Paper 000 reports every fidelity metric as a mean with a 95% confidence interval (over ten synthetic
sets); when only one real and one synthetic set exist, resampling both is the practical substitute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from synthmed.metrics.feature import ArrayLike


class BootstrapCI(NamedTuple):
    """A metric value with a percentile bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float


def _take(x: ArrayLike, idx: np.ndarray) -> ArrayLike:
    """Rows ``idx`` of a NumPy array or torch tensor, keeping its type."""
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx).to(x.device)]
    return np.asarray(x)[idx]


def _scalar(result: Any) -> float:
    try:
        return float(result)
    except TypeError:
        raise TypeError(
            f"metric_fn must return a number (or a result with __float__), got {type(result).__name__}; "
            "wrap tuple-valued metrics, e.g. lambda r, f: precision_recall(r, f).precision"
        ) from None


def bootstrap_ci(
    metric_fn: Callable[[ArrayLike, ArrayLike], Any],
    real: ArrayLike,
    fake: ArrayLike,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap confidence interval of ``metric_fn(real, fake)`` (Efron & Tibshirani 1993).

    Both sets are resampled with replacement, independently, ``n_boot`` times.

    Caveat: resampling with replacement creates duplicate samples. Metrics built on k-nearest-neighbour
    radii (precision/recall, density/coverage, minimum ISD) see duplicates as zero-distance neighbours,
    which shrinks radii and biases the bootstrap distribution; read those intervals as indicative.

    Args:
        metric_fn: ``(real, fake) -> number``; results with ``__float__`` (FIDResult, MMDResult) work.
        real: (N, ...) real samples (features or images), NumPy or torch.
        fake: (M, ...) synthetic samples.
        n_boot: number of bootstrap replicates.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of the resampling.

    Returns:
        ``BootstrapCI(value, low, high)``: value on the full sets, and the ``alpha/2`` and
        ``1 - alpha/2`` percentiles of the replicates.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    value = _scalar(metric_fn(real, fake))
    rng = np.random.default_rng(seed)
    n, m = len(real), len(fake)
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        replicates[b] = _scalar(
            metric_fn(_take(real, rng.integers(n, size=n)), _take(fake, rng.integers(m, size=m)))
        )
    low, high = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(value, float(low), float(high))
