"""A synthetic two-class brain cohort for demos and tests (no download: built from nilearn's MNI152).

Every subject is the skull-stripped MNI152 T1 template (1 mm, nilearn) with

* a random affine pose: rotations up to ``MAX_ROTATION_DEG`` about each axis, translations up to
  ``MAX_TRANSLATION_MM`` per axis and per-axis scaling within 1 +- ``MAX_SCALE``;
* a smooth multiplicative bias field ``exp(sum_k c_k * x_k + sum_kl c_kl * x_k * x_l)`` on
  coordinates normalised to about [-1, 1], with the field kept within 1 +- ``BIAS_AMPLITUDE``;
* Gaussian noise of standard deviation ``NOISE_SIGMA`` (relative to the brightest tissue = 1)
  inside the brain; the background stays exactly 0 (skull-stripped, like ds002748);

resampled (linear, anti-aliased) onto a LAS grid at ``spacing`` mm, like ds002748, and written
as int16 NIfTI (1000 = brightest tissue).  Class ``atrophy`` additionally has

* grey matter darkened: intensity multiplied by ``1 - GM_DARKENING * p_GM`` where ``p_GM`` is
  nilearn's MNI152 grey-matter probability map (so a voxel of pure GM is 15% darker), and
* enlarged lateral ventricles: the ventricle mask (template < 0.35 in a central box,
  |x| < 28, -45 < y < 28, -2 < z < 32 mm MNI) dilated by ``VENTRICLE_DILATION_MM`` and filled
  with the mean ventricular (CSF) intensity;

class ``control`` has neither.  Both effects lower the mean brain intensity of ``atrophy``
subjects; :func:`phantom_group_difference` returns these numbers for tests.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from synthmed.data.registration import array_to_sitk, matrix_transform, resample_onto, smooth_for_spacing
from synthmed.data.template import load_gm_probability, load_mni152_1mm, mni152_brain_mask_1mm
from synthmed.io_utils import atomic_path, write_text_atomic

CLASSES = ("atrophy", "control")
GM_DARKENING = 0.15
VENTRICLE_DILATION_MM = 2.0
VENTRICLE_THRESHOLD = 0.35
MAX_ROTATION_DEG = 8.0
MAX_TRANSLATION_MM = 6.0
MAX_SCALE = 0.05
BIAS_AMPLITUDE = 0.10
NOISE_SIGMA = 0.02
#: field of view of the written grid (mm), centred on the MNI brain centre
FOV_MM = (200.0, 236.0, 196.0)
FOV_CENTRE = (0.0, -18.0, 18.0)


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
    }


def ventricle_mask_1mm(t1: np.ndarray, affine: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(197, 233, 189) bool lateral-ventricle mask of the 1 mm template (threshold in a central box)."""
    ijk = np.indices(t1.shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *t1.shape)
    box = (np.abs(x) < 28) & (y > -45) & (y < 28) & (z > -2) & (z < 32)
    return box & brain & (t1 < VENTRICLE_THRESHOLD)


@functools.lru_cache(maxsize=2)
def class_image(label: str) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless 1 mm brain of a class: ``(array (197, 233, 189) float32 in [0, 1], affine)``."""
    if label not in CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; expected one of {CLASSES}")
    t1, affine = load_mni152_1mm("t1")
    brain = mni152_brain_mask_1mm()
    img = np.where(brain, t1, 0.0).astype(np.float32)
    if label == "atrophy":
        gm, _ = load_gm_probability(None)
        vent = ventricle_mask_1mm(t1, affine, brain)
        csf = float(img[vent].mean())
        img = img * (1.0 - GM_DARKENING * gm)
        grown = ndimage.binary_dilation(vent, iterations=int(round(VENTRICLE_DILATION_MM))) & brain
        img[grown] = csf
    return img.astype(np.float32), affine


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
        template (MNI) points to subject world points.
    """
    img, aff1 = class_image(label)
    src = smooth_for_spacing(array_to_sitk(img, aff1), spacing)
    pose = _random_pose(rng)
    grid_aff, shape = las_grid(spacing)
    vol = resample_onto(src, grid_aff, shape, matrix_transform(np.linalg.inv(pose)))
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
        seed: random seed (poses, bias fields, noise, class order).
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
