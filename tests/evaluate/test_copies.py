"""The near-copy audit on data with known answers: planted copies (exact, noisy, flipped, shifted) in a later
set are found, with the transform that matched; fresh and blurred images are not flagged beyond the
calibrated false-positive rate; the search equals a brute-force one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from synthmed.evaluate.copies import (
    CopyAuditor,
    SearchConfig,
    conformal_rank,
    copy_audit,
    copy_score,
    invariant_search,
    proportion_ci,
    transforms,
)
from synthmed.evaluate.privacy import dcr_analysis


def _fields(rng: np.random.Generator, n: int, shape: tuple[int, ...] = (12, 12, 12), sigma: float = 1.5) -> np.ndarray:
    """Smooth random images in [-1, 1], (n, 1, *shape): independent draws of one distribution."""
    x = gaussian_filter(rng.normal(size=(n, 1, *shape)), (0, 0, *[sigma] * len(shape)))
    return np.tanh(x / x.std()).astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(x, (0, 0, *[sigma] * (x.ndim - 2))).astype(np.float32)


def _brute_force(q: np.ndarray, r: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Best reference and max Pearson r over flips x shifts, over the voxels the shifted image covers,
    with NumPy only (written independently: explicit index arithmetic, no rolling)."""
    d = q.ndim - 2
    best_i, best_s = np.zeros(len(q), int), np.full(len(q), -np.inf)
    for a, x in enumerate(q[:, 0]):
        n = x.shape
        for flips in itertools.product([False, True], repeat=d):
            for sh in itertools.product(range(-max_shift, max_shift + 1), repeat=d):
                # shifted[i] = x[i + sh] where 0 <= i + sh < n; then flipped
                idx = np.indices(n)
                src = [idx[ax] + sh[ax] for ax in range(d)]
                valid = np.all([(s >= 0) & (s < n[ax]) for ax, s in enumerate(src)], axis=0)
                shifted = np.full(n, np.nan)
                shifted[valid] = x[tuple(np.clip(s, 0, n[ax] - 1)[valid] for ax, s in enumerate(src))]
                v = np.flip(shifted, [i for i in range(d) if flips[i]])
                keep = ~np.isnan(v)
                corr = [np.corrcoef(v[keep], y[keep])[0, 1] for y in r[:, 0]]
                j = int(np.argmax(corr))
                if corr[j] > best_s[a]:
                    best_i[a], best_s[a] = j, corr[j]
    return best_i, best_s


@pytest.mark.parametrize("shape", [(9, 10), (6, 7, 8)])
@pytest.mark.parametrize("candidates", [None, 4])
def test_search_equals_brute_force(shape: tuple[int, ...], candidates: int | None) -> None:
    rng = np.random.default_rng(0)
    ref = _fields(rng, 12, shape, 1.0)
    query = np.concatenate([_fields(rng, 4, shape, 1.0), np.flip(ref[:3], axis=-1), np.roll(ref[3:5], -1, axis=2)])
    res = invariant_search(query, ref, SearchConfig(max_shift=1, candidates=candidates))
    idx, sim = _brute_force(query, ref, 1)
    copies = slice(4, None)  # copies are exact in both modes; unrelated pairs are exact without candidates
    np.testing.assert_array_equal(res.indices[copies, 0], idx[copies])
    np.testing.assert_allclose(res.similarity[copies, 0], sim[copies], atol=1e-5)
    if candidates is None:
        np.testing.assert_array_equal(res.indices[:, 0], idx)
        np.testing.assert_allclose(res.similarity[:, 0], sim, atol=1e-5)
    else:
        assert (res.similarity[:, 0] <= sim + 1e-5).all()  # the coarse pass can only miss, never invent


def test_search_is_block_independent_and_excludes_self() -> None:
    rng = np.random.default_rng(1)
    x = _fields(rng, 20, (10, 10))
    a = invariant_search(x, x, SearchConfig(block_bytes=1), k=3, exclude_self=True)
    b = invariant_search(x, x, SearchConfig(block_bytes=2**30), k=3, exclude_self=True)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.similarity, b.similarity, atol=1e-6)
    assert not (a.indices == np.arange(20)[:, None]).any()
    assert (np.diff(a.similarity, axis=1) <= 1e-7).all()  # most similar first
    same = invariant_search(x, x, SearchConfig())
    np.testing.assert_array_equal(same.indices[:, 0], np.arange(20))
    assert [t.describe() for t in same.transform] == ["identity"] * 20


def test_transforms_group() -> None:
    ts = transforms(3, 1)
    assert len(ts) == 8 * 27 and ts[0].describe() == "identity" and len(set(ts)) == len(ts)
    assert len(transforms(2, 2)) == 4 * 25 and len(transforms(2, 0, flips=False)) == 1


def _planted(seed: int = 0) -> dict:
    """Train 120 / holdout 80 smooth 3D fields; set 1: 30 fresh draws; set 2: 10 fresh draws and 5 each of
    exact, noisy, flipped and shifted copies of training images, shuffled."""
    rng = np.random.default_rng(seed)
    train, holdout = _fields(rng, 120), _fields(rng, 80)
    src = rng.choice(120, 20, replace=False)
    noisy = np.clip(train[src[5:10]] + rng.normal(0, 0.15, train[src[5:10]].shape), -1, 1).astype(np.float32)
    flipped = np.flip(train[src[10:15]], axis=(2, 4)).copy()
    shifted = np.roll(train[src[15:20]], 1, axis=3)
    set2 = np.concatenate([_fields(rng, 10), train[src[:5]], noisy, flipped, shifted])
    kind = np.array(["fresh"] * 10 + ["exact"] * 5 + ["noisy"] * 5 + ["flipped"] * 5 + ["shifted"] * 5)
    source = np.concatenate([-np.ones(10, int), src])
    perm = rng.permutation(len(set2))
    return {"train": train, "holdout": holdout, "set1": _fields(rng, 30), "set2": set2[perm], "kind": kind[perm],
            "source": source[perm]}


