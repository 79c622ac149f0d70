"""Privacy checks on data with known answers: exact copies vs independent draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from synthmed.evaluate.privacy import (
    SSIMConfig,
    dcr_analysis,
    membership_inference_auc,
    nearest_neighbour_figure,
    nearest_neighbours,
)


def _images(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(n, 1, size, size)).astype(np.float32)


def _memorised(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train 40 / holdout 40; synthetic = 36 exact copies of train images + 8 fresh draws, shuffled."""
    rng = np.random.default_rng(seed)
    train, holdout = _images(rng, 40), _images(rng, 40)
    copied = rng.choice(40, 36, replace=False)
    synthetic = np.concatenate([train[copied], _images(rng, 8)])
    perm = rng.permutation(len(synthetic))
    is_copy = np.zeros(len(synthetic), dtype=bool)
    is_copy[:36] = True
    source = np.concatenate([copied, -np.ones(8, dtype=int)])
    return train, holdout, synthetic[perm], np.stack([is_copy[perm], source[perm]])


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_nearest_neighbours_match_brute_force(metric: str, chunk_size: int | None) -> None:
    rng = np.random.default_rng(1)
    train, synthetic = rng.normal(size=(50, 12)), rng.normal(size=(23, 12)) + 3.0
    idx, dist = nearest_neighbours(synthetic, train, metric, k=4, chunk_size=chunk_size)
    full = cdist(synthetic, train, "euclidean" if metric == "l2" else "cosine")
    expected = np.argsort(full, axis=1)[:, :4]
    assert idx.shape == dist.shape == (23, 4)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), rtol=1e-10, atol=1e-12)


def test_cosine_distances_match_scipy_for_all_pairs() -> None:
    rng = np.random.default_rng(2)
    train, synthetic = rng.normal(size=(30, 8)) + 1.0, torch.randn(10, 8, dtype=torch.float64)
    _, dist = nearest_neighbours(synthetic, train, "cosine", k=30)
    full = np.sort(cdist(synthetic.numpy(), train, "cosine"), axis=1)
    np.testing.assert_allclose(dist, full, rtol=1e-10, atol=1e-12)


def test_image_l2_neighbours_are_flattened_euclidean() -> None:
    rng = np.random.default_rng(3)
    train, synthetic = _images(rng, 20), _images(rng, 5)
    idx, dist = nearest_neighbours(torch.from_numpy(synthetic), train, "l2", k=2)
    full = cdist(synthetic.reshape(5, -1).astype(np.float64), train.reshape(20, -1).astype(np.float64))
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1)[:, :2])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :2], rtol=1e-10)


def test_exact_copies_have_zero_distance() -> None:
    train, _, synthetic, (is_copy, source) = _memorised()
    idx, dist = nearest_neighbours(synthetic, train, "l2")
    copies = is_copy.astype(bool)
    np.testing.assert_array_equal(idx[copies, 0], source[copies])
    assert np.all(dist[copies, 0] == 0.0)
    assert np.all(dist[~copies, 0] > 1.0)


def test_dcr_flags_copies() -> None:
    train, holdout, synthetic, (is_copy, _) = _memorised()
    res = dcr_analysis(synthetic, train, holdout, "l2")
    assert set(np.flatnonzero(is_copy)) <= set(res["flagged"])
    assert res["ratio"] < 0.1
    assert res["median_synthetic"] == 0.0
    assert res["p_value"] < 1e-6
    assert res["threshold"] == pytest.approx(np.percentile(res["holdout_dcr"], 5.0))
    assert res["synthetic_dcr"].shape == (44,) and res["holdout_dcr"].shape == (40,)
    assert (res["n_synthetic"], res["n_train"], res["n_holdout"]) == (44, 40, 40)


def test_dcr_independent_draws_ratio_near_one() -> None:
    rng = np.random.default_rng(4)
    train, holdout, synthetic = _images(rng, 40), _images(rng, 40), _images(rng, 40)
    res = dcr_analysis(synthetic, train, holdout, "l2")
    assert res["ratio"] == pytest.approx(1.0, abs=0.05)
    assert res["p_value"] > 0.01


def test_dcr_chance_flag_rate_matches_percentile() -> None:
    # Without memorisation synthetic and holdout DCRs are exchangeable: a synthetic DCR falls below the
    # interpolated 5th percentile of H = 40 holdout DCRs with probability (0.05 (H - 1) + 1) / (H + 1).
    rates = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        train, holdout, synthetic = (rng.normal(size=(40, 32)) for _ in range(3))
        rates.append(len(dcr_analysis(synthetic, train, holdout)["flagged"]) / 40)
    assert np.mean(rates) == pytest.approx((0.05 * 39 + 1) / 41, abs=0.03)


