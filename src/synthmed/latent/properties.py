"""Measured properties of subjects: image measurements by simple intensity thresholds, and table columns.

Image properties (for real and generated images alike, on the prepared intensity scale [-1, 1] where
the background is -1):

* ``total_brain_volume``: voxels above ``brain_threshold`` (holes filled) times the voxel volume, in
  ml, in the prepared (template-registered) space.  Registration scales every head towards the
  template, so this is a *normalised* brain volume (in the spirit of SIENAX's normalised volumes).
* ``native_brain_volume`` (real images only): the same, times the determinant of the subject's
  template-to-subject registration (``dataset.json`` ``qc``), i.e. the brain volume in native space.
* ``ventricle_volume``: dark voxels (below ``csf_threshold``) inside the brain mask eroded by
  ``erosion_mm``, within the central half of the volume along every axis, in connected components of at
  least ``min_component_ml``; a crude ventricle proxy (paper 001, Sec. IV-E, uses thresholds for bone).

Any other name is read from the subject table: ``participants.tsv`` of the BIDS input recorded in the
prepared dataset (or a given TSV/CSV), matched on ``participant_id``/``subject_id``; non-numeric or
missing values ("n/a") become NaN.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from synthmed.data.prepared import PreparedDataset
from synthmed.errors import DataError


@dataclass(frozen=True)
class ThresholdOptions:
    """Thresholds of the image measurements, on the prepared intensity scale [-1, 1]."""

    brain_threshold: float = -0.9
    csf_threshold: float = -0.3
    erosion_mm: float = 7.5
    central_fraction: float = 0.5
    min_component_ml: float = 0.15


DEFAULT_THRESHOLDS = ThresholdOptions()


def _voxel_ml(spacing: Sequence[float]) -> float:
    return float(np.prod(spacing)) / 1000.0


def brain_mask(image: np.ndarray, opts: ThresholdOptions = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Voxels above ``brain_threshold`` with enclosed holes (ventricles) filled: (*S) bool."""
    return ndimage.binary_fill_holes(np.asarray(image) > opts.brain_threshold)


def total_brain_volume(image: np.ndarray, spacing: Sequence[float], opts: ThresholdOptions = DEFAULT_THRESHOLDS
                       ) -> float:
    """Brain volume in ml of one image (*S) with voxel ``spacing`` in mm."""
    return float(brain_mask(image, opts).sum()) * _voxel_ml(spacing)


def ventricle_mask(image: np.ndarray, spacing: Sequence[float], opts: ThresholdOptions = DEFAULT_THRESHOLDS
                   ) -> np.ndarray:
    """The ventricle proxy of :func:`ventricle_volume` as a (*S) bool mask."""
    image = np.asarray(image)
    inner = brain_mask(image, opts)
    radius = [max(1, round(opts.erosion_mm / s)) for s in spacing]
    ball = np.ones([2 * r + 1 for r in radius], dtype=bool)
    inner = ndimage.binary_erosion(inner, structure=ball)
    box = np.zeros_like(inner)
    lo = [round(n * (1 - opts.central_fraction) / 2) for n in image.shape]
    box[tuple(slice(a, n - a) for a, n in zip(lo, image.shape, strict=True))] = True
    mask = inner & box & (image < opts.csf_threshold)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1)) * _voxel_ml(spacing)
    keep = np.flatnonzero(sizes >= opts.min_component_ml) + 1
    return np.isin(labels, keep)


def ventricle_volume(image: np.ndarray, spacing: Sequence[float], opts: ThresholdOptions = DEFAULT_THRESHOLDS
                     ) -> float:
    """Volume in ml of dark central voxels inside the eroded brain (a simple ventricle proxy)."""
    return float(ventricle_mask(image, spacing, opts).sum()) * _voxel_ml(spacing)


#: Properties measured on an image (*S) with voxel spacing (mm), in ml.
IMAGE_PROPERTIES: dict[str, Callable[..., float]] = {
    "total_brain_volume": total_brain_volume,
    "ventricle_volume": ventricle_volume,
}
#: Units of the measured properties.
UNITS = {"total_brain_volume": "ml", "ventricle_volume": "ml", "native_brain_volume": "ml"}


