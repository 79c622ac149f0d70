"""Uncertainty of metric values: bootstrap confidence intervals.

Paper 000 reports every fidelity metric as a mean with a 95% confidence interval (over ten synthetic
sets). :func:`bootstrap_sets` gives that interval from resampling the real set and every synthetic set
together, so it exists with one set too and covers the real set's sampling variation;
:func:`bootstrap_ci` is the percentile interval of one metric on one pair of sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


class SetsInterval(NamedTuple):
    """A metric averaged over synthetic sets, with its bootstrap standard error and 95% interval."""

    value: float
    low: float
    high: float
    se: float
    per_set: list[float]
    n_boot: int


def bootstrap_sets(
    metric_fn: Callable[[ArrayLike, ArrayLike], Mapping[str, float]],
    real: ArrayLike,
    fakes: Sequence[ArrayLike],
    n_boot: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, SetsInterval]:
    """Metrics averaged over synthetic sets, with intervals from resampling real and synthetic together.

    The value of each metric is its mean over the sets ``fakes`` against the whole ``real`` set. Each of
    the ``n_boot`` replicates resamples the real rows and the rows of every set with replacement
    (independently) and averages the metric over the resampled sets; the standard error is the standard
    deviation of the replicates and the interval the standard bootstrap interval ``value -/+ z se``
    (Efron and Tibshirani 1993, Sec. 6.2 and 13.3), clipped to the metric's range. It is centred on the
    estimate on purpose: duplicated rows in a replicate shrink k-NN radii and covariance ranks, which
    shifts the replicates of FID and the k-NN metrics (a percentile interval can then miss its own
    estimate), but changes their spread far less. The interval covers the sampling variation of the
    real set as well as of the synthetic sets, and exists with a single set.

    Args:
        metric_fn: ``(real, fake) -> {name: value}``, the same names every call.
        real: (N, ...) real samples.  fakes: R synthetic sets (M_r, ...).
        n_boot: replicates (each evaluates ``metric_fn`` R times), at least 2.
        confidence: coverage of the interval.
        seed: seed of the resampling.
        bounds: ``{name: (low, high)}`` range of a metric (None: unbounded on that side).

    Returns:
        ``{name: SetsInterval}``.
    """
    from scipy.stats import norm

    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not fakes:
        raise ValueError("give at least one synthetic set")
    per_set = [dict(metric_fn(real, f)) for f in fakes]
    names = list(per_set[0])
    rng = np.random.default_rng(seed)
    reps = np.empty((n_boot, len(names)))
    n = len(real)
    for b in range(n_boot):
        r = _take(real, rng.integers(n, size=n))
        vals = [metric_fn(r, _take(f, rng.integers(len(f), size=len(f)))) for f in fakes]
        reps[b] = [np.mean([v[k] for v in vals]) for k in names]
    z = float(norm.ppf(0.5 + confidence / 2))
    out = {}
    for j, k in enumerate(names):
        values = [float(v[k]) for v in per_set]
        value, se = float(np.mean(values)), float(np.std(reps[:, j], ddof=1))
        lo, hi = (bounds or {}).get(k, (None, None))
        low, high = value - z * se, value + z * se
        low = low if lo is None else max(low, lo)
        high = high if hi is None else min(high, hi)
        out[k] = SetsInterval(value, float(low), float(high), se, values, n_boot)
    return out