def test_mia_auc_copies_vs_independent() -> None:
    train, holdout, synthetic, _ = _memorised()
    leaky = membership_inference_auc(train, holdout, synthetic, "l2")
    assert leaky["auc"] > 0.9
    assert (leaky["n_members"], leaky["n_non_members"], leaky["n_synthetic"]) == (40, 40, 44)
    assert leaky["median_member_distance"] == 0.0

    rng = np.random.default_rng(5)
    tr, ho, sy = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    clean = membership_inference_auc(tr, ho, sy, "cosine")
    assert clean["auc"] == pytest.approx(0.5, abs=0.08)
    assert clean["p_value"] > 0.01


def test_ssim_neighbours_find_copies_and_match_exhaustive() -> None:
    from monai.metrics import SSIMMetric

    rng = np.random.default_rng(6)
    train = _images(rng, 10)
    synthetic = np.concatenate([train[[3, 7]], _images(rng, 2)])
    exhaustive = SSIMConfig(candidates=None, win_size=7)
    idx, dist = nearest_neighbours(synthetic, train, "ssim", k=2, ssim=exhaustive)
    assert idx[:2, 0].tolist() == [3, 7] and np.all(dist[:2, 0] < 1e-6)
    unit = lambda a: torch.from_numpy((a + 1.0) / 2.0)  # noqa: E731
    metric = SSIMMetric(spatial_dims=2, win_size=7)
    full = np.stack(
        [1.0 - metric(unit(np.repeat(s[None], 10, 0)), unit(train)).numpy()[:, 0] for s in synthetic]
    )
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :2], atol=1e-6)
    pre, _ = nearest_neighbours(synthetic, train, "ssim", ssim=SSIMConfig(candidates=3, win_size=7))
    assert pre[:2, 0].tolist() == [3, 7]


def test_ssim_guards() -> None:
    rng = np.random.default_rng(7)
    train, synthetic = _images(rng, 10), _images(rng, 4)
    with pytest.raises(ValueError, match="max_pairs"):
        nearest_neighbours(
            synthetic, train, "ssim", ssim=SSIMConfig(candidates=None, max_pairs=39, win_size=7)
        )
    with pytest.raises(ValueError, match="win_size"):
        nearest_neighbours(synthetic[:, :, :8, :8], train[:, :, :8, :8], "ssim")  # 8 px < 11-px window


def test_input_validation() -> None:
    x = np.random.default_rng(8).normal(size=(5, 4))
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(x, x, "l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(x, x, k=6)
    with pytest.raises(ValueError, match="dims differ"):
        nearest_neighbours(x, x[:, :3])
    with pytest.raises(ValueError, match="all-zero"):
        nearest_neighbours(np.zeros((2, 4)), x, "cosine")
    with pytest.raises(ValueError, match="ssim"):
        nearest_neighbours(x, x, "ssim")


@pytest.mark.parametrize("spatial", [(16, 16), (12, 12, 12)])
def test_nearest_neighbour_figure(tmp_path: Path, spatial: tuple[int, ...]) -> None:
    rng = np.random.default_rng(9)
    train = rng.uniform(-1, 1, size=(6, 1, *spatial)).astype(np.float32)
    synthetic = train[[5, 1, 2]] * 0.9
    idx, dist = nearest_neighbours(synthetic, train, "l2")
    out = nearest_neighbour_figure(synthetic, train, idx, tmp_path / "nn" / "pairs.png", n=2, distances=dist)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 0
    assert not list(out.parent.glob(".*tmp"))
    out2 = nearest_neighbour_figure(synthetic, train, idx[:, 0], tmp_path / "all.png", select=[0, 2])
    assert out2.is_file()


def test_inputs_are_not_modified_in_place() -> None:
    """Rows are centred / normalised in place on private copies, never on the caller's arrays."""
    rng = np.random.default_rng(3)
    syn, train = rng.normal(size=(6, 1, 4, 4)), rng.normal(size=(9, 1, 4, 4)) + 5.0
    keep_syn, keep_train = syn.copy(), train.copy()
    for metric in ("l2", "cosine"):
        nearest_neighbours(syn, train, metric=metric, k=2)
        np.testing.assert_array_equal(syn, keep_syn)
        np.testing.assert_array_equal(train, keep_train)
