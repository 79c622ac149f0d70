"""A synthetic two-class brain cohort for demos and tests (no download: built from nilearn's MNI152).

Every subject is the skull-stripped MNI152 T1 template (1 mm, nilearn) with its own anatomy:

* a smooth random non-linear deformation (:func:`random_displacement`): per axis a Gaussian
  random displacement of standard deviation ``WARP_SD_MM`` with correlation length
  ``WARP_LENGTH_MM``, scaled down where needed so that the local volume change stays within
  [``WARP_MIN_JACOBIAN``, 1 / ``WARP_MIN_JACOBIAN``] (no folding).  Affine registration removes
  only its affine part, so it survives preprocessing, unlike the pose below;
* ventricles grown by a random ``U(0, VENTRICLE_JITTER_MM)`` mm (both classes; fractional growth
  fills the boundary voxels partially, see :func:`ventricle_distance_1mm`);

and then the acquisition nuisances

* a random affine pose (applied after the deformation): rotations up to ``MAX_ROTATION_DEG``
  about each axis, translations up to ``MAX_TRANSLATION_MM`` per axis and per-axis scaling within
  1 +- ``MAX_SCALE``;
* a smooth multiplicative bias field ``exp(sum_k c_k * x_k + sum_kl c_kl * x_k * x_l)`` on
  coordinates normalised to about [-1, 1], with the field kept within 1 +- ``BIAS_AMPLITUDE``;
* Gaussian noise of standard deviation ``NOISE_SIGMA`` (relative to the brightest tissue = 1)
  inside the brain; the background stays exactly 0 (skull-stripped, like ds002748);

resampled (linear, anti-aliased) onto a LAS grid at ``spacing`` mm, like ds002748, and written
as int16 NIfTI (1000 = brightest tissue).  Class ``atrophy`` additionally has

* grey matter darkened: intensity multiplied by ``1 - GM_DARKENING * p_GM`` where ``p_GM`` is
  nilearn's MNI152 grey-matter probability map (so a voxel of pure GM is 15% darker), and
* enlarged lateral ventricles: the ventricle mask (template < 0.35 in a central box,
  |x| < 28, -45 < y < 28, -2 < z < 32 mm MNI) grown by ``VENTRICLE_DILATION_MM`` on top of the
  subject's own random growth (Euclidean distance) and filled with the mean ventricular (CSF)
  intensity;

class ``control`` has neither.  Both effects lower the mean brain intensity of ``atrophy``
subjects; :func:`phantom_group_difference` returns these numbers for tests.  Both effects are
applied in template space, before the deformation and the pose.

Why the per-subject anatomy: ``preprocess`` registers every subject affinely to MNI152, which
undid the pose, the phantoms' only anatomical difference, so the prepared cohort was almost one
image per class.  The demo cohort (``make_phantom_cohort(out, 12, seed=0)``) prepared as the demo
does (nifti reader, size 32, 2 folds, test fraction 0.25), distances in [-1, 1] over 32^3 voxels:

=========================================  ==================  ==================  ============
                                           pose only (before)  with anatomy (now)  ds002748
=========================================  ==================  ==================  ============
mean pairwise L2 distance                  9.6                 32.4                32.5
  within / between classes                 3.2 / 15.4          31.0 / 33.8         32.6 / 32.2
median distance, test to nearest trainval  1.95                28.7                27.0
in-set diversity ISD (paper 002)           0.0010              0.0081              0.0082
mean brain intensity, atrophy - control    -0.059 (d = -11)    -0.048 (d = -5.4)
=========================================  ==================  ==================  ============

Test vs trainval is 6 vs 18 subjects for the phantoms, 18 vs 54 for ds002748 (the 72 real brains,
``--reader bids --label-column group``, size 32, same split settings); over random 6-vs-18 draws
ds002748's median nearest-neighbour distance is 27.5 (phantoms: 27.8).  The phantom classes still
separate completely on mean brain intensity (over voxels inside the brain in most subjects);
ds002748's subjects vary more in intensity (standard deviation of mean brain intensity 0.03,
phantoms 0.008).  Generation takes about the same time as before (1.1 s per subject at 2 mm on a
quiet core, against 1.15 s): the extra work is paid for by cropping the template to the brain.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from synthmed.data.registration import array_to_sitk, matrix_transform, resample_onto, smooth_for_spacing
from synthmed.data.template import load_gm_probability, load_mni152_1mm, mni152_brain_mask_1mm
from synthmed.io_utils import atomic_path, write_text_atomic

CLASSES = ("atrophy", "control")
GM_DARKENING = 0.15
VENTRICLE_DILATION_MM = 2.0
VENTRICLE_THRESHOLD = 0.35
#: per-subject anatomy: random deformation (see :func:`random_displacement`): standard deviation of
#: the displacement per axis and its correlation length
WARP_SD_MM = 2.0
WARP_LENGTH_MM = 25.0
#: local volume change of the deformation kept within [WARP_MIN_JACOBIAN, 1 / WARP_MIN_JACOBIAN]
WARP_MIN_JACOBIAN = 0.5
#: spacing of the grid on which the displacement field is stored (linear interpolation in between)
WARP_FIELD_SPACING_MM = 4.0
#: the field covers the output field of view plus this margin (outside it the displacement is 0)
_WARP_MARGIN_MM = 16.0
#: per-subject ventricle growth U(0, VENTRICLE_JITTER_MM), both classes
VENTRICLE_JITTER_MM = 1.5
MAX_ROTATION_DEG = 8.0
MAX_TRANSLATION_MM = 6.0
MAX_SCALE = 0.05
BIAS_AMPLITUDE = 0.10
NOISE_SIGMA = 0.02
#: field of view of the written grid (mm), centred on the MNI brain centre
FOV_MM = (200.0, 236.0, 196.0)
FOV_CENTRE = (0.0, -18.0, 18.0)
#: background voxels kept around the template brain's bounding box (1 mm grid)
_CROP_MARGIN = 8


def phantom_group_difference() -> dict[str, Any]:
    """The documented difference between the phantom classes (see the module docstring).

    Returns:
        dict with the effect class, the reference class, ``gm_intensity_factor`` (0.85 for pure
        GM), ``ventricle_dilation_mm``, and ``expected_sign`` = sign of (mean brain intensity of
        ``atrophy`` - that of ``control``) = -1, plus the nuisance parameters.
    """
    return {
        "effect_class": "atrophy", "reference_class": "control",
        "gm_intensity_factor": 1.0 - GM_DARKENING, "ventricle_dilation_mm": VENTRICLE_DILATION_MM,
        "expected_sign": -1,
        "max_rotation_deg": MAX_ROTATION_DEG, "max_translation_mm": MAX_TRANSLATION_MM,
        "max_scale": MAX_SCALE, "bias_amplitude": BIAS_AMPLITUDE, "noise_sigma": NOISE_SIGMA,
        "warp_sd_mm": WARP_SD_MM, "warp_length_mm": WARP_LENGTH_MM,
        "warp_min_jacobian": WARP_MIN_JACOBIAN, "ventricle_jitter_mm": VENTRICLE_JITTER_MM,
    }


def ventricle_mask_1mm(t1: np.ndarray, affine: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(197, 233, 189) bool lateral-ventricle mask of the 1 mm template (threshold in a central box)."""
    ijk = np.indices(t1.shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *t1.shape)
    box = (np.abs(x) < 28) & (y > -45) & (y < 28) & (z > -2) & (z < 32)
    return box & brain & (t1 < VENTRICLE_THRESHOLD)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (within the array)."""
    idx = np.nonzero(mask)
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(idx, mask.shape, strict=True))


@functools.lru_cache(maxsize=1)
def _template_parts() -> dict[str, Any]:
    """Skull-stripped 1 mm template, brain mask, GM probability and ventricle mask, cropped to the
    brain's bounding box plus a margin of background (half the work per subject), and the affine."""
    t1, affine = load_mni152_1mm("t1")
    brain = mni152_brain_mask_1mm()
    gm, _ = load_gm_probability(None)
    vent = ventricle_mask_1mm(t1, affine, brain)
    box = _bounding_box(brain, _CROP_MARGIN)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ np.array([b.start for b in box]) + affine[:3, 3]
    img = np.where(brain, t1, 0.0).astype(np.float32)[box]
    return {"img": img, "affine": crop_affine, "brain": brain[box], "gm": np.asarray(gm[box], dtype=np.float32),
            "vent": vent[box], "csf": float(img[vent[box]].mean())}


