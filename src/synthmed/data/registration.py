"""Geometry helpers (conversions, resampling, crop/resize grids) and affine registration to a template.

Arrays follow nibabel's convention: (X, Y, Z) voxel order with a 4x4 voxel-to-world affine in
RAS+ millimetres.  SimpleITK works in LPS+; :func:`array_to_sitk` and :func:`sitk_to_array` convert
exactly (the first two world axes change sign).

Registration (paper 000, "Data": "registered to MNI space") is a two-stage multi-resolution
affine registration driven by Mattes mutual information: a similarity stage (rotation,
translation, isotropic scale) initialised by matching the images' centres of mass (moments), then
a full affine stage.  With the default settings a 2 mm brain takes about 1-3 s on two CPU cores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def array_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Wrap a (X, Y, Z) array with a RAS voxel-to-world affine as a SimpleITK image.

    Args:
        array: (X, Y, Z) array (any numeric dtype; float64 is cast to float32).
        affine: 4x4 voxel-to-world affine (RAS+, mm); may be oblique, not shear.

    Returns:
        A SimpleITK image of size (X, Y, Z) with LPS origin/direction/spacing.
    """
    arr = np.asarray(array)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = _RAS_TO_LPS @ (lin / spacing)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction.ravel()])
    img.SetOrigin([float(o) for o in _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]])
    return img


def sitk_affine(img: sitk.Image) -> np.ndarray:
    """The 4x4 RAS voxel-to-world affine of a 3D SimpleITK image."""
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(img.GetSpacing())
    aff[:3, 3] = _RAS_TO_LPS @ np.asarray(img.GetOrigin(), dtype=np.float64)
    return aff


