"""Encoder features and latent space: measured properties, ridge R^2, latent directions, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.data.prepared import load_prepared
from synthmed.errors import DataError
from synthmed.latent import (
    cross_validated_r2,
    fit_linear_direction,
    load_codes,
    save_codes,
    subject_property,
    total_brain_volume,
    ventricle_volume,
)
from synthmed.train.loop import train


def _ball(shape: tuple[int, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    return (sum((g / r) ** 2 for g, r in zip(grid, radii, strict=True)) <= 1)


def test_volumes_of_known_shapes() -> None:
    shape, spacing = (48, 48, 48), (2.0, 2.0, 2.0)
    brain = _ball(shape, (18, 18, 18))
    vent = _ball(shape, (4, 6, 4))
    img = np.where(brain, 0.5, -1.0)
    img[vent] = -0.8  # dark CSF inside the brain: a hole that is filled for the brain volume
    ml = 8 / 1000
    assert total_brain_volume(img, spacing) == pytest.approx(4 / 3 * np.pi * 18**3 * ml, rel=0.03)
    assert ventricle_volume(img, spacing) == pytest.approx(vent.sum() * ml, rel=1e-6)
    assert ventricle_volume(np.where(brain, 0.5, -1.0), spacing) == 0.0


def test_ridge_r2_finds_signal_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(60, 30))
    signal = codes @ rng.normal(size=30) * 0.1 + 5 + rng.normal(scale=0.05, size=60)
    good = cross_validated_r2(codes, signal, "signal", alpha="cv", folds=5)
    assert good.r2 > 0.8 and len(good.r2_folds) == 5 and good.n == 60
    noise = cross_validated_r2(codes, rng.normal(size=60), "noise", alpha=1e-4, folds=5, n_permutations=19)
    assert noise.r2 < 0.2 and noise.p_value > 0.05
    y = np.exp(signal)
    y[3] = np.nan
    logged = cross_validated_r2(codes, y, "y", alpha="cv", log=True)
    assert logged.n == 59 and logged.r2 > 0.8
    with pytest.raises(ValueError, match="positive"):
        cross_validated_r2(codes, -y, "y", log=True)


def test_direction_moves_codes_to_targets() -> None:
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(40, 8))
    y = codes @ np.arange(1.0, 9.0) + 3
    d = fit_linear_direction(codes, y, "y")
    assert d.r2_train > 0.999
    z = rng.normal(size=(1, 8))
    moved = d.move_to(z, np.array([-2.0, 0.0, 5.0]))
    assert np.allclose(d.predict(moved), [-2.0, 0.0, 5.0])
    step = moved - z
    assert np.allclose(np.abs(step / np.linalg.norm(step, axis=1, keepdims=True)) @ np.abs(d.weights)
                       / np.linalg.norm(d.weights), 1.0)  # every move is along the direction


def test_subject_table_values(tiny3d: Path, tmp_path: Path) -> None:
    ds = load_prepared(tiny3d)
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tage\tgroup\n" + "".join(
        f"{s}\t{'n/a' if i == 0 else 20 + i}\tx\n" for i, s in enumerate(ds.subject_ids)))
    age = subject_property(ds, ds.subject_ids, "age", tsv)
    assert np.isnan(age[0]) and age[1] == 21
    assert np.isnan(subject_property(ds, ds.subject_ids, "group", tsv)).all()
    with pytest.raises(DataError, match="no column 'height'"):
        subject_property(ds, ds.subject_ids, "height", tsv)
    with pytest.raises(DataError, match="no subject table"):
        subject_property(ds, ds.subject_ids, "age")
    tbv = subject_property(ds, ds.subject_ids, "total_brain_volume")
    assert tbv.shape == (8,) and (tbv[1::2] > tbv[0::2]).all()  # class-1 blobs are larger


def test_encode_ridge_and_traverse_commands(tiny3d: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = load_config("alpha_hagan", ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8",
                                      "model.code_hidden_dim=32", "train.iterations=1", "train.n_preview=1"])
    run = train(cfg, tiny3d, tmp_path / "run", progress=False)
    codes_file = tmp_path / "codes.npz"
    assert main(["encode", str(run), "--data", str(tiny3d), "--out", str(codes_file), "--no-progress"]) == 0
    codes = load_codes(codes_file)
    assert codes.codes.shape == (8, 16) and codes.subject_ids[0] == "sub-00" and codes.meta["model"] == "alpha_hagan"
    assert list(codes.labels) == [0, 1] * 4
    again = load_codes(save_codes(codes, tmp_path / "codes.csv"))
    assert np.allclose(again.codes, codes.codes, atol=1e-6) and again.meta == codes.meta

    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tage\n" + "".join(f"sub-{i:02d}\t{30 + i}\n" for i in range(8)))
    out = tmp_path / "ridge.json"
    assert main(["latent", "ridge", str(codes_file), "--data", str(tiny3d), "--properties", "age",
                 "total_brain_volume", "--participants", str(tsv), "--folds", "2", "--alpha", "0.0001", "cv",
                 "--permutations", "3", "--out", str(out)]) == 0
    assert "| age | 8 | 0.0001 |" in capsys.readouterr().out
    res = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert [(r["property"], r["alpha"]) for r in res] == [("age", 0.0001), ("age", "cv"),
                                                         ("total_brain_volume", 0.0001), ("total_brain_volume", "cv")]

    png = tmp_path / "trav" / "tbv.png"
    assert main(["latent", "traverse", str(run), "--codes", str(codes_file), "--data", str(tiny3d), "--out", str(png),
                 "--steps", "3"]) == 0
    meta = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert png.is_file() and len(meta["measured"]) == 3 and np.allclose(meta["predicted"], meta["targets"])
    # codes computed from other images are refused
    assert main(["latent", "ridge", str(codes_file), "--data", str(tmp_path / "missing")]) == 2