@functools.lru_cache(maxsize=1)
def ventricle_distance_1mm() -> tuple[tuple[slice, ...], np.ndarray]:
    """Euclidean distance (mm) to the template's ventricle mask inside a box around it.

    Returns:
        ``(box, distance)``: the box (slices of the 1 mm grid, the mask's bounding box grown by
        a margin larger than any growth) and the distance of every box voxel to the nearest mask
        voxel (0 inside the mask).  Growing by ``r`` mm fills a voxel at distance ``d > 0`` by the
        fraction ``clip(r + 1 - d, 0, 1)``: ``r = 1`` fills the 6 face neighbours, and the filled
        volume grows continuously with ``r``.
    """
    parts = _template_parts()
    vent = parts["vent"]
    margin = int(np.ceil(VENTRICLE_DILATION_MM + VENTRICLE_JITTER_MM)) + 2
    box = _bounding_box(vent, margin)
    return box, ndimage.distance_transform_edt(~vent[box]).astype(np.float32)


def subject_image_1mm(label: str, ventricle_growth_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless 1 mm brain of one subject in template space, before deformation and pose.

    Args:
        label: the class (``atrophy`` darkens GM and grows ventricles by ``VENTRICLE_DILATION_MM``).
        ventricle_growth_mm: the subject's own ventricle growth (added to the class's).

    Returns:
        ``(array float32 in [0, 1], affine)``: the 1 mm template grid cropped to the brain's
        bounding box plus ``_CROP_MARGIN`` voxels of background.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; expected one of {CLASSES}")
    parts = _template_parts()
    img = parts["img"].copy()
    if label == "atrophy":
        img *= 1.0 - GM_DARKENING * parts["gm"]
    growth = ventricle_growth_mm + (VENTRICLE_DILATION_MM if label == "atrophy" else 0.0)
    if label == "atrophy":
        img[parts["vent"]] = parts["csf"]
    if growth > 0:
        box, dist = ventricle_distance_1mm()
        fill = np.where(dist > 0, np.clip(growth + 1.0 - dist, 0.0, 1.0), 0.0) * parts["brain"][box]
        img[box] = img[box] * (1.0 - fill) + parts["csf"] * fill
    return img.astype(np.float32, copy=False), parts["affine"]