def sitk_to_array(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`array_to_sitk`: returns ``(array (X, Y, Z), affine 4x4 RAS)``."""
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), sitk_affine(img)


def smooth_for_spacing(img: sitk.Image, spacing: float) -> sitk.Image:
    """Anti-aliasing before downsampling to ``spacing`` mm (float32 output).

    A Gaussian whose FWHM is the extra blur each axis needs, sqrt(new^2 - old^2); axes that are
    already at least as coarse as ``spacing`` are left alone.
    """
    old = np.asarray(img.GetSpacing(), dtype=np.float64)
    src = sitk.Cast(img, sitk.sitkFloat32)
    sigma = np.sqrt(np.maximum(float(spacing) ** 2 - old**2, 0.0)) / 2.3548
    if np.any(sigma > 0.1 * old):
        src = sitk.SmoothingRecursiveGaussian(src, [float(max(s, 1e-3)) for s in sigma])
    return src


def resample_to_spacing(img: sitk.Image, spacing: float, interpolator: int = sitk.sitkLinear,
                        smooth: bool = True) -> sitk.Image:
    """Resample onto an isotropic grid with the same orientation and field of view.

    Args:
        img: 3D image.
        spacing: new isotropic voxel size in mm.
        interpolator: a ``sitk.sitk*`` interpolator.
        smooth: apply :func:`smooth_for_spacing` first (anti-aliasing when downsampling).

    Returns:
        float32 image of size round(old_size * old_spacing / spacing).
    """
    old = np.asarray(img.GetSpacing(), dtype=np.float64)
    size = np.maximum(1, np.round(np.asarray(img.GetSize()) * old / spacing)).astype(int)
    src = smooth_for_spacing(img, spacing) if smooth else sitk.Cast(img, sitk.sitkFloat32)
    # keep the field of view: the first voxel centre moves by half the change of voxel size
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    origin = np.asarray(img.GetOrigin()) + direction @ ((spacing - old) / 2.0)
    return sitk.Resample(src, [int(s) for s in size], sitk.Transform(), interpolator,
                         [float(o) for o in origin], [float(spacing)] * 3, img.GetDirection(), 0.0,
                         sitk.sitkFloat32)


def resample_onto(moving: sitk.Image, affine: np.ndarray, shape: tuple[int, ...],
                  transform: sitk.Transform | None = None, interpolator: int = sitk.sitkLinear,
                  default: float = 0.0) -> np.ndarray:
    """Resample ``moving`` onto the grid (``affine``, ``shape``) through ``transform``.

    Args:
        moving: the image to resample.
        affine: 4x4 RAS affine of the output grid.
        shape: (X, Y, Z) output shape.
        transform: maps output (fixed) physical points to ``moving`` points; identity if None.
        interpolator: a ``sitk.sitk*`` interpolator.
        default: value outside ``moving``.

    Returns:
        (X, Y, Z) float32 array.
    """
    ref = array_to_sitk(np.zeros(tuple(shape), dtype=np.uint8), affine)
    out = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), ref, transform or sitk.Transform(),
                        interpolator, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


@dataclass
class RegistrationSettings:
    """Parameters of :func:`register_affine` (all recorded in ``dataset.json``).

    Attributes:
        bins: Mattes mutual-information histogram bins.
        sampling: fraction of fixed-mask voxels sampled per iteration (random, seeded).
        shrink: per-level shrink factors of the multi-resolution pyramid.
        smooth_mm: per-level Gaussian smoothing sigmas in mm.
        iterations: maximum optimiser iterations per level.
        stages: transform stages, run in order (``similarity`` then ``affine``).
        seed: sampling seed, for reproducible results.
    """

    bins: int = 32
    sampling: float = 0.25
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_mm: tuple[float, ...] = (4.0, 2.0, 0.0)
    iterations: int = 100
    stages: tuple[str, ...] = ("similarity", "affine")
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_affine`.

    Attributes:
        transform: maps fixed (template) physical points (LPS) to moving (subject) points.
        metric: final Mattes MI value per stage (more negative is better).
        seconds: wall time.
    """

    transform: sitk.AffineTransform
    metric: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _stage(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None, init: sitk.Transform,
           s: RegistrationSettings) -> tuple[sitk.Transform, float]:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s.bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads seed 0 as "seed from the wall clock"; shift so every seed is reproducible
    reg.SetMetricSamplingPercentage(s.sampling, int(s.seed) + 1)
    if mask is not None:
        reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                                 numberOfIterations=s.iterations,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(s.shrink))
    reg.SetSmoothingSigmasPerLevel(list(s.smooth_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    out = reg.Execute(fixed, moving)
    return out, float(reg.GetMetricValue())


def _as_affine(t: sitk.Transform) -> sitk.AffineTransform:
    """Flatten a (composite) similarity/affine transform into one AffineTransform."""
    if isinstance(t, sitk.CompositeTransform) or t.GetName() == "CompositeTransform":
        t = sitk.CompositeTransform(t)
        t.FlattenTransform()
        t = t.GetNthTransform(0) if t.GetNumberOfTransforms() == 1 else t
    inner = t.Downcast() if hasattr(t, "Downcast") else t
    out = sitk.AffineTransform(3)
    out.SetCenter(inner.GetCenter())
    out.SetMatrix(inner.GetMatrix())
    out.SetTranslation(inner.GetTranslation())
    return out


def register_affine(fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image | None = None,
                    settings: RegistrationSettings | None = None) -> RegistrationResult:
    """Affinely register ``moving`` (a subject) to ``fixed`` (the template).

    Args:
        fixed: template image (float).
        moving: subject image, ideally at the template's spacing (float).
        fixed_mask: uint8 mask restricting the metric to the template brain.
        settings: see :class:`RegistrationSettings`.

    Returns:
        A :class:`RegistrationResult`; resample the subject onto the template grid with
        ``resample_onto(moving, template_affine, template_shape, result.transform)``.
    """
    s = settings or RegistrationSettings()
    t0 = time.perf_counter()
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    current: sitk.Transform = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    metrics: list[float] = []
    for stage in s.stages:
        if stage == "affine":
            current = _as_affine(current)
        elif stage != "similarity":
            raise ValueError(f"unknown registration stage {stage!r}")
        current, metric = _stage(fixed, moving, fixed_mask, current, s)
        metrics.append(metric)
    return RegistrationResult(_as_affine(current), metrics, time.perf_counter() - t0)


def transform_matrix(t: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous matrix of an affine-like transform, in RAS world coordinates.

    The matrix maps fixed (template) RAS points to moving (subject) RAS points.
    """
    a = _as_affine(t)
    m = np.asarray(a.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.asarray(a.GetCenter(), dtype=np.float64)
    tr = np.asarray(a.GetTranslation(), dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = m
    lps[:3, 3] = tr + c - m @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def matrix_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """Inverse of :func:`transform_matrix`: a 4x4 RAS point-mapping matrix as a sitk transform."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(matrix, dtype=np.float64) @ flip
    t = sitk.AffineTransform(3)
    t.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    t.SetTranslation([float(v) for v in lps[:3, 3]])
    return t


# ------------------------------------------------------------------------------ grids
def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient (X, Y, Z) data to RAS+ with nibabel; returns ``(float32 array, affine)``."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.asarray(affine)))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def common_grid(volumes: Sequence[tuple[Sequence[int], np.ndarray]],
                spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axis-aligned RAS grid at ``spacing`` mm covering every volume's field of view.

    Args:
        volumes: ``(shape (X, Y, Z), affine 4x4)`` per volume.
        spacing: grid spacing in mm.

    Returns:
        ``(affine 4x4, shape (X, Y, Z))``.
    """
    corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    pts = []
    for shape, affine in volumes:
        extent = (np.asarray(shape[:3]) - 1.0)[None, :]
        pts.append((np.asarray(affine) @ (corners * np.append(extent, [[1.0]], axis=1)).T).T[:, :3])
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    shape = tuple(int(n) for n in np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = lo
    return aff, shape  # type: ignore[return-value]


def cohort_box(volumes: np.ndarray, trim: bool = True, margin: int = 1,
               isotropic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One crop box for the whole cohort: the union of foregrounds (values > -1), plus a margin.

    Args:
        volumes: (N, *spatial) arrays in [-1, 1] with background -1.
        trim: False keeps the whole grid.  margin: voxels added on each side.
        isotropic: enlarge the box to a cube (centred; may extend past the grid, padded with -1).

    Returns:
        ``(start, size)`` int arrays per spatial axis (start may be negative).
    """
    shape = np.asarray(volumes.shape[1:])
    union = (volumes > -1.0 + 1e-6).any(axis=0)
    if trim and union.any():
        idx = np.argwhere(union)
        start = np.maximum(idx.min(0) - margin, 0)
        stop = np.minimum(idx.max(0) + 1 + margin, shape)
    else:
        start, stop = np.zeros_like(shape), shape.copy()
    size = stop - start
    if isotropic:
        side = int(size.max())
        start = start - (side - size) // 2
        size = np.full_like(size, side)
    return start.astype(int), size.astype(int)


def crop_box(volumes: np.ndarray, start: np.ndarray, size: np.ndarray, fill: float = -1.0) -> np.ndarray:
    """Crop (N, *spatial) to the box, padding with ``fill`` where it leaves the grid."""
    shape = np.asarray(volumes.shape[1:])
    before = np.maximum(-start, 0)
    after = np.maximum(start + size - shape, 0)
    padded = np.pad(volumes, [(0, 0)] + [(int(b), int(a)) for b, a in zip(before, after, strict=True)], constant_values=fill)
    s = start + before
    return padded[(slice(None),) + tuple(slice(int(a), int(a + n)) for a, n in zip(s, size, strict=True))]


def resize_volumes(volumes: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (N, *spatial) arrays in [-1, 1] to ``size`` with a cubic B-spline (MONAI).

    Voxel centres follow the align_corners=False convention: new index j samples old index
    s*j + (s-1)/2 with s = old/new.  Downsampled axes get a Gaussian (sigma (s-1)/2) first.
    """
    import torch
    from monai.transforms import Affine, GaussianSmooth

    scale = np.asarray(volumes.shape[1:], dtype=np.float64) / np.asarray(size, dtype=np.float64)
    if np.allclose(scale, 1.0):
        return np.asarray(volumes, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
    sigma = np.maximum((scale - 1.0) / 2.0, 0.0)
    if np.any(sigma > 0.05):
        x = GaussianSmooth(sigma=[float(s) for s in sigma])(x)
    aff = Affine(scale_params=[float(s) for s in scale], spatial_size=[int(s) for s in size], mode=3,
                 padding_mode="border", image_only=True)
    y = aff(x)
    return np.clip(np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y), -1.0, 1.0).astype(np.float32)


def crop_resize_affine(affine: np.ndarray, start: Sequence[int], box: Sequence[int],
                       out_shape: Sequence[int]) -> np.ndarray:
    """Affine of the grid after cropping at ``start`` (size ``box``) and resizing to ``out_shape``."""
    d = len(box)
    s = np.asarray(box, dtype=np.float64) / np.asarray(out_shape, dtype=np.float64)
    m = np.eye(4)
    m[np.arange(d), np.arange(d)] = s
    m[:d, 3] = np.asarray(start, dtype=np.float64) + (s - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ m


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W) float images to (N, size, size): torch bicubic, antialiased."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    if x.shape[-2:] == (size, size):
        return x[:, 0].numpy()
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return y[:, 0].numpy()
