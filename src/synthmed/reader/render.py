"""Blinded rendering: every study image becomes PNGs that only its pixels can tell apart.

Both sources go through exactly the same steps: one fixed intensity window (``[-1, 1]`` by default,
the range of prepared and synthetic images) to 8-bit grey, the same display orientation, the same
slice mosaic layout, and the same PNG encoder settings (zlib level :data:`PNG_COMPRESS_LEVEL`, no
ancillary chunks: no text, time, gamma or physical-size chunks).  Compressed sizes differ with
image content (noise, smoothness) and could hint at provenance, so every PNG of a study is padded
to one common byte length with a private ancillary chunk (:data:`PAD_CHUNK`, zero bytes, ignored
by decoders): see :func:`pad_png` and :mod:`synthmed.reader.pngcache`.

3D volumes are stored in RAS voxel order (X: patient's left -> right, Y: posterior -> anterior,
Z: inferior -> superior; ``synthmed reader create`` reorients with the prepared dataset's affine,
see :func:`ras_reorientation`) and shown in the **radiological convention**
(:data:`DISPLAY_CONVENTION`): axial and coronal views have the patient's right on the image's left,
the sagittal view has anterior on the left; anterior (axial) or superior (coronal, sagittal) is at
the top.  :data:`PLANE_EDGES` names the anatomical side at each edge of each view.  Each plane is
served as one mosaic PNG holding all its slices (row-major, ``grid_cols`` slices per row) so the
browser can scroll without further requests.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

#: plane names shown for 3D studies, with the array axis each plane is normal to.
PLANES_3D = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: the single "plane" of a 2D study.
PLANE_2D = "image"
#: how 3D views are oriented (see the module docstring)
DISPLAY_CONVENTION = "radiological"
CONVENTION_TEXT = ("radiological convention (the patient's right on the image's left in the axial and coronal "
                   "views, anterior on the left in the sagittal view; anterior or superior at the top)")
#: anatomical side at the (left, right, top, bottom) edge of each displayed 3D view
PLANE_EDGES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
#: zlib level of the study PNGs (9 is about 2% smaller and three times slower)
PNG_COMPRESS_LEVEL = 6
#: type of the padding chunk: ancillary (a), private (a), reserved bit clear (D), safe to copy (d)
PAD_CHUNK = b"paDd"
#: bytes a chunk adds besides its data: length, type and CRC
CHUNK_OVERHEAD = 12
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


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


def ras_reorientation(affine: np.ndarray | Sequence[Sequence[float]] | None
                      ) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], str]:
    """How to bring a volume with voxel-to-world ``affine`` into RAS voxel order.

    Args:
        affine: 4x4 voxel-to-world (RAS+, mm) affine of the volumes' grid (oblique grids use the
            closest axes); None or a singular affine means the voxels are already RAS.

    Returns:
        ``(perm, flip, axcodes)``: RAS axis ``j`` is source axis ``perm[j]``, reversed when
        ``flip[j]``; ``axcodes`` is the source orientation (e.g. ``"LAS"``, or ``"RAS"`` assumed).
    """
    import nibabel as nib

    identity = ((0, 1, 2), (False, False, False), "RAS")
    if affine is None:
        return identity
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        return identity
    ornt = nib.orientations.io_orientation(aff)  # per voxel axis: (world axis, +1 / -1)
    if np.isnan(ornt).any():
        return identity
    perm, flip = [0, 0, 0], [False, False, False]
    for src, (world, direction) in enumerate(ornt):
        perm[int(world)] = src
        flip[int(world)] = direction < 0
    codes = "".join(nib.orientations.ornt2axcodes(ornt))
    return (perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2]), codes


def to_ras(volumes: np.ndarray, perm: Sequence[int], flip: Sequence[bool]) -> np.ndarray:
    """Reorder (N, C, X, Y, Z) volumes into RAS voxel order (see :func:`ras_reorientation`)."""
    out = np.transpose(volumes, (0, 1, *(2 + int(p) for p in perm)))
    for axis, f in enumerate(flip):
        if f:
            out = np.flip(out, axis=2 + axis)
    return np.ascontiguousarray(out)


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
    """Display-oriented slices of one image, in the radiological convention (:data:`PLANE_EDGES`).

    Args:
        image: (H, W) for 2D (shown as stored), or an (X, Y, Z) RAS volume.
        plane: a plane name of :func:`plane_layouts`.

    Returns:
        (n_slices, rows, cols).  Axial: slice k is Z = k (inferior to superior), rows anterior to
        posterior, columns the patient's right to left.  Coronal: slice k is Y = k (posterior to
        anterior), rows superior to inferior, columns right to left.  Sagittal: slice k is X = k
        (left to right), rows superior to inferior, columns anterior to posterior.
    """
    if image.ndim == 2:
        if plane != PLANE_2D:
            raise KeyError(plane)
        return image[None]
    if plane == "axial":  # slice k = vol[:, :, k].T, both axes reversed
        return np.transpose(image, (2, 1, 0))[:, ::-1, ::-1]
    if plane == "coronal":
        return np.transpose(image, (1, 2, 0))[:, ::-1, ::-1]
    if plane == "sagittal":
        return np.transpose(image, (0, 2, 1))[:, ::-1, ::-1]
    raise KeyError(plane)


def mosaic(image: np.ndarray, layout: PlaneLayout) -> np.ndarray:
    """All slices of one plane tiled into one 2D uint8 array (unused tiles are black)."""
    stack = plane_stack(image, layout.name)
    out = np.zeros((layout.grid_rows * layout.rows, layout.grid_cols * layout.cols), dtype=np.uint8)
    for k in range(layout.n_slices):
        r, c = divmod(k, layout.grid_cols)
        out[r * layout.rows:(r + 1) * layout.rows, c * layout.cols:(c + 1) * layout.cols] = stack[k]
    return out


def encode_png(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode a 2D uint8 array as a compressed 8-bit grey PNG with no ancillary chunks.

    The byte length depends on the content; :func:`pad_png` makes it uniform.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2D uint8 array, got {pixels.dtype} {pixels.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(
        buf, format="PNG", compress_level=compress_level, optimize=False)
    return buf.getvalue()


def padded_length(max_bytes: int, bucket: int = 1024) -> int:
    """The common byte length of a study's PNGs: room for the largest one plus a padding chunk,
    rounded up to a multiple of ``bucket``."""
    return -(-(int(max_bytes) + CHUNK_OVERHEAD) // bucket) * bucket


def pad_png(data: bytes, length: int) -> bytes:
    """``data`` (a PNG ending in IEND) with one :data:`PAD_CHUNK` of zeros before IEND, so that it
    is exactly ``length`` bytes long.  Decoders skip unknown ancillary chunks, so the image is
    unchanged.

    Raises:
        ValueError: not a PNG, or ``length`` leaves no room for the chunk (``len(data) + 12``).
    """
    if not data.startswith(_PNG_SIGNATURE) or not data.endswith(_IEND):
        raise ValueError("not a PNG ending in an IEND chunk")
    n = length - len(data) - CHUNK_OVERHEAD
    if n < 0:
        raise ValueError(f"a {len(data)}-byte PNG cannot be padded to {length} bytes (needs at least "
                         f"{len(data) + CHUNK_OVERHEAD})")
    body = PAD_CHUNK + bytes(n)
    chunk = struct.pack(">I", n) + body + struct.pack(">I", zlib.crc32(body))
    return data[:-len(_IEND)] + chunk + _IEND


def render_plane_png(image: np.ndarray, layout: PlaneLayout) -> bytes:
    """The (compressed, unpadded) PNG of one plane of one (already windowed, uint8) study image."""
    return encode_png(mosaic(image, layout))
