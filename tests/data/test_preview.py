"""PNG slice grids (PIL only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.data.preview import orthogonal_slices, save_slice_grid


def test_slice_grid_3d_and_2d(tmp_path: Path) -> None:
    vols = np.full((3, 1, 10, 12, 8), -1.0, np.float32)
    vols[:, 0, 2:8, 3:9, 2:6] = 1.0
    p = save_slice_grid(vols, tmp_path / "g3.png", titles=["a", "b", "c"], ncols=2, zoom=1, pad=2)
    img = np.asarray(Image.open(p))
    assert img.ndim == 2 and img.max() == 255 and img.shape[0] > 2 * 12
    p2 = save_slice_grid(np.zeros((4, 1, 8, 8), np.float32), tmp_path / "sub" / "g2.png", zoom=2)
    assert Image.open(p2).size == (2 * (16 + 4) + 4, 2 * (16 + 4) + 4)
    save_slice_grid(vols, tmp_path / "ax.png", axial_slices=[1, 4, 7])
    phys = Image.open(save_slice_grid(vols[:1], tmp_path / "p.png", zoom=1, pad=0, spacing=[1.0, 1.0, 2.0]))
    assert phys.size == (10 + 10 + 12, 16)  # coronal/sagittal rows stretched by the 2 mm z spacing
    with pytest.raises(ValueError):
        save_slice_grid(np.zeros((2, 8, 8)), tmp_path / "bad.png")


def test_orthogonal_slices_orientation() -> None:
    vol = np.zeros((4, 5, 6))
    vol[3, 4, 5] = 1.0  # right, anterior, superior corner
    axial, coronal, sagittal = orthogonal_slices(vol)
    assert axial.shape == (5, 4) and coronal.shape == (6, 4) and sagittal.shape == (6, 5)
    vol2 = np.zeros((4, 5, 6))
    vol2[3, 4, 3] = 1.0  # on the middle axial slice: anterior -> top row, right -> last column
    assert orthogonal_slices(vol2)[0][0, 3] == 1.0
