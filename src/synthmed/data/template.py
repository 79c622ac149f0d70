"""The MNI152 brain template that ships inside nilearn (no download), at any target spacing.

Paper 000, "Data": images were "registered to MNI space" before clipping and rescaling.  We use the
ICBM 2009a symmetric T1 template bundled with nilearn
(``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 1 mm, 197x233x189,
already skull-stripped) together with nilearn's brain mask (template > 0.2 of its maximum, here
with enclosed holes filled), so no network access is ever needed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from synthmed.data.registration import array_to_sitk, resample_to_spacing, sitk_to_array
from synthmed.errors import ConfigError
from synthmed.io_utils import sha256_file

TEMPLATES = ("mni152",)


@dataclass(frozen=True)
class Template:
    """A brain template on a regular RAS grid.

    Attributes:
        name: template name (``mni152``).
        image: (X, Y, Z) float32 T1 intensities in [0, 1], zero outside the brain.
        mask: (X, Y, Z) bool brain mask.
        affine: 4x4 voxel-to-world (RAS+, mm) affine of the grid.
        spacing: voxel size in mm (isotropic).
        path: the template file it was built from.
        sha256: SHA-256 of that file (recorded in ``dataset.json``).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    spacing: float
    path: Path
    sha256: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    def dilated_mask(self, mm: float) -> np.ndarray:
        """(X, Y, Z) bool brain mask grown by ``mm`` millimetres (ball-shaped)."""
        r = int(np.floor(mm / self.spacing + 1e-6))
        if r <= 0:
            return self.mask.copy()
        ball = np.linalg.norm(np.indices((2 * r + 1,) * 3) - r, axis=0) <= mm / self.spacing + 1e-6
        return ndimage.binary_dilation(self.mask, structure=ball)

    def to_sitk(self) -> sitk.Image:
        """The masked template as a SimpleITK image (float32, LPS physical space)."""
        return array_to_sitk(self.image, self.affine)

    def mask_sitk(self) -> sitk.Image:
        """The brain mask as a SimpleITK uint8 image on the template grid."""
        return array_to_sitk(self.mask.astype(np.uint8), self.affine)


def mni152_paths() -> dict[str, Path]:
    """Paths of the nilearn-bundled MNI152 T1 and grey-matter probability files."""
    from nilearn.datasets import struct

    return {"t1": Path(struct.MNI152_FILE_PATH), "gm": Path(struct.GM_MNI152_FILE_PATH)}


def load_mni152_1mm(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm MNI152 ``t1`` or ``gm`` image scaled to [0, 1]: ``(array (197, 233, 189), RAS affine)``."""
    img = nib.as_closest_canonical(nib.load(str(mni152_paths()[kind])))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data / max(float(data.max()), 1e-8), np.asarray(img.affine, dtype=np.float64)


def mni152_brain_mask_1mm(threshold: float = 0.2) -> np.ndarray:
    """(197, 233, 189) bool brain mask of the 1 mm template (nilearn's rule, holes filled)."""
    from nilearn.datasets import load_mni152_brain_mask

    mask = np.asarray(load_mni152_brain_mask(resolution=1, threshold=threshold).dataobj) > 0
    return ndimage.binary_fill_holes(mask)


@functools.lru_cache(maxsize=8)
def load_template(name: str = "mni152", spacing: float = 2.0) -> Template:
    """Load the brain-masked template resampled to ``spacing`` mm (cached).

    Args:
        name: template name; only ``mni152`` is available.
        spacing: target isotropic voxel size in mm (0.5..8).

    Returns:
        A :class:`Template`; its grid covers the 1 mm template's field of view
        (e.g. 99x117x95 at 2 mm).
    """
    if name not in TEMPLATES:
        raise ConfigError(f"unknown template {name!r}; expected one of: {', '.join(TEMPLATES)}")
    if not 0.5 <= float(spacing) <= 8.0:
        raise ConfigError(f"template spacing must be within 0.5..8 mm, got {spacing}")
    t1, affine = load_mni152_1mm("t1")
    mask = mni152_brain_mask_1mm()
    t1 = np.where(mask, t1, 0.0).astype(np.float32)
    img = resample_to_spacing(array_to_sitk(t1, affine), float(spacing), sitk.sitkLinear)
    msk = resample_to_spacing(array_to_sitk(mask.astype(np.float32), affine), float(spacing),
                              sitk.sitkLinear, smooth=False)
    image, new_affine = sitk_to_array(img)
    mask_r = sitk_to_array(msk)[0] >= 0.5
    image = np.where(mask_r, np.clip(image, 0.0, 1.0), 0.0).astype(np.float32)
    path = mni152_paths()["t1"]
    return Template(name=name, image=image, mask=mask_r, affine=new_affine, spacing=float(spacing),
                    path=path, sha256=sha256_file(path))


def load_gm_probability(spacing: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 grey-matter probability map, in [0, 1].

    Args:
        spacing: resample to this isotropic spacing (mm); None keeps the 1 mm grid.

    Returns:
        ``(gm, affine)``: (X, Y, Z) float32 probabilities and the 4x4 RAS affine.
    """
    gm, affine = load_mni152_1mm("gm")
    if spacing is None:
        return gm, affine
    out = resample_to_spacing(array_to_sitk(gm, affine), float(spacing), sitk.sitkLinear)
    arr, aff = sitk_to_array(out)
    return np.clip(arr, 0.0, 1.0).astype(np.float32), aff
