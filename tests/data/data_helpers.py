"""Helpers for the data tests: tiny files written by the tests themselves (imported by tests)."""

from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

#: world (RAS, mm) position of the bright blob in ``nifti_folder`` volumes
BLOB_MM = np.array([12.0, -8.0, 6.0])


def oblique_las_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float] = (2.0, 2.0, 2.5),
                       angle_deg: float = 10.0) -> np.ndarray:
    """A LAS affine rotated about the z axis (oblique), anisotropic, grid centre at the world origin."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-spacing[0], spacing[1], spacing[2]])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return aff


def blob_volume(shape: tuple[int, int, int], affine: np.ndarray, centre_mm: np.ndarray,
                head_radius_mm: float = 40.0, blob_sigma_mm: float = 3.0, seed: int = 0) -> np.ndarray:
    """A noisy ellipsoidal 'head' centred at the world origin with a bright blob at ``centre_mm`` (RAS)."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *shape)
    r = np.sqrt((xyz[0] / head_radius_mm) ** 2 + (xyz[1] / (1.2 * head_radius_mm)) ** 2 + (xyz[2] / head_radius_mm) ** 2)
    rng = np.random.default_rng(seed)
    vol = np.where(r < 1.0, 300.0 + 20.0 * rng.standard_normal(shape), 0.0)
    d2 = sum((xyz[k] - centre_mm[k]) ** 2 for k in range(3))
    vol = vol + 2000.0 * np.exp(-d2 / (2 * blob_sigma_mm**2)) * (r < 1.0)
    return vol.astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_labels(path: Path, rows: dict[str, str], id_column: str = "subject_id", label_column: str = "label") -> Path:
    lines = [f"{id_column},{label_column}"] + [f"{k},{v}" for k, v in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_dicom_series(folder: Path, vol: np.ndarray, spacing: tuple[float, float, float],
                        origin: tuple[float, float, float]) -> None:
    """Write (X, Y, Z) int16 ``vol`` as an axial DICOM series with SimpleITK."""
    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray(vol.transpose(2, 1, 0))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10**12)
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, val in (("0008|0060", "MR"), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                         ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", str(spacing[2])),
                         ("0020|0013", str(k + 1)),
                         ("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))):
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        saved = locale.setlocale(locale.LC_ALL)
        writer.Execute(sl)  # GDCM's DICOM writer sets LC_ALL to "C" and leaves it there
        locale.setlocale(locale.LC_ALL, saved)


def series_with_bad_slice(root: Path, case: str) -> tuple[Path, np.ndarray]:
    """A 10-slice series at 2 mm in ``root/p1`` with slice005.dcm missing, garbage, truncated or without
    a position (GDCM drops such files and ITK stacks the rest evenly: 9 slices at 2.25 mm)."""
    vol = np.random.default_rng(1).integers(0, 1000, (10, 12, 10)).astype(np.int16)
    folder = root / "p1"
    write_dicom_series(folder, vol, (0.8, 0.9, 2.0), (0.0, 0.0, 0.0))
    bad = folder / "slice005.dcm"
    if case == "missing":
        bad.unlink()
    elif case == "garbage":
        bad.write_bytes(b"not DICOM at all" * 64)
    elif case == "truncated":
        bad.write_bytes(bad.read_bytes()[:-100])
    elif case == "no_position":
        import pydicom

        ds = pydicom.dcmread(bad)
        del ds.ImagePositionPatient
        ds.save_as(bad)
    return folder, vol
