"""Feature metrics against independent references (SciPy, MONAI, prdc, brute force) and invariants."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics.pairwise import polynomial_kernel

from synthmed.metrics import (
    BootstrapCI,
    SmallSampleWarning,
    bootstrap_ci,
    density_coverage,
    fid,
    kid,
    median_heuristic,
    mmd,
    precision_recall,
)
from synthmed.metrics import feature as feature_module
from synthmed.registry import METRICS

# ------------------------------------------------------------------ references written here


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """The classic pytorch-fid recipe: scipy.linalg.sqrtm of S1 S2, imaginary round-off dropped."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-6)
        covmean = covmean.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def eigh_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Symmetric route: tr sqrt(sqrt(S1) S2 sqrt(S1)) with eigh, valid for singular covariances.

    (Checked once against a 40-digit mpmath SVD on the rank-deficient case below: equal to 1e-15.)
    """
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = scipy.linalg.eigh(s1)
    s1h = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = scipy.linalg.eigvalsh(s1h @ s2 @ s1h)
    lam[lam < 1e-12 * lam.max()] = 0.0  # sqrt would turn round-off zeros (~1e-15) into ~1e-7 each
    mu = x.mean(0) - y.mean(0)
    return float(mu @ mu + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


def loop_mmd2(x: np.ndarray, y: np.ndarray, k, unbiased: bool = True) -> float:
    """Gretton et al. (2012) Eq. 3 (unbiased) / Eq. 5 (biased), written as plain loops."""
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j or not unbiased)
    sxy = sum(k(a, b) for a in x for b in y)
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


def gaussian_with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and unbiased sample covariance equal ``mean`` and ``cov`` exactly."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


@pytest.fixture
def feats() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(16, 16))
    return rng.normal(size=(120, 16)) @ a, rng.normal(size=(90, 16)) @ a * 1.2 + 0.5


# ------------------------------------------------------------------ FID


def test_fid_matches_scipy_reference(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = feats
    assert float(fid(x, y)) == pytest.approx(scipy_fid(x, y), rel=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_fid_matches_monai(feats: tuple[np.ndarray, np.ndarray]) -> None:
    from monai.metrics import FIDMetric

    x, y = feats
    try:
        ref = float(FIDMetric()(torch.from_numpy(y), torch.from_numpy(x)))
    except TypeError as err:  # MONAI 1.6 passes scipy's `disp`, removed in SciPy 1.18
        pytest.skip(f"MONAI FIDMetric incompatible with this SciPy: {err}")
    assert float(fid(x, y)) == pytest.approx(ref, rel=1e-9)


def test_fid_closed_form_two_gaussians() -> None:
    rng = np.random.default_rng(2)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # shared eigenvectors: commuting covariances
    a, b = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    x = gaussian_with_moments(rng, 500, mu1, q @ np.diag(a) @ q.T)
    y = gaussian_with_moments(rng, 400, mu2, q @ np.diag(b) @ q.T)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert float(fid(x, y)) == pytest.approx(expected, rel=1e-9)


def test_fid_invariants(feats: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = feats
    assert float(fid(x, x)) == pytest.approx(0.0, abs=1e-8)
    assert float(fid(x, y)) == pytest.approx(float(fid(y, x)), rel=1e-10)
    shift = np.random.default_rng(3).normal(size=x.shape[1]) * 100
    assert float(fid(x + shift, y + shift)) == pytest.approx(float(fid(x, y)), rel=1e-8)
    assert float(fid(torch.from_numpy(x).float(), y)) == pytest.approx(float(fid(x.astype(np.float32), y)))


def test_fid_warns_and_flags_when_fewer_samples_than_dims() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 50)), rng.normal(size=(40, 50)) + 0.1
    with pytest.warns(SmallSampleWarning, match="30 real / 40 fake samples in 50 feature dimensions"):
        result = fid(x, y)
    assert result.rank_deficient and (result.n_real, result.n_fake, result.dim) == (30, 40, 50)
    assert result.value == pytest.approx(eigh_fid(x, y), rel=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not fid(rng.normal(size=(60, 5)), rng.normal(size=(60, 5))).rank_deficient


def test_fid_mixed_factor_paths_agree() -> None:
    """One set below and one above the dimension: data factor on one side, eigen-factor on the other."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 24)), rng.normal(size=(200, 24)) * 1.5
    with pytest.warns(SmallSampleWarning):
        assert float(fid(x, y)) == pytest.approx(eigh_fid(x, y), rel=1e-8)


