"""Sampling: reproducible, batch-size independent, right affine, manifest, bad checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from synthmed.config import load_config
from synthmed.errors import CheckpointError, SynthmedError
from synthmed.generate.sample import sample
from synthmed.io_utils import sha256_file
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
        "train.n_preview=2"]


@pytest.fixture
def run3d(tiny3d: Path, tmp_path: Path) -> Path:
    return train(load_config("alpha_sngan", [*TINY, "model.code_hidden_dim=16"]), tiny3d, tmp_path / "run3d",
                 progress=False)


def _read_nifti_dir(d: Path) -> list[np.ndarray]:
    rows = list(csv.DictReader(open(d / "manifest.csv")))
    return [np.asarray(nib.load(d / r["file"]).dataobj) for r in rows]


def test_nifti_cohort_with_affine_and_manifest(run3d: Path, tmp_path: Path) -> None:
    out = sample(run3d, 5, tmp_path / "s", seed=10, batch_size=2, progress=False)
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["seed"] for r in rows] == ["10", "11", "12", "13", "14"]
    ckpt = run3d / "checkpoints" / "last.pt"
    assert {r["checkpoint_sha256"] for r in rows} == {sha256_file(ckpt)}
    assert {r["model"] for r in rows} == {"alpha_sngan"} and {r["step"] for r in rows} == {"2"}
    data_affine = np.asarray(json.loads((run3d / "data.json").read_text(encoding="utf-8"))["affine"])
    for r in rows:
        img = nib.load(out / r["file"])
        assert img.shape == (16, 16, 16)
        np.testing.assert_allclose(img.affine, data_affine)
        vol = np.asarray(img.dataobj)
        assert vol.min() >= -1 and vol.max() <= 1
    assert (out / "preview.png").is_file()
    assert json.loads((out / "sample.json").read_text(encoding="utf-8"))["n"] == 5


def test_reproducible_and_batch_size_independent(run3d: Path, tmp_path: Path) -> None:
    a = _read_nifti_dir(sample(run3d, 4, tmp_path / "a", seed=3, batch_size=1, progress=False))
    b = _read_nifti_dir(sample(run3d, 4, tmp_path / "b", seed=3, batch_size=4, progress=False))
    c = _read_nifti_dir(sample(run3d, 4, tmp_path / "c", seed=4, batch_size=4, progress=False))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    np.testing.assert_allclose(a[1], c[0], atol=1e-6)  # sample seed 4 is the same image in both cohorts
    assert not np.allclose(a[0], c[0])


def test_2d_png_cohort(tiny2d: Path, tmp_path: Path) -> None:
    run = train(load_config("sngan", TINY), tiny2d, tmp_path / "run2d", progress=False)
    out = sample(run, 3, tmp_path / "s2d", progress=False)
    files = sorted(out.glob("synthetic_*.png"))
    assert len(files) == 3
    assert Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "L"


def test_existing_output_is_not_overwritten(run3d: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SynthmedError, match="not empty"):
        sample(run3d, 1, out, progress=False)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    sample(run3d, 1, out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists()


def test_checkpoint_of_another_model_is_refused(run3d: Path, tiny3d: Path, tmp_path: Path) -> None:
    other = train(load_config("sngan", TINY), tiny3d, tmp_path / "sn", progress=False)
    with pytest.raises(CheckpointError, match="model 'sngan'.*model 'alpha_sngan'"):
        sample(run3d, 1, tmp_path / "x", checkpoint=other / "checkpoints" / "last.pt", progress=False)
    assert not (tmp_path / "x").exists()


def test_corrupt_checkpoint_is_named(run3d: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        sample(run3d, 1, tmp_path / "x", checkpoint=bad, progress=False)
    with pytest.raises(SynthmedError, match="run folder does not exist"):
        sample(tmp_path / "nope", 1, tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(("kw", "message"), [({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
                                              ({"seed": -1}, "--seed must be at least 0, got -1")])
def test_bad_numbers_are_refused_before_anything_runs(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(SynthmedError, match=message):
        sample(tmp_path / "no-run-needed", 2, tmp_path / "s", progress=False, **kw)
    assert not (tmp_path / "s").exists()
