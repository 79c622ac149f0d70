"""Image-space metrics of paper 002 (Sec. 3.3) on inputs with known answers and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from synthmed.metrics import (
    dataset_similarity,
    intra_sample_diversity,
    laplacian_sharpness,
    min_intra_sample_diversity,
    ms_ssim_diversity,
    reconstruction_mse,
)
from synthmed.registry import METRICS


def pixel_mse(a: np.ndarray, b: np.ndarray) -> float:
    """1/P |a - b|^2 on [0, 1] intensities (inputs in [-1, 1])."""
    return float(np.mean(((a + 1) / 2 - (b + 1) / 2) ** 2))


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(7, 1, 12, 10))


# ------------------------------------------------------------------ DS, ISD, minimum ISD (Eqs. 11-13)


def test_dataset_similarity_matches_pairwise_loop(images: np.ndarray) -> None:
    real, fake = images, np.random.default_rng(1).uniform(-1, 0.5, size=(5, 1, 12, 10))
    expected = np.mean([pixel_mse(f, r) for f in fake for r in real])
    assert dataset_similarity(real, fake) == pytest.approx(expected, rel=1e-12)
    unit = (real + 1) / 2, (fake + 1) / 2
    assert dataset_similarity(*unit, value_range=(0.0, 1.0)) == pytest.approx(expected, rel=1e-12)
    assert dataset_similarity(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(expected)


def test_isd_and_min_isd_match_pairwise_loops(images: np.ndarray) -> None:
    n = len(images)
    pairs = [[pixel_mse(images[i], images[j]) for j in range(n) if j != i] for i in range(n)]
    assert intra_sample_diversity(images) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert min_intra_sample_diversity(images) == pytest.approx(np.mean([min(p) for p in pairs]), rel=1e-10)
    for chunk in (1, 3):
        assert min_intra_sample_diversity(images, chunk_size=chunk) == pytest.approx(
            min_intra_sample_diversity(images), rel=1e-12
        )


def test_identical_samples_have_zero_diversity(images: np.ndarray) -> None:
    same = np.repeat(images[:1], 5, axis=0)
    assert intra_sample_diversity(same) == pytest.approx(0.0, abs=1e-15)
    assert min_intra_sample_diversity(same) == pytest.approx(0.0, abs=1e-15)
    assert dataset_similarity(same, same) == pytest.approx(0.0, abs=1e-15)
    # Pairs of duplicates: ISD stays high while minimum ISD exposes the collapse (paper 002, Table 1).
    pairs = np.concatenate([images[:3], images[:3]])
    assert intra_sample_diversity(pairs) > 0.1
    assert min_intra_sample_diversity(pairs) == pytest.approx(0.0, abs=1e-12)


def test_diversity_metrics_in_3d() -> None:
    vols = np.random.default_rng(2).uniform(-1, 1, size=(4, 1, 6, 5, 4))
    n = len(vols)
    pairs = [pixel_mse(vols[i], vols[j]) for i in range(n) for j in range(n) if i != j]
    assert intra_sample_diversity(vols) == pytest.approx(np.mean(pairs), rel=1e-12)


def test_image_metric_input_checks(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        intra_sample_diversity(images[:, 0])
    with pytest.raises(ValueError, match="at least 2 images"):
        min_intra_sample_diversity(images[:1])
    with pytest.raises(ValueError, match="shapes differ"):
        dataset_similarity(images, images[..., :5])
    with pytest.raises(ValueError, match="value_range"):
        intra_sample_diversity(images, value_range=(1.0, 1.0))


# ------------------------------------------------------------------ Laplacian-variance sharpness


def checkerboard(size: int, dims: int = 2) -> np.ndarray:
    grid = np.indices((size,) * dims).sum(axis=0) % 2
    return (2.0 * grid - 1.0)[None, None]


def test_sharpness_of_constant_is_zero() -> None:
    assert np.array_equal(laplacian_sharpness(np.full((3, 1, 8, 8), 0.3)), np.zeros(3))
    assert np.array_equal(laplacian_sharpness(np.full((2, 1, 6, 6, 6), -1.0)), np.zeros(2))


def test_sharpness_matches_explicit_stencil() -> None:
    img = np.random.default_rng(3).uniform(-1, 1, size=(1, 1, 9, 7))
    u = np.pad((img[0, 0] + 1) / 2, 1, mode="symmetric")  # numpy 'symmetric' = scipy 'reflect'
    lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    assert laplacian_sharpness(img)[0] == pytest.approx(lap.var(), rel=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_checkerboard_is_sharper_than_its_blur(dims: int) -> None:
    board = checkerboard(8, dims)
    blurred = scipy.ndimage.gaussian_filter(board, sigma=(0, 0) + (1.0,) * dims)
    sharp, soft = laplacian_sharpness(np.concatenate([board, blurred]))
    assert sharp > 10 * soft > 0


def test_volumes_use_the_3d_laplacian() -> None:
    """Intensity that varies only across slices: every 2D slice is constant, the 3D Laplacian is not."""
    profile = np.cos(np.linspace(0, 3 * np.pi, 8))
    vol = np.broadcast_to(profile[:, None, None], (8, 8, 8))[None, None]
    assert laplacian_sharpness(vol[:, :, 3])[0] == 0.0  # one 2D slice
    assert laplacian_sharpness(vol)[0] > 0.0


# ------------------------------------------------------------------ MS-SSIM diversity, reconstruction MSE


def test_ms_ssim_diversity_known_answers() -> None:
    rng = np.random.default_rng(4)
    base = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, size=(1, 1, 32, 32)), (0, 0, 2, 2))
    same = np.repeat(base, 4, axis=0)
    assert ms_ssim_diversity(same) == pytest.approx(0.0, abs=1e-5)
    noisy = rng.uniform(-1, 1, size=(4, 1, 32, 32))
    nearly_same = same + 0.05 * noisy
    assert 0 < ms_ssim_diversity(nearly_same) < ms_ssim_diversity(noisy)


def test_single_scale_matches_monai_ssim() -> None:
    from monai.metrics import SSIMMetric

    x = np.random.default_rng(5).uniform(-1, 1, size=(3, 1, 16, 16))
    t = torch.from_numpy((x + 1) / 2).float()
    i, j = np.triu_indices(3, k=1)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=5, reduction="none")(t[i], t[j])
    expected = 1 - np.clip(ssim.numpy(), 0, None).mean()  # MS-SSIM takes relu(ssim) at the last scale
    assert ms_ssim_diversity(x, n_scales=1, kernel_size=5) == pytest.approx(expected, abs=1e-6)


def test_ms_ssim_diversity_3d_pairs_and_size_check() -> None:
    vols = np.random.default_rng(6).uniform(-1, 1, size=(5, 1, 16, 16, 16))
    all_pairs = ms_ssim_diversity(vols, kernel_size=3)
    assert 0 < all_pairs <= 1.5
    assert ms_ssim_diversity(vols, kernel_size=3, batch_size=3) == pytest.approx(all_pairs, abs=1e-6)
    sampled = ms_ssim_diversity(vols, kernel_size=3, max_pairs=4, seed=1)
    assert sampled == ms_ssim_diversity(vols, kernel_size=3, max_pairs=4, seed=1)
    with pytest.raises(ValueError, match="too small for MS-SSIM"):
        ms_ssim_diversity(vols)  # 16 voxels < 7 x 2^2


def test_reconstruction_mse() -> None:
    target = np.random.default_rng(7).uniform(-1, 0.5, size=(3, 1, 6, 6, 6))
    mse = reconstruction_mse(target + 0.2, target)  # 0.2 in [-1, 1] is 0.1 in [0, 1]
    assert mse.shape == (3,) and np.allclose(mse, 0.01)
    assert np.array_equal(reconstruction_mse(target, target), np.zeros(3))
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruction_mse(target, target[:2])


def test_image_metrics_are_registered() -> None:
    names = [
        "dataset_similarity",
        "isd",
        "min_isd",
        "laplacian_sharpness",
        "ms_ssim_diversity",
        "reconstruction_mse",
    ]
    for name in names:
        assert name in METRICS and METRICS.describe(name)
    assert METRICS.get("isd") is intra_sample_diversity