# ------------------------------------------------------------------ KID


def test_kid_full_subsets_match_sklearn_polynomial_kernel() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(40, 8)) + 0.3
    k = lambda a, b: polynomial_kernel(a[None], b[None], degree=3, coef0=1)[0, 0]  # gamma = 1/D  # noqa: E731
    mean, std = kid(x, y, n_subsets=4, subset_size=1000)  # capped at 40: every subset is the whole set
    assert mean == pytest.approx(loop_mmd2(x, y, k), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_cached_and_direct_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(60, 10)) + 2, rng.normal(size=(50, 10)) * 1.3 + 2
    cached = kid(x, y, n_subsets=20, subset_size=25, seed=3)
    monkeypatch.setattr(feature_module, "_KID_CACHE_BYTES", 0)
    direct = kid(x, y, n_subsets=20, subset_size=25, seed=3)
    assert cached.mean == pytest.approx(direct.mean, rel=1e-10)
    assert cached.std == pytest.approx(direct.std, rel=1e-8)
    assert cached.std > 0


def test_kid_separates_distributions() -> None:
    rng = np.random.default_rng(8)
    x, x2, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) + 0.5
    same, diff = kid(x, x2, subset_size=100), kid(x, y, subset_size=100)
    assert abs(same.mean) < 3 * same.std + 1e-3 < diff.mean


# ------------------------------------------------------------------ MMD


def test_mmd_linear_matches_monai() -> None:
    from monai.metrics import MMDMetric

    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(50, 12)), rng.normal(size=(50, 12)) + 0.2
    ref = float(MMDMetric()(torch.from_numpy(x), torch.from_numpy(y)))
    assert mmd(x, y, kernel="linear").value == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_rbf_matches_loops(unbiased: bool) -> None:
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3)) + 0.4
    sigma = 1.7
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    result = mmd(x, y, bandwidth=sigma, unbiased=unbiased)
    assert result.value == pytest.approx(loop_mmd2(x, y, k, unbiased), rel=1e-10)
    assert (result.kernel, result.bandwidth, result.unbiased) == ("rbf", sigma, unbiased)
    linear = mmd(x, y, kernel="linear", unbiased=unbiased).value
    assert linear == pytest.approx(loop_mmd2(x, y, lambda a, b: a @ b, unbiased), rel=1e-10)


def test_mmd_median_heuristic_bandwidth_is_recorded() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    expected = np.median(pdist(np.concatenate([x, y])))
    assert median_heuristic(np.concatenate([x, y])) == pytest.approx(expected, rel=1e-12)
    assert mmd(x, y).bandwidth == pytest.approx(expected, rel=1e-12)


def test_mmd_invariants() -> None:
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(80, 6)), rng.normal(size=(70, 6)) + 0.3
    for kernel in ("rbf", "linear"):
        assert mmd(x, x, kernel=kernel, unbiased=False).value == pytest.approx(0.0, abs=1e-12)
        assert mmd(x, y, kernel=kernel).value == pytest.approx(mmd(y, x, kernel=kernel).value, rel=1e-10)
    base = mmd(x, y).value
    for chunk in (1, 7, 1000):
        assert mmd(x, y, chunk_size=chunk).value == pytest.approx(base, rel=1e-12)
    # Unbiased: zero in expectation when both samples come from one distribution.
    nulls = [mmd(rng.normal(size=(40, 6)), rng.normal(size=(40, 6)), bandwidth=3.0).value for _ in range(30)]
    assert abs(np.mean(nulls)) < 3 * np.std(nulls) / np.sqrt(len(nulls))
    assert mmd(rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 1.0, bandwidth=3.0).value > 5 * np.std(
        nulls
    )
    with pytest.raises(ValueError, match="unknown MMD kernel"):
        mmd(x, y, kernel="laplace")


# ------------------------------------------------------------------ precision / recall, density / coverage


def test_prdc_hand_computed_1d() -> None:
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert density_coverage(real, fake, k=1) == (1.0, 0.5)


