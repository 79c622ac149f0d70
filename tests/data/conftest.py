"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import BLOB_MM, blob_volume, oblique_las_affine, write_labels, write_nifti


@pytest.fixture
def nifti_folder(tmp_path: Path) -> Path:
    """Four small LAS oblique volumes (two classes) plus labels.csv."""
    folder = tmp_path / "nii"
    shape = (48, 56, 40)
    aff = oblique_las_affine(shape)
    rows = {}
    for i in range(4):
        write_nifti(folder / f"s{i}.nii.gz", blob_volume(shape, aff, BLOB_MM, seed=i), aff)
        rows[f"s{i}"] = "b" if i % 2 else "a"
    write_labels(folder / "labels.csv", rows)
    return folder