def class_image(label: str) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless 1 mm brain of a class with no per-subject variation (see :func:`subject_image_1mm`)."""
    return subject_image_1mm(label)


def random_displacement(rng: np.random.Generator,
                        field_spacing: float = WARP_FIELD_SPACING_MM) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field in template (MNI) space.

    Each axis's displacement is a stationary Gaussian random field of standard deviation
    ``WARP_SD_MM`` and correlation ``exp(-r^2 / (2 WARP_LENGTH_MM^2))`` between points ``r`` mm
    apart: white noise on a grid ``field_spacing`` mm apart over the phantom field of view (plus
    a margin), smoothed by a Gaussian of standard deviation ``WARP_LENGTH_MM / sqrt(2)``
    (periodic boundaries) and scaled by the factor that gives unit variance.  Where the
    deformation ``q -> q + field(q)`` would change the volume locally by more than
    ``WARP_MIN_JACOBIAN`` allows (Jacobian determinant below it or above its inverse), the whole
    field is scaled down until it does not, so the deformation never folds.

    Returns:
        ``(field (3, X, Y, Z) float32 RAS mm, 4x4 RAS affine of the field grid)``.
    """
    extent = np.asarray(FOV_MM) + 2.0 * _WARP_MARGIN_MM
    origin = np.asarray(FOV_CENTRE) - extent / 2.0
    shape = tuple(int(n) for n in np.ceil(extent / field_spacing).astype(int) + 1)
    sigma = WARP_LENGTH_MM / np.sqrt(2.0) / field_spacing  # kernel sd in grid steps
    # variance of Gaussian-smoothed unit white noise in 3D: 1 / (8 pi^1.5 sigma^3)
    gain = WARP_SD_MM * np.sqrt(8.0 * np.pi**1.5 * sigma**3)
    noise = rng.standard_normal((3, *shape)).astype(np.float32)
    field = np.stack([ndimage.gaussian_filter(n, sigma, mode="wrap", truncate=3.0) for n in noise]) * gain
    for _ in range(50):
        det = jacobian_determinant(field, field_spacing)
        if det.min() >= WARP_MIN_JACOBIAN and det.max() <= 1.0 / WARP_MIN_JACOBIAN:
            break
        field *= 0.9
    affine = np.diag([field_spacing, field_spacing, field_spacing, 1.0])
    affine[:3, 3] = origin
    return field.astype(np.float32), affine


def displacement_transform(field: np.ndarray, affine: np.ndarray) -> sitk.Transform:
    """A (3, X, Y, Z) RAS displacement field on an axis-aligned RAS grid as a sitk transform.

    The transform maps a point ``q`` to ``q + field(q)`` (linear interpolation; zero outside the grid).
    """
    lps = np.stack([-field[0], -field[1], field[2]], axis=-1).astype(np.float64)  # (X, Y, Z, 3)
    img = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(2, 1, 0, 3)), isVector=True)
    img.CopyInformation(array_to_sitk(np.zeros(field.shape[1:], dtype=np.uint8), affine))
    return sitk.DisplacementFieldTransform(img)


