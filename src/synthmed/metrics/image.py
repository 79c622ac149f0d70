"""Image-space quality and diversity metrics (paper 002, Ungria Hirte et al., Sec. 3.3).

Inputs are batches ``(N, C, *spatial)`` (C is 1 for the cohorts here) with 2 or 3 spatial dims, as
NumPy arrays or torch tensors with intensities in ``value_range`` (default ``[-1, 1]``, the range the
models train in). Paper 002 evaluates every metric on intensities in ``[0, 1]`` ("For the evaluation
of all metrics ... constrained to the interval [0,1]"), so each function first maps ``value_range``
linearly onto ``[0, 1]``; values are then comparable with its Table 1.

Pixel-wise squared errors are averaged over pixels (the ``1 / (128 x 128)`` in Eqs. 11-13) and over
image pairs. Set sums use the identity ``sum_ij |a_i - b_j|^2 = M sum_i |a_i - b|^2 + N sum_j |b_j - b|^2``
(``b`` the mean of the b's), so dataset similarity and ISD need no pairwise loop.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

from synthmed.metrics.feature import ArrayLike, as_float64, sq_distance_chunks
from synthmed.registry import METRICS

#: Multi-scale SSIM weights of Wang et al. (2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Images per block when streaming over a batch.
_IMAGE_CHUNK = 64


def _images(x: ArrayLike, name: str) -> ArrayLike:
    """Check the ``(N, C, *spatial)`` layout (2 or 3 spatial dims, N >= 1) without copying."""
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must be (N, C, H, W) or (N, C, D, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    return x


def _unit(x: ArrayLike, value_range: tuple[float, float]) -> np.ndarray:
    """Map ``value_range`` linearly onto [0, 1] in float64 (no clipping)."""
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return (as_float64(x) - lo) / (hi - lo)


def _pixels(x: ArrayLike) -> int:
    return int(np.prod(x.shape[1:]))


def _mean_and_sq_dev(x: ArrayLike, value_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Mean image ``(C, *spatial)`` and per-image ``|x_i - mean|^2`` ``(N,)``, streamed in float64."""
    n = x.shape[0]
    mean = sum(_unit(x[s : s + _IMAGE_CHUNK], value_range).sum(axis=0) for s in range(0, n, _IMAGE_CHUNK)) / n
    dev = np.concatenate(
        [
            ((_unit(x[s : s + _IMAGE_CHUNK], value_range) - mean) ** 2).reshape(-1, _pixels(x)).sum(axis=1)
            for s in range(0, n, _IMAGE_CHUNK)
        ]
    )
    return mean, dev


@METRICS.register(
    "dataset_similarity", help="Mean pixel-wise squared error, synthetic vs all real images (paper 002)."
)
def dataset_similarity(
    real: ArrayLike, fake: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0)
) -> float:
    """Dataset Similarity, DS (paper 002, Sec. 3.3, Eq. 11).

    "The average pixel-wise squared error between the generated images and all the original images":
    ``DS = 1/(M N) sum_j sum_i 1/P |fake_j - real_i|^2``. Eq. 11 as printed omits the ``1/N`` over
    originals, but the text says "average" and Table 1's values (~0.05) are only possible as a mean.
    Smaller means closer to the real images.

    Args:
        real: (N, C, *spatial) original images.
        fake: (M, C, *spatial) generated images, same image shape.
        value_range: intensity range of the inputs, mapped to [0, 1].

    Returns:
        DS as a float.
    """
    _images(real, "real"), _images(fake, "fake")
    if tuple(real.shape[1:]) != tuple(fake.shape[1:]):
        raise ValueError(
            f"real and fake image shapes differ: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}"
        )
    real_mean, real_dev = _mean_and_sq_dev(real, value_range)
    fake_to_real_mean = np.concatenate(
        [
            ((_unit(fake[s : s + _IMAGE_CHUNK], value_range) - real_mean) ** 2)
            .reshape(-1, _pixels(fake))
            .sum(axis=1)
            for s in range(0, fake.shape[0], _IMAGE_CHUNK)
        ]
    )
    return float((fake_to_real_mean.mean() + real_dev.mean()) / _pixels(fake))


