"""Writers for synthetic images: NIfTI with the prepared space's affine (3D), 8-bit PNG (2D)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def write_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a (D, H, W) float volume in [-1, 1] as float32 NIfTI with ``affine`` (voxel → mm, RAS).

    The affine is that of the prepared dataset's grid, so a synthetic brain overlays the
    template (and the real prepared images) in any NIfTI viewer.
    """
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] → [0, 255] uint8 (clipped)."""
    return np.clip(np.rint((np.asarray(image, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_png(image: np.ndarray, path: Path) -> None:
    """Write a (H, W) image in [-1, 1] as 8-bit grayscale PNG."""
    Image.fromarray(to_uint8(image), mode="L").save(path)
