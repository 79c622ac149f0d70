"""PNG slice grids of prepared (or generated) images, drawn with PIL only.

Volumes are expected in the prepared RAS voxel order (X: left->right, Y: posterior->anterior,
Z: inferior->superior) and shown in neurological convention (patient's left on the left),
anterior / superior at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synthmed.io_utils import atomic_path


def _to_uint8(sl: np.ndarray) -> np.ndarray:
    return np.round((np.clip(sl, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def orthogonal_slices(vol: np.ndarray, axial: Sequence[int] | None = None) -> list[np.ndarray]:
    """Display-oriented 2D slices of one (X, Y, Z) RAS volume.

    Args:
        vol: (X, Y, Z) array.
        axial: axial (Z) indices to show; None shows the middle axial, coronal and sagittal slices.

    Returns:
        List of (rows, cols) arrays ready for display (top row = anterior / superior).
    """
    x, y, z = vol.shape
    if axial is not None:
        return [vol[:, :, int(k)].T[::-1] for k in axial]
    return [vol[:, :, z // 2].T[::-1], vol[:, y // 2, :].T[::-1], vol[x // 2, :, :].T[::-1]]


def _panels(volumes: np.ndarray, axial: Sequence[int] | None) -> list[list[np.ndarray]]:
    if volumes.ndim == 4:  # (N, 1, H, W)
        return [[_to_uint8(v[0])] for v in volumes]
    return [[_to_uint8(s) for s in orthogonal_slices(v[0], axial)] for v in volumes]


def _panel_sizes(spatial: tuple[int, ...], spacing: Sequence[float] | None, n: int, axial: bool,
                 zoom: int) -> list[tuple[int, int]]:
    """(width, height) in pixels of each panel, in physical proportions when ``spacing`` is given."""
    sp = np.asarray(spacing if spacing is not None else [1.0] * len(spatial), dtype=np.float64)
    sp = sp / sp.min()
    if len(spatial) == 2:  # rows = axis 0, cols = axis 1
        pairs = [(1, 0)]
    else:  # (col axis, row axis) of axial, coronal, sagittal views
        pairs = [(0, 1)] * n if axial else [(0, 1), (0, 2), (1, 2)]
    return [(int(round(spatial[c] * sp[c] * zoom)), int(round(spatial[r] * sp[r] * zoom))) for c, r in pairs]


def save_slice_grid(volumes: np.ndarray, path: str | Path, *, titles: Sequence[str] | None = None,
                    axial_slices: Sequence[int] | None = None, ncols: int | None = None,
                    zoom: int = 2, pad: int = 4, spacing: Sequence[float] | None = None) -> Path:
    """Save a grid of 2D images or 3D slices as one grayscale PNG.

    Each item is one cell; a 3D cell holds its axial/coronal/sagittal middle slices side by
    side (or the requested axial slices), a 2D cell holds the image.

    Args:
        volumes: (N, 1, H, W) or (N, 1, X, Y, Z) array with intensities in [-1, 1]
            (-1 is drawn black, 1 white).
        path: output PNG path (parent folders are created; written atomically).
        titles: optional N captions drawn above the cells (e.g. subject id and label).
        axial_slices: for 3D, axial slice indices to show instead of the three middle slices.
        ncols: cells per row (default: about sqrt(N) for 2D, 2 for 3D).
        zoom: integer pixel magnification.
        pad: pixels between panels and cells.
        spacing: voxel size per spatial axis (e.g. ``dataset.json`` ``spacing``); panels are then
            drawn in physical proportions (bilinear), otherwise one voxel = ``zoom`` pixels.

    Returns:
        The written path.
    """
    vols = np.asarray(volumes, dtype=np.float32)
    if vols.ndim not in (4, 5) or vols.shape[1] != 1 or vols.shape[0] == 0:
        raise ValueError(f"expected (N, 1, *spatial) with 2 or 3 spatial dims, got {vols.shape}")
    cells = _panels(vols, axial_slices)
    sizes = _panel_sizes(vols.shape[2:], spacing, len(cells[0]), axial_slices is not None, zoom)
    n = len(cells)
    ncols = ncols or (int(np.ceil(np.sqrt(n))) if vols.ndim == 4 else min(n, 2))
    nrows = int(np.ceil(n / ncols))
    ph = max(h for _, h in sizes)
    cw = sum(w + pad for w, _ in sizes) - pad
    th = 12 if titles else 0
    canvas = Image.new("L", (ncols * (cw + pad) + pad, nrows * (ph + th + pad) + pad), 0)
    draw = ImageDraw.Draw(canvas)
    for i, cell in enumerate(cells):
        x0 = pad + (i % ncols) * (cw + pad)
        y0 = pad + (i // ncols) * (ph + th + pad)
        if titles:
            draw.text((x0, y0), str(titles[i])[: max(4, cw // 6)], fill=255)
        x = x0
        for p, wh in zip(cell, sizes, strict=True):
            resample = Image.Resampling.NEAREST if spacing is None else Image.Resampling.BILINEAR
            im = Image.fromarray(np.ascontiguousarray(p)).resize(wh, resample)
            canvas.paste(im, (x, y0 + th + (ph - im.height) // 2))
            x += im.width + pad
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