@METRICS.register(
    "isd", help="Intra-sample diversity: mean pixel-wise squared error between samples (paper 002)."
)
def intra_sample_diversity(fake: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Intra-Sample Diversity, ISD (paper 002, Sec. 3.3, Eq. 12).

    "The average pixel-wise squared error between each generated image and all remaining generated
    images": ``ISD = 1/(M (M-1)) sum_{i != j} 1/P |x_i - x_j|^2`` (Eq. 12's normalisation is garbled in
    print; this is the mean the text describes), computed as ``2/((M-1) P) sum_i |x_i - mean|^2``.
    Larger means more diverse; identical samples give 0.

    Args:
        fake: (M, C, *spatial) generated images, M >= 2.
        value_range: intensity range of the inputs, mapped to [0, 1].

    Returns:
        ISD as a float.
    """
    _images(fake, "fake")
    m = fake.shape[0]
    if m < 2:
        raise ValueError(f"ISD needs at least 2 images, got {m}")
    _, dev = _mean_and_sq_dev(fake, value_range)
    return float(2.0 * dev.sum() / ((m - 1) * _pixels(fake)))


@METRICS.register(
    "min_isd", help="Minimum ISD: mean pixel-wise squared error to the nearest other sample (paper 002)."
)
def min_intra_sample_diversity(
    fake: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0), chunk_size: int | None = None
) -> float:
    """Minimum Intra-Sample Diversity (paper 002, Sec. 3.3, Eq. 13).

    ``1/M sum_i 1/P |x_i - n(x_i)|^2`` with ``n(x_i)`` the other sample nearest to ``x_i`` in squared L2
    (Eq. 13 writes ``n`` as the minimum distance itself; the text defines it as the neighbour). Small
    values flag near-duplicate samples (mode collapse) even when ISD looks healthy.

    Args:
        fake: (M, C, *spatial) generated images, M >= 2. Held in memory as float64 (M x P x 8 bytes).
        value_range: intensity range of the inputs, mapped to [0, 1].
        chunk_size: rows per block of pairwise distances.

    Returns:
        Minimum ISD as a float.
    """
    _images(fake, "fake")
    m = fake.shape[0]
    if m < 2:
        raise ValueError(f"minimum ISD needs at least 2 images, got {m}")
    flat = _unit(fake, value_range).reshape(m, -1)
    flat -= flat.mean(axis=0)  # accuracy of the |a|^2 + |b|^2 - 2ab trick
    nearest = np.empty(m)
    for start, d in sq_distance_chunks(flat, flat, chunk_size):
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = np.inf  # the image itself is not its neighbour
        nearest[start : start + d.shape[0]] = d.min(axis=1)
    return float(nearest.mean() / flat.shape[1])


@METRICS.register("laplacian_sharpness", help="Per-image variance of the Laplacian (2D or 3D) (paper 002).")
def laplacian_sharpness(
    images: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0), mode: str = "reflect"
) -> np.ndarray:
    """Laplace Variance Sharpness Score per image (paper 002, Sec. 3.3).

    "The Laplacian filter ... was applied to the image and the variance of the result was computed."
    The discrete Laplacian is ``scipy.ndimage.laplace`` over the spatial axes only: the 5-point stencil
    for 2D images, the 7-point stencil for 3D volumes. Channels are averaged. Paper 002 reports mean
    +- std over images (Table 1). Its values (~1,500) cannot come from [0, 1] intensities, where the
    variance is at most 16 (2D); they look like 8-bit intensities, i.e. this score times 255^2.

    Args:
        images: (N, C, *spatial) images.
        value_range: intensity range of the inputs, mapped to [0, 1].
        mode: border handling of ``scipy.ndimage.laplace`` ("reflect"; OpenCV's default is "mirror").

    Returns:
        (N,) float64 scores; a constant image scores 0, sharper images score higher.
    """
    _images(images, "images")
    scores = np.empty(images.shape[0])
    for i in range(images.shape[0]):
        img = _unit(images[i], value_range)
        scores[i] = np.mean([scipy.ndimage.laplace(channel, mode=mode).var() for channel in img])
    return scores


@METRICS.register(
    "reconstruction_mse", help="Per-image pixel-wise MSE between reconstructions and targets (paper 002)."
)
def reconstruction_mse(
    pred: ArrayLike, target: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Pixel-wise reconstruction MSE per image (paper 002, Sec. 3.3, "Quantitative evaluation of the
    image reconstruction"); the paper reports mean +- std over images.

    Args:
        pred: (N, C, *spatial) reconstructions.
        target: (N, C, *spatial) originals.
        value_range: intensity range of the inputs, mapped to [0, 1].

    Returns:
        (N,) float64 mean squared errors.
    """
    _images(pred, "pred"), _images(target, "target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    diff = _unit(pred, value_range) - _unit(target, value_range)
    return (diff**2).reshape(diff.shape[0], -1).mean(axis=1)


def _pairs(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j, or ``max_pairs`` seeded random pairs with i != j when there are more."""
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    rng = np.random.default_rng(seed)
    i = rng.integers(n, size=max_pairs)
    return i, (i + rng.integers(1, n, size=max_pairs)) % n


@METRICS.register("ms_ssim_diversity", help="Mean pairwise 1 - MS-SSIM between synthetic samples (MONAI).")
def ms_ssim_diversity(
    fake: ArrayLike,
    value_range: tuple[float, float] = (-1.0, 1.0),
    n_scales: int = 3,
    kernel_size: int = 7,
    kernel_sigma: float = 1.5,
    max_pairs: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Diversity as mean ``1 - MS-SSIM`` over pairs of synthetic samples (as in Odena et al. 2017, AC-GAN).

    MS-SSIM (Wang et al. 2003) from MONAI's ``compute_ms_ssim`` with the first ``n_scales`` standard
    weights renormalised to sum 1. The defaults (3 scales, 7-voxel window) need at least 28 voxels a
    side, so they work at 32-64; the standard 5 scales x 11 need 176.

    Args:
        fake: (M, C, *spatial) generated images, M >= 2.
        value_range: intensity range of the inputs, mapped to [0, 1] (MS-SSIM data range 1).
        n_scales: number of dyadic scales.
        kernel_size, kernel_sigma: Gaussian window.
        max_pairs: all M(M-1)/2 pairs when that is at most this, else this many seeded random pairs.
        batch_size: pairs per MONAI call.
        seed: seed of the pair draw.

    Returns:
        Mean ``1 - MS-SSIM``: 0 for identical samples, larger for more diverse ones.
    """
    from monai.metrics import compute_ms_ssim  # imported here: monai is slow to import

    _images(fake, "fake")
    if fake.shape[0] < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 images, got {fake.shape[0]}")
    if not 1 <= n_scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"n_scales must be in [1, {len(MS_SSIM_WEIGHTS)}], got {n_scales}")
    smallest = min(fake.shape[2:])
    if smallest // 2 ** (n_scales - 1) < kernel_size:
        raise ValueError(
            f"images of {smallest} voxels a side are too small for MS-SSIM with {n_scales} scales and a "
            f"{kernel_size}-voxel window; need >= {kernel_size * 2 ** (n_scales - 1)}: lower n_scales or kernel_size"
        )
    weights = np.asarray(MS_SSIM_WEIGHTS[:n_scales]) / sum(MS_SSIM_WEIGHTS[:n_scales])
    x = torch.as_tensor(_unit(fake, value_range), dtype=torch.float32)
    i, j = _pairs(fake.shape[0], max_pairs, seed)
    scores = []
    with torch.no_grad():
        for s in range(0, len(i), batch_size):
            a, b = x[i[s : s + batch_size]], x[j[s : s + batch_size]]
            ms = compute_ms_ssim(
                a,
                b,
                spatial_dims=x.ndim - 2,
                data_range=1.0,
                kernel_size=kernel_size,
                kernel_sigma=kernel_sigma,
                weights=tuple(weights.tolist()),
            )
            scores.append(ms.reshape(-1).double().numpy())
    return float(1.0 - np.concatenate(scores).mean())
