"""Memorisation and privacy checks of a synthetic cohort against the real training cohort.

Three questions, each answered with nearest-neighbour distances:

* Which training record is closest to each synthetic sample (:func:`nearest_neighbours`,
  :func:`nearest_neighbour_figure`)? Paper 004 (Sec. S.6, Figs. 4, S2-S5) shows synthetic images beside
  their nearest training images, found by cosine distance between the 1,024-d final dense-layer features
  of a classifier trained on the real data, because a feature space is invariant to small shifts and
  rotations where pixel space is not.
* Are synthetic samples closer to the training records than unseen real records are
  (:func:`dcr_analysis`, distance to closest record, DCR)? A generator that copies its training data has
  synthetic DCRs far below the DCRs of held-out real records.
* Can an attacker tell training records from held-out records by their distance to the synthetic set
  (:func:`membership_inference_auc`)?

Inputs are images ``(N, C, *spatial)`` (2 or 3 spatial dims, intensities in ``[-1, 1]``) or feature
vectors ``(N, D)``, as NumPy arrays or torch tensors. Metrics:

* ``"l2"``: Euclidean distance between flattened images (raw intensities, not rescaled) or features.
* ``"cosine"``: ``1 - a.b / (|a| |b|)`` as in paper 004 S.6 (scipy's ``cdist(..., "cosine")``); meant for
  classifier features, where it ignores the feature norm.
* ``"ssim"``: ``1 - SSIM`` (MONAI ``SSIMMetric``, intensities mapped to [0, 1]); images only and slow,
  see :class:`SSIMConfig`.

Distances are ranked block by block with :func:`synthmed.metrics.feature.sq_distance_chunks` (memory: the
flattened float64 inputs plus one block) and the chosen neighbours' distances are then recomputed
exactly, so an exact copy has distance 0, not round-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.stats
import torch

from synthmed.data.preview import save_slice_grid
from synthmed.metrics.feature import BLOCK_BYTES, ArrayLike, as_float64, sq_distance_chunks

#: Distance used to find neighbours.
Metric = Literal["l2", "cosine", "ssim"]
_METRICS = ("l2", "cosine", "ssim")


@dataclass(frozen=True)
class SSIMConfig:
    """How ``metric="ssim"`` searches.

    Cost: each image pair costs one MONAI SSIM evaluation, i.e. five Gaussian-window filterings of P
    voxels with a dense ``win_size ** d`` window (d spatial dims): about ``5 P win_size^d``
    multiply-adds, ~4e7 for a 128 x 128 image and ~2e9 for a 64^3 volume. An exhaustive search
    needs M x N pairs, so by default the ``candidates`` nearest training images in L2 are pre-selected
    and only those are re-ranked by SSIM (M x candidates pairs). The result is then exact only if the
    SSIM-nearest image is among the L2-nearest candidates, which holds for copies and near-copies (the
    memorisation case) but not in general.

    Attributes:
        candidates: training images per synthetic image pre-selected by L2 (at least k); ``None``
            compares every pair (exhaustive).
        max_pairs: refuse to run (ValueError) when more pairs than this would be scored.
        win_size, kernel_sigma: Gaussian window of SSIM; images need at least ``win_size`` voxels a side.
        batch_size: pairs per MONAI call.
        value_range: intensity range of the inputs, mapped to [0, 1] (SSIM data range 1).
    """

    candidates: int | None = 16
    max_pairs: int = 200_000
    win_size: int = 11
    kernel_sigma: float = 1.5
    batch_size: int = 64
    value_range: tuple[float, float] = (-1.0, 1.0)


# ---------------------------------------------------------------- neighbour search


def _rows(x: ArrayLike, name: str) -> np.ndarray:
    """A float64 copy of ``(N, D)`` features, or of ``(N, C, *spatial)`` images flattened to ``(N, C * P)``
    (always a copy, so :func:`_prepared` can centre or normalise it in place: at 1,000 x 64^3 images
    each extra copy is 2 GB)."""
    a = np.array(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64, copy=True)
    if a.ndim in (4, 5):
        a = a.reshape(a.shape[0], -1)
    elif a.ndim != 2:
        raise ValueError(f"{name} must be features (N, D) or images (N, C, *spatial), got shape {a.shape}")
    if a.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _prepared(query: ArrayLike, ref: ArrayLike, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows ready for :func:`sq_distance_chunks`: centred on the reference mean (l2) or unit-norm (cosine).

    For unit vectors ``|a - b|^2 = 2 - 2 cos(a, b)``, so ranking squared L2 ranks cosine distance.
    """
    q, r = _rows(query, "query"), _rows(ref, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference dims differ: {q.shape[1]} vs {r.shape[1]}")
    if metric == "l2":
        mu = r.mean(axis=0)  # translation invariant; keeps |a|^2 + |b|^2 - 2ab accurate
        q -= mu
        r -= mu
        return q, r
    for name, a in (("query", q), ("reference", r)):
        norm = np.linalg.norm(a, axis=1, keepdims=True)
        if (norm == 0).any():
            raise ValueError(f"cosine distance is undefined for all-zero {name} rows")
        a /= norm
    return q, r


def _exact(q: np.ndarray, r: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    """Distances ``(M, k)`` between ``q[i]`` and ``r[idx[i, j]]``, computed directly in bounded blocks."""
    m, k = idx.shape
    rows = max(1, BLOCK_BYTES // (8 * k * q.shape[1]))
    out = np.empty((m, k))
    for s in range(0, m, rows):
        a, b = q[s : s + rows, None, :], r[idx[s : s + rows]]  # (rows, 1, D), (rows, k, D)
        if metric == "l2":
            out[s : s + rows] = np.sqrt(((a - b) ** 2).sum(axis=2))
        else:
            out[s : s + rows] = np.maximum(1.0 - (a * b).sum(axis=2), 0.0)
    return out


def _vector_neighbours(
    query: ArrayLike, ref: ArrayLike, metric: str, k: int, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest ``ref`` rows of each ``query`` row under "l2" or "cosine": indices and distances (M, k)."""
    q, r = _prepared(query, ref, metric)
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    for start, d in sq_distance_chunks(q, r, chunk_size):
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.argsort(d, axis=1)
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        idx[start : start + d.shape[0]] = np.take_along_axis(part, order, axis=1)
    dist = _exact(q, r, idx, metric)
    order = np.argsort(dist, axis=1, kind="stable")  # round-off can swap near-ties
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _unit_tensor(x: ArrayLike, value_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return torch.as_tensor((as_float64(x) - lo) / (hi - lo), dtype=torch.float32)


def _ssim_scores(
    a: torch.Tensor, b: torch.Tensor, ia: np.ndarray, ib: np.ndarray, cfg: SSIMConfig
) -> np.ndarray:
    """SSIM of the image pairs ``(a[ia[p]], b[ib[p]])``, shape (P,), in batches of ``cfg.batch_size``."""
    from monai.metrics import SSIMMetric  # imported here: monai is slow to import

    metric = SSIMMetric(
        spatial_dims=a.ndim - 2, data_range=1.0, win_size=cfg.win_size, kernel_sigma=cfg.kernel_sigma
    )
    scores = np.empty(len(ia))
    with torch.no_grad():
        for s in range(0, len(ia), cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            scores[sl] = metric(a[ia[sl]], b[ib[sl]]).reshape(-1).double().numpy()
            metric.reset()  # the metric buffers every batch otherwise
    return scores


def _ssim_neighbours(
    query: ArrayLike, ref: ArrayLike, k: int, chunk_size: int | None, cfg: SSIMConfig
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest ``ref`` images of each ``query`` image under ``1 - SSIM``: indices and distances (M, k)."""
    if query.ndim not in (4, 5) or tuple(query.shape[1:]) != tuple(ref.shape[1:]):
        raise ValueError(
            "metric='ssim' needs two image batches (N, C, *spatial) of one image shape, got "
            f"{tuple(query.shape)} and {tuple(ref.shape)}"
        )
    if min(query.shape[2:]) < cfg.win_size:
        raise ValueError(
            f"images of {min(query.shape[2:])} voxels a side are smaller than win_size={cfg.win_size}"
        )
    m, n = query.shape[0], ref.shape[0]
    c = n if cfg.candidates is None else min(n, max(k, cfg.candidates))
    if m * c > cfg.max_pairs:
        raise ValueError(
            f"SSIM search would score {m} x {c} = {m * c} pairs > max_pairs={cfg.max_pairs}; "
            "lower SSIMConfig.candidates or raise max_pairs (see SSIMConfig for the cost)"
        )
    if c < n:
        cand, _ = _vector_neighbours(query, ref, "l2", c, chunk_size)
    else:
        cand = np.broadcast_to(np.arange(n), (m, n))
    a, b = _unit_tensor(query, cfg.value_range), _unit_tensor(ref, cfg.value_range)
    ssim = _ssim_scores(a, b, np.repeat(np.arange(m), c), cand.reshape(-1), cfg).reshape(m, c)
    dist = np.maximum(1.0 - ssim, 0.0)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(dist, order, axis=1)


def nearest_neighbours(
    synthetic: ArrayLike,
    train: ArrayLike,
    metric: Metric = "l2",
    k: int = 1,
    chunk_size: int | None = None,
    ssim: SSIMConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest training records of each synthetic sample (paper 004, Sec. S.6).

    Args:
        synthetic: (M, C, *spatial) images or (M, D) features (any query set: also real records).
        train: (N, C, *spatial) images or (N, D) features of the same kind and shape.
        metric: "l2", "cosine" or "ssim" (``1 - SSIM``, images only; see :class:`SSIMConfig` for its cost).
        k: neighbours per sample, 1 <= k <= N.
        chunk_size: synthetic rows per block of pairwise distances (``None``: fit the memory budget).
        ssim: search settings for ``metric="ssim"`` (default :class:`SSIMConfig`).

    Returns:
        ``(indices, distances)``, both (M, k): training indices sorted by increasing distance.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    n = train.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of training records), got {k}")
    if metric == "ssim":
        return _ssim_neighbours(synthetic, train, k, chunk_size, ssim or SSIMConfig())
    return _vector_neighbours(synthetic, train, metric, k, chunk_size)


# ---------------------------------------------------------------- DCR and membership inference


def dcr_analysis(
    synthetic: ArrayLike,
    train: ArrayLike,
    holdout: ArrayLike,
    metric: Metric = "l2",
    percentile: float = 5.0,
    chunk_size: int | None = None,
    ssim: SSIMConfig | None = None,
) -> dict[str, Any]:
    """Distance to closest record (DCR) of synthetic samples vs held-out real records.

    The DCR of a record is its distance to the nearest training record. Held-out real records (same
    distribution, never trained on) give the DCRs a generator that does not memorise should match;
    synthetic DCRs well below them indicate copying. A generator that does not memorise still has a
    fraction of about ``(percentile / 100 (H - 1) + 1) / (H + 1)`` of its samples flagged by chance
    (7 % at the default 5th percentile and H = 40), with a wide spread between runs on small holdouts,
    so flagged samples are candidates to inspect (with :func:`nearest_neighbour_figure`), not proof.

    Args:
        synthetic: (M, ...) synthetic images or features.
        train: (N, ...) training records the generator was fitted on.
        holdout: (H, ...) real records from the same cohort, not used for training.
        metric, chunk_size, ssim: as in :func:`nearest_neighbours`.
        percentile: holdout-DCR percentile below which a synthetic sample is flagged.

    Returns:
        dict with ``metric``; ``n_synthetic``, ``n_train``, ``n_holdout``; ``synthetic_dcr`` (M,) and
        ``holdout_dcr`` (H,) arrays; ``nearest_train`` (M,) index array; ``median_synthetic``,
        ``median_holdout`` and ``ratio`` (median synthetic / median holdout DCR, ~1 without memorisation,
        << 1 with copying; NaN when the holdout median is 0); ``mannwhitney_u`` and ``p_value`` of the
        one-sided Mann-Whitney U test that synthetic DCRs are stochastically smaller than holdout DCRs
        (scipy ``mannwhitneyu(..., alternative="less")``); ``percentile``, ``threshold`` and ``flagged``
        (sorted synthetic indices with DCR < threshold).
    """
    nn_idx, syn = nearest_neighbours(synthetic, train, metric, 1, chunk_size, ssim)
    _, hold = nearest_neighbours(holdout, train, metric, 1, chunk_size, ssim)
    return {"metric": metric, **dcr_summary(syn[:, 0], hold[:, 0], percentile), "n_train": int(train.shape[0]),
            "nearest_train": nn_idx[:, 0]}


def dcr_summary(syn: np.ndarray, hold: np.ndarray, percentile: float = 5.0) -> dict[str, Any]:
    """The statistics of :func:`dcr_analysis` from the DCRs themselves: ``syn`` (M,) and ``hold`` (H,)."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    med_s, med_h = float(np.median(syn)), float(np.median(hold))
    test = scipy.stats.mannwhitneyu(syn, hold, alternative="less")
    threshold = float(np.percentile(hold, percentile))
    return {
        "n_synthetic": len(syn),
        "n_holdout": len(hold),
        "synthetic_dcr": syn,
        "holdout_dcr": hold,
        "median_synthetic": med_s,
        "median_holdout": med_h,
        "ratio": med_s / med_h if med_h > 0 else float("nan"),
        "mannwhitney_u": float(test.statistic),
        "p_value": float(test.pvalue),
        "percentile": float(percentile),
        "threshold": threshold,
        "flagged": [int(i) for i in np.flatnonzero(syn < threshold)],
    }


def membership_inference_auc(
    train: ArrayLike,
    holdout: ArrayLike,
    synthetic: ArrayLike,
    metric: Metric = "l2",
    chunk_size: int | None = None,
    ssim: SSIMConfig | None = None,
) -> dict[str, Any]:
    """Distance-based membership inference attack on the synthetic set.

    Each real record is scored by minus its distance to the nearest synthetic sample; training records
    (members, label 1) should not score higher than held-out records (non-members, label 0). The ROC AUC
    (sklearn ``roc_auc_score``) is 0.5 without leakage and 1 when every member has a synthetic copy.
    On small cohorts the AUC is noisy (standard error ~0.05-0.1 at 20-50 records per group); read it
    with ``p_value`` (one-sided Mann-Whitney U that member scores are higher, the test equivalent to
    AUC > 0.5). Use as many holdout as training records where possible.

    Args:
        train: (N, ...) training records (members).
        holdout: (H, ...) real records not used for training (non-members).
        synthetic: (M, ...) synthetic samples released by the generator.
        metric, chunk_size, ssim: as in :func:`nearest_neighbours`.

    Returns:
        dict with ``metric``, ``auc``, ``p_value``, ``n_members``, ``n_non_members``, ``n_synthetic``,
        ``median_member_distance`` and ``median_non_member_distance``.
    """
    _, d_mem = nearest_neighbours(train, synthetic, metric, 1, chunk_size, ssim)
    _, d_non = nearest_neighbours(holdout, synthetic, metric, 1, chunk_size, ssim)
    return {"metric": metric, **mia_summary(d_mem[:, 0], d_non[:, 0]), "n_synthetic": int(synthetic.shape[0])}


def mia_summary(d_mem: np.ndarray, d_non: np.ndarray) -> dict[str, Any]:
    """The statistics of :func:`membership_inference_auc` from each member's (N,) and non-member's (H,)
    distance to its nearest synthetic sample."""
    from sklearn.metrics import roc_auc_score  # imported here: sklearn is slow to import

    labels = np.concatenate([np.ones(len(d_mem)), np.zeros(len(d_non))])
    auc = roc_auc_score(labels, -np.concatenate([d_mem, d_non]))
    test = scipy.stats.mannwhitneyu(-d_mem, -d_non, alternative="greater")
    return {
        "auc": float(auc),
        "p_value": float(test.pvalue),
        "n_members": len(d_mem),
        "n_non_members": len(d_non),
        "median_member_distance": float(np.median(d_mem)),
        "median_non_member_distance": float(np.median(d_non)),
    }


class StreamedDistances:
    """:func:`dcr_analysis` and :func:`membership_inference_auc` over synthetic sets added one at a time
    (every sample of every set, at most one set in memory): each sample's DCR is its own, and each real
    record's distance to the synthetic cohort is the minimum over the sets.

    Args:
        train, holdout, metric, chunk_size: as in :func:`dcr_analysis` (``"l2"`` or ``"cosine"``).
    """

    def __init__(self, train: ArrayLike, holdout: ArrayLike, metric: Metric = "l2",
                 chunk_size: int | None = None) -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"StreamedDistances supports 'l2' and 'cosine', got {metric!r}")
        self.train, self.holdout, self.metric, self.chunk_size = train, holdout, metric, chunk_size
        self.hold_dcr = nearest_neighbours(holdout, train, metric, 1, chunk_size)[1][:, 0]
        self.member = np.full(train.shape[0], np.inf)
        self.non_member = np.full(holdout.shape[0], np.inf)
        self.syn_dcr: list[np.ndarray] = []
        self.nearest: list[np.ndarray] = []

    def add(self, synthetic: ArrayLike) -> None:
        idx, d = nearest_neighbours(synthetic, self.train, self.metric, 1, self.chunk_size)
        self.syn_dcr.append(d[:, 0])
        self.nearest.append(idx[:, 0])
        for acc, real in ((self.member, self.train), (self.non_member, self.holdout)):
            np.minimum(acc, nearest_neighbours(real, synthetic, self.metric, 1, self.chunk_size)[1][:, 0], out=acc)

    def result(self, percentile: float = 5.0) -> dict[str, Any]:
        """:func:`dcr_analysis`'s dict with ``membership_inference`` (:func:`membership_inference_auc`'s)."""
        if not self.syn_dcr:
            raise ValueError("no synthetic samples were added")
        syn = np.concatenate(self.syn_dcr)
        mia = {"metric": self.metric, **mia_summary(self.member, self.non_member), "n_synthetic": len(syn)}
        return {"metric": self.metric, **dcr_summary(syn, self.hold_dcr, percentile),
                "n_train": int(self.train.shape[0]), "nearest_train": np.concatenate(self.nearest),
                "membership_inference": mia}


# ---------------------------------------------------------------- figure


def _title_zoom(spatial: tuple[int, ...], title_chars: int) -> int:
    """Zoom at which :func:`save_slice_grid` (~6 px per title character) fits the longest title."""
    width = spatial[1] if len(spatial) == 2 else 2 * spatial[0] + spatial[1]
    return int(min(12, max(2, np.ceil(6 * title_chars / width))))


def nearest_neighbour_figure(
    synthetic: ArrayLike,
    train: ArrayLike,
    indices: np.ndarray,
    path: str | Path,
    n: int = 8,
    distances: np.ndarray | None = None,
    select: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    train_names: Sequence[str] | None = None,
) -> Path:
    """PNG of synthetic samples beside their nearest training records (paper 004, Figs. 4 and S2-S5).

    Args:
        synthetic: (M, 1, *spatial) synthetic images in [-1, 1] (2D or 3D; 3D show three middle slices).
        train: (N, 1, *spatial) training images in [-1, 1].
        indices: (M,) or (M, k) nearest training indices (column 0 is used), e.g. from
            :func:`nearest_neighbours`.
        path: output PNG (written atomically).
        n: number of pairs shown.
        distances: optional (M,) or (M, k) matching distances, printed in the titles.
        select: synthetic indices to show; default the ``n`` closest pairs when ``distances`` is given
            (the most likely copies), else the first ``n``.
        names: (M,) names of the synthetic samples for the titles (default ``synthetic i``).
        train_names: (N,) names of the training images (default ``nearest real j``).

    Returns:
        The written path.
    """
    syn, real = np.asarray(as_float64(synthetic), np.float32), np.asarray(as_float64(train), np.float32)
    idx = np.asarray(indices).reshape(syn.shape[0], -1)[:, 0]
    dist = None if distances is None else np.asarray(distances, dtype=np.float64).reshape(len(idx), -1)[:, 0]
    if select is not None:
        chosen = [int(i) for i in select]
    elif dist is not None:
        chosen = np.argsort(dist, kind="stable")[:n].tolist()
    else:
        chosen = list(range(min(n, len(idx))))
    cells, titles = [], []
    for i in chosen:
        j = int(idx[i])
        cells += [syn[i], real[j]]
        titles += [f"synthetic {i}" if names is None else str(names[i]),
                   (f"nearest real {j}" if train_names is None else f"train {train_names[j]}")
                   + ("" if dist is None else f" (d={dist[i]:.3g})")]
    zoom = _title_zoom(tuple(syn.shape[2:]), max(len(t) for t in titles))
    return save_slice_grid(np.stack(cells), path, titles=titles, ncols=4 if syn.ndim == 4 else 2, zoom=zoom)
