"""Real data from ../shared/data (skipped when absent): ds002748 BIDS and MedMNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.data.prepared import load_prepared
from synthmed.data.preprocess import PreprocessOptions, run_preprocess
from synthmed.data.registration import resample_onto
from synthmed.data.template import load_template

DS = "ds002748-t1w-2mm"


def _subset_bids(src: Path, dst: Path, ids: list[str]) -> Path:
    """A BIDS folder holding ``ids`` only (symlinks to the shared data, nothing copied)."""
    dst.mkdir()
    lines = (src / "participants.tsv").read_text(encoding="utf-8").splitlines()
    keep = [lines[0]] + [r for r in lines[1:] if r.split("\t")[0] in ids]
    (dst / "participants.tsv").write_text("\n".join(keep) + "\n")
    for sid in ids:
        (dst / sid).symlink_to(src / sid, target_is_directory=True)
    return dst


def _check_brains(ds, min_corr: float) -> None:  # type: ignore[no-untyped-def]
    assert ds.classes == ["control", "depr"] and ds.spatial_dims == 3
    assert float(ds.images.min()) == -1.0 and float(ds.images.max()) == 1.0
    assert min(q["template_correlation"] for q in ds.meta["qc"].values()) > min_corr
    tpl = load_template("mni152", 2.0)
    ref = resample_onto(tpl.to_sitk(), ds.affine, ds.shape)
    mean = np.asarray(ds.images).mean(axis=(0, 1))
    inside = ref > 0.05
    assert np.corrcoef(mean[inside], ref[inside])[0, 1] > 0.7  # prepared grid overlays MNI


def test_ds002748_four_subjects(shared_data: Path, tmp_path: Path) -> None:
    bids = _subset_bids(shared_data / DS, tmp_path / "bids", ["sub-01", "sub-02", "sub-60", "sub-61"])
    out = run_preprocess(PreprocessOptions(input=bids, out=tmp_path / "prep", label_column="group", size=48,
                                           n_folds=2, test_fraction=0.0, progress=False))
    ds = load_prepared(out)
    assert ds.images.shape == (4, 1, 48, 48, 48)
    assert [r.label_name for r in ds.records] == ["depr", "depr", "control", "control"]
    _check_brains(ds, 0.4)


@pytest.mark.slow
def test_ds002748_all_subjects(shared_data: Path, tmp_path: Path) -> None:
    out = run_preprocess(PreprocessOptions(input=shared_data / DS, out=tmp_path / "prep", reader="bids",
                                           label_column="group", size=64, progress=False))
    ds = load_prepared(out)
    assert ds.images.shape == (72, 1, 64, 64, 64) and np.bincount(ds.labels).tolist() == [21, 51]
    assert ds.splits["stratified"] and len(ds.splits["test"]) == 14 and ds.splits["n_folds"] == 5
    _check_brains(ds, 0.3)
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["preprocessing"]["template"]["name"] == "mni152"


@pytest.mark.parametrize("name,shape,n", [("adrenalmnist3d.npz", (28, 28, 28), 1584), ("breastmnist.npz", (28, 28), 780)])
def test_medmnist_files(shared_data: Path, tmp_path: Path, name: str, shape: tuple[int, ...], n: int) -> None:
    out = run_preprocess(PreprocessOptions(input=shared_data / "medmnist" / name, out=tmp_path / "prep", size=None,
                                           progress=False))
    ds = load_prepared(out)
    assert ds.images.shape == (n, 1, *shape) and ds.classes == ["0", "1"]
    assert len(ds.splits["test"]) == {"adrenalmnist3d.npz": 298, "breastmnist.npz": 156}[name]
    assert all(s.startswith("test_") for s in ds.splits["test"]) and ds.splits["stratified"]
    assert -1.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