def test_prdc_ball_boundaries() -> None:
    """Precision/recall use closed balls (Kynkäänniemi Eq. 1); density/coverage open ones, like prdc."""
    real, fake = np.array([[0.0], [1.0]]), np.array([[2.0], [5.0]])
    assert precision_recall(real, fake, k=1).precision == 0.5  # |2 - 1| = radius 1: inside
    assert density_coverage(real, fake, k=1) == (0.0, 0.0)


def test_prdc_matches_prdc_package() -> None:
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(150, 20)), rng.normal(size=(120, 20)) * 1.1 + 0.2
    ref = prdc.compute_prdc(x, y, nearest_k=3)
    assert precision_recall(x, y, k=3) == pytest.approx((ref["precision"], ref["recall"]), abs=1e-12)
    ref = prdc.compute_prdc(x, y, nearest_k=5)
    assert density_coverage(x, y, k=5) == pytest.approx((ref["density"], ref["coverage"]), abs=1e-12)


def test_prdc_brute_force_with_cdist() -> None:
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) + 0.3
    k = 4
    rx = np.sort(cdist(x, x), axis=1)[:, k]
    ry = np.sort(cdist(y, y), axis=1)[:, k]
    d = cdist(x, y)
    expected_p = np.mean([(d[:, j] <= rx).any() for j in range(len(y))])
    expected_r = np.mean([(d[i] <= ry).any() for i in range(len(x))])
    assert precision_recall(x, y, k=k) == pytest.approx((expected_p, expected_r))
    assert density_coverage(x, y, k=k) == pytest.approx(
        ((d < rx[:, None]).sum() / (k * len(y)), (d.min(axis=1) < rx).mean())
    )


def test_prdc_invariants() -> None:
    rng = np.random.default_rng(15)
    x, y = rng.normal(size=(100, 8)), rng.normal(size=(90, 8)) + 0.5
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    density, coverage = density_coverage(x, x, k=5)
    assert coverage == 1.0 and 1.0 <= density <= 6 / 5
    pr, dc = precision_recall(x, y), density_coverage(x, y)
    for chunk in (1, 7, 64):
        assert precision_recall(x, y, chunk_size=chunk) == pr
        assert density_coverage(x, y, chunk_size=chunk) == dc
    assert precision_recall(torch.from_numpy(x), torch.from_numpy(y)) == pr
    assert precision_recall(x + 1e3, y + 1e3) == pr  # translation (centring keeps distances accurate)
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(x[:3], y, k=3)
    with pytest.raises(ValueError, match="feature dims differ"):
        density_coverage(x, y[:, :4])


# ------------------------------------------------------------------ bootstrap, registry


def test_bootstrap_ci_of_mean_difference() -> None:
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=400), rng.normal(size=300) + 1.0
    fn = lambda r, f: float(r.mean() - f.mean())  # noqa: E731  (NumPy or torch)
    ci = bootstrap_ci(fn, x, y, n_boot=400, seed=1)
    assert isinstance(ci, BootstrapCI) and ci.value == fn(x, y)
    assert ci.low < ci.value < ci.high
    analytic = 2 * 1.96 * np.sqrt(1 / 400 + 1 / 300)
    assert ci.high - ci.low == pytest.approx(analytic, rel=0.2)
    assert bootstrap_ci(fn, x, y, n_boot=400, seed=1) == ci
    assert bootstrap_ci(fn, torch.from_numpy(x), torch.from_numpy(y), n_boot=400, seed=1) == pytest.approx(ci)


def test_bootstrap_ci_accepts_result_objects_and_rejects_tuples() -> None:
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    value, low, high = bootstrap_ci(lambda r, f: mmd(r, f, bandwidth=1.0), x, y, n_boot=10)
    assert low <= high and value == mmd(x, y, bandwidth=1.0).value
    with pytest.raises(TypeError, match="wrap tuple-valued metrics"):
        bootstrap_ci(precision_recall, x, y, n_boot=2)


def test_feature_metrics_are_registered() -> None:
    names = ["fid", "kid", "mmd_rbf", "mmd_linear", "precision_recall", "density_coverage"]
    for name in names:
        assert name in METRICS and METRICS.describe(name)
    rng = np.random.default_rng(18)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    assert METRICS.get("mmd_linear")(x, y) == mmd(x, y, kernel="linear")
    assert METRICS.get("mmd_rbf")(x, y) == mmd(x, y)
    assert list(itertools.islice(METRICS, 1))  # iterable, sorted names
