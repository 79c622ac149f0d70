"""Distribution metrics on feature vectors: FID, KID, MMD, precision/recall, density/coverage.

Every function takes ``real: (N, D)`` and ``fake: (M, D)`` feature arrays (NumPy or torch; computed in
float64) from one declared feature space, and is registered by name in
:data:`synthmed.registry.METRICS`. Paper 000 ("Quantitative evaluation") reports MMD, FID and
precision/recall on medical ResNet-50 features; the values mean nothing without that feature space.

Pairwise distances are computed in row chunks (``chunk_size`` rows at a time, by default as many as fit
in :data:`BLOCK_BYTES`), so memory stays bounded by the features plus one block.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from synthmed.registry import METRICS

#: Anything the metrics accept as a batch of vectors or images.
ArrayLike = np.ndarray | torch.Tensor
#: A kernel sum, or an array of them (one per KID subset).
Sums = float | np.ndarray

#: Memory budget of one block of pairwise distances, in bytes (the default chunk size follows from it).
BLOCK_BYTES = 32 * 2**20
#: KID caches full kernel matrices when (N + M)^2 float64 values fit in this many bytes.
_KID_CACHE_BYTES = 256 * 2**20
#: The median heuristic looks at a seeded subsample of at most this many pooled points.
_MEDIAN_MAX_POINTS = 2048


class SmallSampleWarning(UserWarning):
    """A feature set has too few samples for the statistic to be estimated well."""


def as_float64(x: ArrayLike) -> np.ndarray:
    """Return ``x`` (NumPy array or torch tensor, any device) as a float64 NumPy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _feature_pair(real: ArrayLike, fake: ArrayLike, centre: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate two feature sets and return them in float64, by default centred on the real mean.

    Centring changes no translation-invariant metric (all but KID) and keeps the
    ``|a|^2 + |b|^2 - 2 a.b`` distance trick accurate when features sit far from the origin.
    """
    x, y = as_float64(real), as_float64(fake)
    for name, a in (("real", x), ("fake", y)):
        if a.ndim != 2:
            raise ValueError(f"{name} features must be 2-D (samples, dims), got shape {a.shape}")
        if a.shape[0] < 2:
            raise ValueError(f"{name} features need at least 2 samples, got {a.shape[0]}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} features contain NaN or Inf")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    if not centre:
        return x, y
    mu = x.mean(axis=0)
    return x - mu, y - mu


def _rows_per_chunk(n_cols: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, BLOCK_BYTES // (8 * max(n_cols, 1)))


def sq_distance_chunks(
    a: np.ndarray, b: np.ndarray, chunk_size: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield squared Euclidean distances between rows of ``a`` and ``b``, a block of rows at a time.

    Args:
        a: (N, D) float64.
        b: (M, D) float64.
        chunk_size: rows of ``a`` per block; ``None`` picks as many as fit in :data:`BLOCK_BYTES`.

    Yields:
        ``(start, block)`` with ``block: (rows, M)`` = ``|a[start + r] - b[c]|^2``, clipped at 0.
    """
    rows = _rows_per_chunk(b.shape[0], chunk_size)
    b_sq = np.einsum("ij,ij->i", b, b)
    for start in range(0, a.shape[0], rows):
        block = a[start : start + rows]
        d = block @ b.T  # built in place: one (rows, M) buffer per block
        d *= -2.0
        d += np.einsum("ij,ij->i", block, block)[:, None]
        d += b_sq[None, :]
        yield start, np.maximum(d, 0.0, out=d)


def _kth_neighbour_sq_radii(x: np.ndarray, k: int, chunk_size: int | None) -> np.ndarray:
    """Squared distance from each row of ``x: (N, D)`` to its k-th nearest other row, shape (N,)."""
    radii = np.empty(x.shape[0])
    for start, d in sq_distance_chunks(x, x, chunk_size):
        idx = np.arange(d.shape[0])
        d[idx, start + idx] = 0.0  # the point itself is its own 0-th neighbour
        radii[start : start + d.shape[0]] = np.partition(d, k, axis=1)[:, k]
    return radii


# ---------------------------------------------------------------- FID


@dataclass(frozen=True)
class FIDResult:
    """Fréchet distance with the facts needed to read it.

    Attributes:
        value: the Fréchet distance (>= 0).
        n_real, n_fake, dim: sample counts and feature dimension.
        rank_deficient: True when a set has no more samples than dimensions, so its covariance is
            singular and FID is strongly biased upwards; compare such values only at equal sample sizes.
    """

    value: float
    n_real: int
    n_fake: int
    dim: int
    rank_deficient: bool

    def __float__(self) -> float:
        return float(self.value)


def _cov_root(centred: np.ndarray) -> np.ndarray:
    """Rows ``R: (r, D)`` with ``R^T R = (N - 1) S``, S the unbiased covariance of ``centred: (N, D)``.

    The centred data itself (r = N, no copy) when N <= D, else a symmetric eigen-root (r = D) with
    round-off negative eigenvalues clipped to zero.
    """
    n, d = centred.shape
    if n <= d:
        return centred
    w, v = np.linalg.eigh(centred.T @ centred)
    return (v * np.sqrt(np.clip(w, 0.0, None))).T


def _nuclear_norm(a: np.ndarray) -> float:
    try:
        s = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:  # gesdd rarely fails to converge; gesvd is slower but robust
        s = scipy.linalg.svd(a, compute_uv=False, lapack_driver="gesvd")
    return float(s.sum())


@METRICS.register(
    "fid", help="Fréchet distance between Gaussian fits of real and fake features (Heusel 2017)."
)
def fid(real: ArrayLike, fake: ArrayLike) -> FIDResult:
    """Fréchet (Inception) Distance between Gaussians fitted to two feature sets.

    ``FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^{1/2})`` (Heusel et al. 2017, NeurIPS),
    with unbiased covariances. ``tr((S_r S_f)^{1/2})`` is computed exactly and stably as the nuclear norm
    of ``R_r R_f^T`` for any roots ``S = R^T R``: the eigenvalues of ``S_r S_f`` are the squared singular
    values of ``R_r R_f^T``. With N, M <= D the roots are the centred data, so only an (N, M) SVD is
    needed; no complex matrix square root, no imaginary parts to discard, and zero eigenvalues of a
    singular product stay ~1e-16 instead of becoming ~1e-8 under a square root.

    Args:
        real: (N, D) real features.
        fake: (M, D) synthetic features.

    Returns:
        :class:`FIDResult`; ``float(result)`` is the distance. Emits :class:`SmallSampleWarning` and sets
        ``rank_deficient`` when N <= D or M <= D.
    """
    x, y = _feature_pair(real, fake)
    (n, d), m = x.shape, y.shape[0]
    rank_deficient = min(n, m) <= d
    if rank_deficient:
        warnings.warn(
            f"FID on {n} real / {m} fake samples in {d} feature dimensions: a covariance estimated from "
            "no more samples than dimensions is singular, so FID is strongly biased; compare values "
            "only at equal sample sizes",
            SmallSampleWarning,
            stacklevel=2,
        )
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    x -= mu_x  # in place: _feature_pair returned copies
    y -= mu_y
    tr_x = float(np.einsum("ij,ij->", x, x)) / (n - 1)
    tr_y = float(np.einsum("ij,ij->", y, y)) / (m - 1)
    tr_sqrt = _nuclear_norm(_cov_root(x) @ _cov_root(y).T) / np.sqrt((n - 1) * (m - 1))
    value = float(np.sum((mu_x - mu_y) ** 2)) + tr_x + tr_y - 2.0 * tr_sqrt
    # Round-off can push the distance of identical sets a hair below zero.
    return FIDResult(float(max(value, 0.0)), n, m, d, rank_deficient)


# ---------------------------------------------------------------- KID


class KIDResult(NamedTuple):
    """Kernel Inception Distance: mean and standard deviation of MMD^2 over random subsets."""

    mean: float
    std: float


def _mmd2_unbiased(
    kxx_sum: Sums, kxx_diag: Sums, kyy_sum: Sums, kyy_diag: Sums, kxy_sum: Sums, n: int, m: int
) -> Sums:
    """Unbiased MMD^2 from kernel sums over all pairs and over the diagonals (Gretton et al. 2012, Eq. 3).

    Works elementwise on arrays of sums (one entry per KID subset).
    """
    return (
        (kxx_sum - kxx_diag) / (n * (n - 1)) + (kyy_sum - kyy_diag) / (m * (m - 1)) - 2.0 * kxy_sum / (n * m)
    )


@METRICS.register("kid", help="Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over subsets.")
def kid(
    real: ArrayLike,
    fake: ArrayLike,
    n_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

    Unbiased MMD^2 with the polynomial kernel ``k(a, b) = (gamma a.b + coef0)^degree``, averaged over
    ``n_subsets`` random subsets drawn without replacement from each set.

    Args:
        real: (N, D) real features.
        fake: (M, D) synthetic features.
        n_subsets: number of random subsets.
        subset_size: samples per subset, capped at min(N, M). At the cap every subset is a permutation
            of the smaller set, so with N = M the std is 0.
        degree, gamma, coef0: kernel parameters; ``gamma=None`` means 1 / D.
        seed: seed of the subset draws.

    Returns:
        ``KIDResult(mean, std)`` (std over subsets, ddof = 0, as in the reference implementations).
    """
    x, y = _feature_pair(real, fake, centre=False)  # the polynomial kernel is not translation invariant
    (n, d), m = x.shape, y.shape[0]
    size = min(subset_size, n, m)
    g = 1.0 / d if gamma is None else gamma
    rng = np.random.default_rng(seed)
    ix = np.stack([rng.choice(n, size, replace=False) for _ in range(n_subsets)])
    iy = np.stack([rng.choice(m, size, replace=False) for _ in range(n_subsets)])

    def kern(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (g * (a @ b.T) + coef0) ** degree

    if (n + m) ** 2 * 8 <= _KID_CACHE_BYTES:
        # Three kernel matrices once; each subset's sums are quadratic forms with 0/1 indicators.
        cx = np.zeros((n, n_subsets))
        cy = np.zeros((m, n_subsets))
        np.put_along_axis(cx, ix.T, 1.0, axis=0)
        np.put_along_axis(cy, iy.T, 1.0, axis=0)
        kxx, kyy, kxy = kern(x, x), kern(y, y), kern(x, y)
        sums = [
            np.einsum("is,is->s", k @ c2, c1) for k, c1, c2 in ((kxx, cx, cx), (kyy, cy, cy), (kxy, cx, cy))
        ]
        mmds = _mmd2_unbiased(sums[0], cx.T @ np.diag(kxx), sums[1], cy.T @ np.diag(kyy), sums[2], size, size)
    else:
        mmds = np.empty(n_subsets)
        for s in range(n_subsets):
            a, b = x[ix[s]], y[iy[s]]
            kaa, kbb = kern(a, a), kern(b, b)
            mmds[s] = _mmd2_unbiased(
                kaa.sum(), np.trace(kaa), kbb.sum(), np.trace(kbb), kern(a, b).sum(), size, size
            )
    return KIDResult(float(np.mean(mmds)), float(np.std(mmds)))


# ---------------------------------------------------------------- MMD


@dataclass(frozen=True)
class MMDResult:
    """Squared MMD with the kernel it was measured with.

    Attributes:
        value: MMD^2 (the unbiased estimate can be slightly negative).
        kernel: "rbf" or "linear".
        bandwidth: RBF length scale sigma in ``exp(-|a - b|^2 / (2 sigma^2))``; None for "linear".
        unbiased: whether the U-statistic (True) or the V-statistic (False) was computed.
    """

    value: float
    kernel: str
    bandwidth: float | None
    unbiased: bool

    def __float__(self) -> float:
        return float(self.value)


def median_heuristic(x: ArrayLike, chunk_size: int | None = None, seed: int = 0) -> float:
    """Median pairwise Euclidean distance between distinct rows of ``x: (N, D)`` (Gretton et al. 2012).

    Pools larger than 2,048 points are subsampled (seeded) to keep memory bounded.
    """
    x = as_float64(x)
    return _median_distance(x - x.mean(axis=0), chunk_size, seed)


def _median_distance(x: np.ndarray, chunk_size: int | None, seed: int = 0) -> float:
    """:func:`median_heuristic` on float64 rows already centred near the origin."""
    if x.shape[0] > _MEDIAN_MAX_POINTS:
        x = x[np.random.default_rng(seed).choice(x.shape[0], _MEDIAN_MAX_POINTS, replace=False)]
    n = x.shape[0]
    upper = np.empty(n * (n - 1) // 2)
    filled = 0
    for start, d in sq_distance_chunks(x, x, chunk_size):
        above = d[np.arange(n)[None, :] > np.arange(start, start + d.shape[0])[:, None]]
        upper[filled : filled + above.size] = above
        filled += above.size
    return float(np.median(np.sqrt(upper, out=upper), overwrite_input=True))


def _rbf_sum(a: np.ndarray, b: np.ndarray, sigma: float, chunk_size: int | None) -> float:
    """Sum of ``exp(-|a_i - b_j|^2 / (2 sigma^2))`` over all pairs, computed block by block."""
    scale = -0.5 / sigma**2
    return float(sum(np.exp(scale * d).sum() for _, d in sq_distance_chunks(a, b, chunk_size)))


def _mmd2_linear(x: np.ndarray, y: np.ndarray, unbiased: bool) -> float:
    """Linear-kernel MMD^2 in O((N + M) D).

    V-statistic: ``|mu_x - mu_y|^2``. U-statistic: the same minus ``tr(S_x)/N + tr(S_y)/M`` with unbiased
    covariances, which equals Gretton et al. (2012) Eq. 3 with ``k(a, b) = a.b``.
    """
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    value = float(np.sum((mu_x - mu_y) ** 2))
    if unbiased:
        n, m = x.shape[0], y.shape[0]
        value -= float(np.sum((x - mu_x) ** 2)) / (n * (n - 1)) + float(np.sum((y - mu_y) ** 2)) / (
            m * (m - 1)
        )
    return value


def mmd(
    real: ArrayLike,
    fake: ArrayLike,
    kernel: str = "rbf",
    bandwidth: float | None = None,
    unbiased: bool = True,
    chunk_size: int | None = None,
) -> MMDResult:
    """Squared Maximum Mean Discrepancy (Gretton et al. 2012, JMLR: Eq. 3 unbiased, square of Eq. 5 biased).

    Args:
        real: (N, D) real features.
        fake: (M, D) synthetic features.
        kernel: "rbf" (Gaussian, ``exp(-|a - b|^2 / (2 sigma^2))``) or "linear" (``a.b``; the kernel of
            MONAI's ``MMDMetric``).
        bandwidth: RBF sigma; ``None`` uses the median heuristic on the pooled sample.
        unbiased: U-statistic (default; ~0 in expectation for equal distributions, can be negative) or
            V-statistic (exactly 0 for identical sets).
        chunk_size: rows per block of pairwise distances.

    Returns:
        :class:`MMDResult` with the value and the kernel parameters used.
    """
    x, y = _feature_pair(real, fake)
    if kernel == "linear":
        return MMDResult(_mmd2_linear(x, y, unbiased), "linear", None, unbiased)
    if kernel != "rbf":
        raise ValueError(f"unknown MMD kernel {kernel!r}; expected 'rbf' or 'linear'")
    sigma = _median_distance(np.concatenate([x, y]), chunk_size) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"RBF bandwidth must be > 0, got {sigma} (are all features identical?)")
    n, m = x.shape[0], y.shape[0]
    sxx, syy, sxy = (_rbf_sum(a, b, sigma, chunk_size) for a, b in ((x, x), (y, y), (x, y)))
    if unbiased:  # k(a, a) = 1 on the diagonal
        value = _mmd2_unbiased(sxx, n, syy, m, sxy, n, m)
    else:
        value = sxx / n**2 + syy / m**2 - 2.0 * sxy / (n * m)
    return MMDResult(float(value), "rbf", sigma, unbiased)


@METRICS.register("mmd_rbf", help="Unbiased MMD^2 with a Gaussian kernel, median-heuristic bandwidth.")
def mmd_rbf(
    real: ArrayLike, fake: ArrayLike, bandwidth: float | None = None, chunk_size: int | None = None
) -> MMDResult:
    """:func:`mmd` with ``kernel="rbf"``, unbiased."""
    return mmd(real, fake, "rbf", bandwidth, True, chunk_size)


@METRICS.register("mmd_linear", help="Unbiased MMD^2 with the linear kernel (as MONAI's MMDMetric).")
def mmd_linear(real: ArrayLike, fake: ArrayLike) -> MMDResult:
    """:func:`mmd` with ``kernel="linear"``, unbiased."""
    return mmd(real, fake, "linear")


# ---------------------------------------------------------------- k-NN manifold metrics


class PrecisionRecall(NamedTuple):
    """Improved precision and recall (fractions in [0, 1])."""

    precision: float
    recall: float


class DensityCoverage(NamedTuple):
    """Density (unbounded, ~1 for matching distributions) and coverage (fraction in [0, 1])."""

    density: float
    coverage: float


def _check_k(k: int, x: np.ndarray, y: np.ndarray | None = None) -> None:
    smallest = min(len(x), len(y)) if y is not None else len(x)
    if not 1 <= k < smallest:
        raise ValueError(f"k must be in [1, {smallest - 1}] for sets of this size, got {k}")


@METRICS.register("precision_recall", help="Improved precision/recall on k-NN manifolds (Kynkäänniemi 2019).")
def precision_recall(
    real: ArrayLike, fake: ArrayLike, k: int = 3, chunk_size: int | None = None
) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Eqs. 1-3).

    Each set's manifold is the union of balls around its samples with radius the distance to the k-th
    nearest neighbour in the same set. Precision = fraction of fake samples inside the real manifold;
    recall = fraction of real samples inside the fake manifold. Membership is ``d <= radius`` (Eq. 1).

    Args:
        real: (N, D) real features.
        fake: (M, D) synthetic features.
        k: neighbourhood size (paper default 3).
        chunk_size: rows per block of pairwise distances.

    Returns:
        ``PrecisionRecall(precision, recall)``.
    """
    x, y = _feature_pair(real, fake)
    _check_k(k, x, y)
    r_real = _kth_neighbour_sq_radii(x, k, chunk_size)
    r_fake = _kth_neighbour_sq_radii(y, k, chunk_size)
    in_real = np.zeros(len(y), dtype=bool)
    in_fake = np.zeros(len(x), dtype=bool)
    for start, d in sq_distance_chunks(y, x, chunk_size):  # d: (fake rows, N)
        in_real[start : start + len(d)] = (d <= r_real[None, :]).any(axis=1)
        in_fake |= (d <= r_fake[start : start + len(d), None]).any(axis=0)
    return PrecisionRecall(float(in_real.mean()), float(in_fake.mean()))


@METRICS.register("density_coverage", help="Density and coverage on the real k-NN manifold (Naeem 2020).")
def density_coverage(
    real: ArrayLike, fake: ArrayLike, k: int = 5, chunk_size: int | None = None
) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020, ICML), as in their reference package ``prdc``.

    ``density = 1/(kM) sum_j sum_i 1[f_j in B(r_i, NND_k(r_i))]``;
    ``coverage = 1/N sum_i 1[exists j: f_j in B(r_i, NND_k(r_i))]``, with open balls (``d < radius``)
    like ``prdc``.

    Args:
        real: (N, D) real features.
        fake: (M, D) synthetic features.
        k: neighbourhood size (paper default 5).
        chunk_size: rows per block of pairwise distances.

    Returns:
        ``DensityCoverage(density, coverage)``.
    """
    x, y = _feature_pair(real, fake)
    _check_k(k, x)
    r_real = _kth_neighbour_sq_radii(x, k, chunk_size)
    count = 0
    covered = np.zeros(len(x), dtype=bool)
    for _, d in sq_distance_chunks(y, x, chunk_size):  # d: (fake rows, N)
        inside = d < r_real[None, :]
        count += int(inside.sum())
        covered |= inside.any(axis=0)
    return DensityCoverage(count / (k * len(y)), float(covered.mean()))