def test_planted_copies_in_a_later_set_are_found_with_their_transform() -> None:
    p = _planted()
    audit = CopyAuditor(p["train"], p["holdout"], alpha=0.01)
    audit.add(p["set1"])
    audit.add(p["set2"], ids=[f"set2-{i}" for i in range(len(p["set2"]))])
    res = audit.result()
    planted = {30 + i for i in np.flatnonzero(p["kind"] != "fresh")}
    flagged = {f["sample"] for f in res["flagged"]}
    assert planted <= flagged  # every copy, of every kind, in the second set
    assert len(flagged - planted) <= 1  # at most one of 40 fresh draws by chance (bound: 1/81 each)
    assert res["n_samples"] == 60 and res["n_flagged"] == len(flagged)
    for f in res["flagged"]:
        if f["sample"] not in planted:
            continue
        i = f["sample"] - 30
        assert f["id"] == f"set2-{i}" and f["train_index"] == p["source"][i], f
        want = {"exact": "identity", "noisy": "identity", "flipped": "flip axis 0,2", "shifted": "shift (+0, +1, +0)"}
        assert f["transform"] == want[p["kind"][i]], f
    lo, hi = res["fraction_ci"]
    assert lo <= res["fraction"] <= hi and res["fraction"] == len(flagged) / 60


def test_fresh_and_blurred_images_are_not_flagged_but_pixel_distances_flag_blur() -> None:
    """Images that copy nothing, sharp or blurred, are flagged at about the calibrated rate; pixel-space
    DCR (the statistic this audit replaces) flags most blurred ones."""
    rng = np.random.default_rng(3)
    train, holdout, fresh = _fields(rng, 120), _fields(rng, 80), _fields(rng, 150)
    audit = CopyAuditor(train, holdout, alpha=0.01)
    bound = audit.rank / (len(audit.calibration) + 1)
    rates = {}
    for name, x in (("fresh", fresh), ("blur 1", _blur(fresh, 1.0)), ("blur 2", _blur(fresh, 2.0))):
        r = copy_audit(x, train, holdout)
        rates[name] = r["fraction"]
        # a binomial count above the bound at p < 0.001: the test fails when blur or chance is flagged
        assert r["n_flagged"] <= 6, (name, r["n_flagged"], bound)
    assert max(rates.values()) < 0.05
    pixel = dcr_analysis(_blur(fresh, 2.0), train, holdout, metric="l2")
    assert len(pixel["flagged"]) > 0.5 * len(fresh)  # the old pixel test: blur looks like copying


def test_heldout_false_positive_rate_is_measured_and_bounded() -> None:
    rng = np.random.default_rng(4)
    audit = CopyAuditor(_fields(rng, 100), _fields(rng, 99), alpha=0.05)
    assert audit.rank == 5 and audit.threshold == min(audit.calibration[4], 0.05)
    res = audit.result()
    fpr = res["heldout_fpr"]
    assert fpr["n"] == 99 and fpr["flagged"] <= 15 and fpr["ci"][0] <= fpr["rate"] <= fpr["ci"][1]
    assert res["expected_fpr"] == pytest.approx(5 / 100) and res["n_samples"] == 0


def test_score_is_uniform_under_the_poisson_model() -> None:
    """u = (d1/d2)^m is uniform when neighbour distances follow F(d) ~ d^m: check with exact samples."""
    rng = np.random.default_rng(5)
    m, k = 7.0, 30
    # distances of a Poisson process with F(d) ~ d^m: d_i = (cumulative Exp(1) sums)^(1/m)
    d = np.cumsum(rng.exponential(size=(4000, k + 1)), axis=1) ** (1 / m) / 50
    u, m_hat = copy_score(1.0 - d)
    assert abs(np.median(m_hat) - m) < 0.6
    from scipy.stats import kstest

    assert kstest(u, "uniform").pvalue > 0.001


def test_exact_copy_of_a_duplicated_training_image_and_helpers() -> None:
    u, _ = copy_score(np.array([[1.0, 1.0, 0.5, 0.4, 0.3]]))
    assert u[0] == 0.0
    assert conformal_rank(99, 0.01) == 1 and conformal_rank(99, 0.05) == 5 and conformal_rank(10, 0.01) == 1
    lo, hi = proportion_ci(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.08  # the rule of three: ~3/50


def test_bad_input_gives_one_clear_error() -> None:
    rng = np.random.default_rng(6)
    train, hold = _fields(rng, 20, (8, 8)), _fields(rng, 6, (8, 8))
    with pytest.raises(ValueError, match="at least 4 held-out"):
        CopyAuditor(train, hold[:3])
    with pytest.raises(ValueError, match="differ in shape"):
        CopyAuditor(train, _fields(rng, 6, (9, 9)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        copy_audit(np.full((2, 1, 8, 8), np.nan, np.float32), train, hold)
    with pytest.raises(ValueError, match=r"\(N, 1, \*spatial\)"):
        copy_audit(np.zeros((2, 8, 8), np.float32), train, hold)
    with pytest.raises(ValueError, match="more than 10 training images"):
        CopyAuditor(train[:10], hold)
