"""Blinded rendering: every study image becomes PNGs that only its pixels can tell apart.

Both sources go through exactly the same steps: one fixed intensity window (``[-1, 1]`` by default,
the range of prepared and synthetic images) to 8-bit grey, the same display orientation, the same
slice mosaic layout, and the same PNG encoder settings.  The PNG is written *uncompressed*
(zlib level 0) with no ancillary chunks (no text, time, gamma or physical-size chunks), so every
image of a plane has exactly the same byte length: compressed sizes would otherwise differ with
image content (noise, smoothness) and could hint at provenance.

3D volumes are in the prepared RAS voxel order (X: left->right, Y: posterior->anterior,
Z: inferior->superior) and are shown like :mod:`synthmed.data.preview`: neurological convention,
anterior / superior at the top.  Each plane is served as one mosaic PNG holding all its slices
(row-major, ``grid_cols`` slices per row) so the browser can scroll without further requests.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

#: plane names shown for 3D studies, with the array axis each plane is normal to.
PLANES_3D = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: the single "plane" of a 2D study.
PLANE_2D = "image"


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane's mosaic is laid out and displayed (identical for every image of a study).

    Attributes:
        name: ``axial``, ``coronal``, ``sagittal`` or ``image`` (2D).
        n_slices: slices in the mosaic (1 for 2D).
        rows: height of one slice in pixels.
        cols: width of one slice in pixels.
        grid_cols: slices per mosaic row.
        width_px: display width in CSS pixels (physical proportions when spacing is known).
        height_px: display height in CSS pixels.
    """

    name: str
    n_slices: int
    rows: int
    cols: int
    grid_cols: int
    width_px: int
    height_px: int

    @property
    def grid_rows(self) -> int:
        return math.ceil(self.n_slices / self.grid_cols)

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


def window_uint8(images: np.ndarray, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Map intensities to 8-bit grey with one fixed window (the same for every image).

    Args:
        images: (N, 1, *spatial) float array.
        low: intensity shown black.
        high: intensity shown white.

    Returns:
        (N, *spatial) uint8.
    """
    if not high > low:
        raise ValueError(f"intensity window must have high > low, got [{low}, {high}]")
    x = np.asarray(images, dtype=np.float32)
    if x.ndim not in (4, 5) or x.shape[1] != 1:
        raise ValueError(f"expected (N, 1, *spatial) images with 2 or 3 spatial dims, got {x.shape}")
    x = x[:, 0]
    scaled = (np.clip(x, low, high) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def plane_layouts(shape: Sequence[int], spacing: Sequence[float] | None = None,
                  max_display: int = 320) -> list[PlaneLayout]:
    """The display layout of each plane for images of ``shape``.

    Args:
        shape: spatial shape, (H, W) for 2D or (X, Y, Z) for 3D.
        spacing: voxel size per axis (mm); None means isotropic.
        max_display: the longest displayed edge over all planes, in CSS pixels (2D images get 1.6x).

    Returns:
        One :class:`PlaneLayout` per plane.
    """
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing if spacing is not None else [1.0] * len(shape), dtype=np.float64)
    if len(sp) != len(shape) or not np.all(sp > 0):
        sp = np.ones(len(shape))
    if len(shape) == 2:
        h, w = shape
        scale = 1.6 * max_display / max(h * sp[0], w * sp[1])
        return [PlaneLayout(PLANE_2D, 1, h, w, 1, round(w * sp[1] * scale), round(h * sp[0] * scale))]
    if len(shape) != 3:
        raise ValueError(f"images must have 2 or 3 spatial dimensions, got shape {shape}")
    # (column axis, row axis) of each displayed plane
    axes = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
    extent = max(shape[a] * sp[a] for a in range(3))
    scale = max_display / extent
    out = []
    for name in PLANES_3D:
        c, r = axes[name]
        n = shape[PLANE_AXIS[name]]
        out.append(PlaneLayout(name, n, shape[r], shape[c], math.ceil(math.sqrt(n)),
                               round(shape[c] * sp[c] * scale), round(shape[r] * sp[r] * scale)))
    return out


def plane_stack(image: np.ndarray, plane: str) -> np.ndarray:
    """Display-oriented slices of one image.

    Args:
        image: (H, W) for 2D, or an (X, Y, Z) RAS volume.
        plane: a plane name of :func:`plane_layouts`.

    Returns:
        (n_slices, rows, cols), top row = anterior (axial) or superior (coronal, sagittal).
    """
    if image.ndim == 2:
        if plane != PLANE_2D:
            raise KeyError(plane)
        return image[None]
    if plane == "axial":  # slice k = vol[:, :, k].T flipped up-down
        return np.transpose(image, (2, 1, 0))[:, ::-1, :]
    if plane == "coronal":
        return np.transpose(image, (1, 2, 0))[:, ::-1, :]
    if plane == "sagittal":
        return np.transpose(image, (0, 2, 1))[:, ::-1, :]
    raise KeyError(plane)


def mosaic(image: np.ndarray, layout: PlaneLayout) -> np.ndarray:
    """All slices of one plane tiled into one 2D uint8 array (unused tiles are black)."""
    stack = plane_stack(image, layout.name)
    out = np.zeros((layout.grid_rows * layout.rows, layout.grid_cols * layout.cols), dtype=np.uint8)
    for k in range(layout.n_slices):
        r, c = divmod(k, layout.grid_cols)
        out[r * layout.rows:(r + 1) * layout.rows, c * layout.cols:(c + 1) * layout.cols] = stack[k]
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode a 2D uint8 array as an uncompressed 8-bit grey PNG with no ancillary chunks.

    The byte length depends only on the array's shape, never on its content.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2D uint8 array, got {pixels.dtype} {pixels.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buf, format="PNG", compress_level=0,
                                                                 optimize=False)
    return buf.getvalue()


def render_plane_png(image: np.ndarray, layout: PlaneLayout) -> bytes:
    """The PNG of one plane of one (already windowed, uint8) study image."""
    return encode_png(mosaic(image, layout))