def jacobian_determinant(field: np.ndarray, spacing: float) -> np.ndarray:
    """Jacobian determinant of ``q -> q + field(q)`` on the field grid (finite differences)."""
    grads = [np.gradient(field[k], spacing) for k in range(3)]  # grads[k][a] = d u_k / d x_a
    jac = np.stack([np.stack(g, axis=-1) for g in grads], axis=-2) + np.eye(3, dtype=field.dtype)
    return np.linalg.det(jac)


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    """4x4 RAS world->world matrix (about the MNI brain centre) of a random small pose change."""
    rot = Rotation.from_euler("xyz", rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3), degrees=True)
    m = np.eye(4)
    m[:3, :3] = rot.as_matrix() @ np.diag(1.0 + rng.uniform(-MAX_SCALE, MAX_SCALE, 3))
    c = np.asarray(FOV_CENTRE)
    m[:3, 3] = c - m[:3, :3] @ c + rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, 3)
    return m


def las_grid(spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The LAS output grid (affine, shape) at ``spacing`` mm covering :data:`FOV_MM`."""
    shape = tuple(int(np.ceil(f / spacing)) for f in FOV_MM)
    aff = np.diag([-spacing, spacing, spacing, 1.0])
    centre_vox = (np.asarray(shape) - 1.0) / 2.0
    aff[:3, 3] = np.asarray(FOV_CENTRE) - aff[:3, :3] @ centre_vox
    return aff, shape  # type: ignore[return-value]


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    coords = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = list(coords) + [coords[a] * coords[b] for a in range(3) for b in range(a, 3)]
    log_b = sum(rng.normal(0.0, 1.0) * t for t in terms)
    log_b = log_b / max(float(np.abs(log_b).max()), 1e-6) * np.log1p(BIAS_AMPLITUDE)
    return np.exp(log_b).astype(np.float32)


def make_phantom_subject(label: str, rng: np.random.Generator,
                         spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom subject.

    Returns:
        ``(int16 array (X, Y, Z) on the LAS grid, its 4x4 affine, pose matrix)``; the pose maps
        the subject's deformed template (MNI) points to subject world points.
    """
    img, aff1 = subject_image_1mm(label, ventricle_growth_mm=float(rng.uniform(0.0, VENTRICLE_JITTER_MM)))
    field, field_aff = random_displacement(rng)
    src = smooth_for_spacing(array_to_sitk(img, aff1), spacing)
    pose = _random_pose(rng)
    grid_aff, shape = las_grid(spacing)
    # output point p -> template point: undo the pose, then deform (sitk composes right to left)
    transform = sitk.CompositeTransform([displacement_transform(field, field_aff),
                                         matrix_transform(np.linalg.inv(pose))])
    vol = resample_onto(src, grid_aff, shape, transform)
    brain = vol > 0.02
    vol = vol * _bias_field(shape, rng) + rng.normal(0.0, NOISE_SIGMA, shape).astype(np.float32)
    vol = np.where(brain, np.clip(vol, 0.0, None), 0.0)
    return np.round(vol * 1000.0).astype(np.int16), grid_aff, pose


def make_phantom_cohort(out_dir: str | Path, n_per_class: int = 12, seed: int = 0,
                        spacing: float = 2.0) -> Path:
    """Write a two-class phantom cohort: ``phantom-NNN.nii.gz`` files and ``labels.csv``.

    Args:
        out_dir: destination folder (created).
        n_per_class: subjects per class (``atrophy`` and ``control``).
        seed: random seed (anatomy, poses, bias fields, noise, class order).
        spacing: voxel size of the written LAS grid in mm.

    Returns:
        ``out_dir``; preprocess it with ``reader="nifti"``, ``labels_csv=out_dir/"labels.csv"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = [c for c in CLASSES for _ in range(n_per_class)]
    labels = [labels[i] for i in rng.permutation(len(labels))]
    rows = ["subject_id,label"]
    for i, lab in enumerate(labels):
        sid = f"phantom-{i + 1:03d}"
        data, aff, _ = make_phantom_subject(lab, rng, spacing)
        img = nib.Nifti1Image(data, aff)
        img.header.set_xyzt_units("mm", "sec")
        with atomic_path(out / f"{sid}.nii.gz") as tmp:
            tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6))
        rows.append(f"{sid},{lab}")
    write_text_atomic(out / "labels.csv", "\n".join(rows) + "\n")
    return out