def measure_images(images: np.ndarray, spacing: Sequence[float], name: str,
                   opts: ThresholdOptions = DEFAULT_THRESHOLDS) -> np.ndarray:
    """``name`` (a key of :data:`IMAGE_PROPERTIES`) for every image of (N, 1, *S): (N,) float64."""
    if name not in IMAGE_PROPERTIES:
        raise DataError(f"unknown image property {name!r}; expected one of: {', '.join(IMAGE_PROPERTIES)}")
    fn = IMAGE_PROPERTIES[name]
    return np.array([fn(np.asarray(img[0]), spacing, opts) for img in images], dtype=np.float64)


def read_subject_table(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a TSV/CSV subject table keyed by ``participant_id`` (or ``subject_id``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subject table not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    key = next((k for k in ("participant_id", "subject_id") if rows and k in rows[0]), None)
    if key is None:
        raise DataError(f"{path}: needs a participant_id or subject_id column")
    return {r[key]: r for r in rows}


def find_subject_table(ds: PreparedDataset) -> Path | None:
    """``participants.tsv`` of the BIDS folder the prepared dataset was made from, if it still exists."""
    src = (ds.meta.get("preprocessing") or {}).get("options", {}).get("input")
    if src and (Path(src) / "participants.tsv").is_file():
        return Path(src) / "participants.tsv"
    return None


def _to_float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "", "n/a", "NA") else float("nan")
    except ValueError:
        return float("nan")


def _native_scale(ds: PreparedDataset, sid: str) -> float:
    qc = (ds.meta.get("qc") or {}).get(sid) or {}
    m = qc.get("template_to_subject")
    return abs(float(np.linalg.det(np.asarray(m, dtype=np.float64)[:3, :3]))) if m else float("nan")


def subject_property(ds: PreparedDataset, subject_ids: Sequence[str], name: str, table: str | Path | None = None,
                     opts: ThresholdOptions = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Values (N,) of property ``name`` for ``subject_ids`` of the prepared dataset ``ds`` (NaN if missing).

    Image properties are measured on the prepared images; other names are columns of ``table`` (default:
    the BIDS ``participants.tsv`` the dataset was prepared from).
    """
    rows = {sid: i for i, sid in enumerate(ds.subject_ids)}
    missing = [s for s in subject_ids if s not in rows]
    if missing:
        raise DataError(f"{ds.root}: subject(s) {', '.join(missing[:3])} are not in this prepared dataset")
    idx = [rows[s] for s in subject_ids]
    spacing = ds.meta.get("spacing") or [1.0] * ds.spatial_dims
    if name in IMAGE_PROPERTIES:
        return measure_images(ds.images[idx], spacing, name, opts)
    if name == "native_brain_volume":
        tbv = measure_images(ds.images[idx], spacing, "total_brain_volume", opts)
        return tbv * np.array([_native_scale(ds, s) for s in subject_ids])
    path = Path(table) if table else find_subject_table(ds)
    if path is None:
        raise DataError(f"property {name!r} is not an image property ({', '.join(IMAGE_PROPERTIES)}, "
                        "native_brain_volume) and no subject table was given or found (pass --participants)")
    tab = read_subject_table(path)
    first = next(iter(tab.values()), {})
    if name not in first:
        raise DataError(f"{path}: no column {name!r}; columns: {', '.join(first)}")
    raw = [tab.get(s, {}).get(name) for s in subject_ids]
    values = np.array([_to_float(v) for v in raw], dtype=np.float64)
    text = sorted({str(v) for v, f in zip(raw, values, strict=True)
                   if np.isnan(f) and v not in (None, "", "n/a", "NA")})
    if text:
        raise DataError(f"{path}: column {name!r} is not numeric (values such as {', '.join(map(repr, text[:4]))}); "
                        "ridge regression and latent directions need a numeric property")
    return values
