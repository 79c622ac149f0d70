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
    with pytest.raises(DataError, match="positive"):
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


def test_traversal_warnings() -> None:
    from synthmed.latent.traverse import Traversal, traversal_warnings

    real = np.array([1800.0, 1900.0, 2000.0])
    targets = np.array([1850.0, 1900.0, 1950.0])

    def trav(reference: float, measured: list[float]) -> Traversal:
        return Traversal("total_brain_volume", targets, targets, np.array(measured), np.zeros((3, 1, 2, 2, 2)),
                         reference, 0)

    assert traversal_warnings(trav(1900.0, [1850.0, 1890.0, 1960.0]), real) == []
    far = traversal_warnings(trav(3096.0, [1850.0, 1890.0, 1960.0]), real)  # > one real range outside
    assert len(far) == 1 and "far outside the real values [1800, 2000]" in far[0] and "codes-mean" in far[0]
    flat = traversal_warnings(trav(1900.0, [1949.5, 1949.5, 1949.6]), real)  # 0.1 of 100 asked: < 5%
    assert len(flat) == 1 and "barely respond" in flat[0]
    assert len(traversal_warnings(trav(2200.0, [1900.0, 1904.0, 1905.0]), real)) == 0  # 2200 is within one range


def test_subject_table_values(tiny3d: Path, tmp_path: Path) -> None:
    ds = load_prepared(tiny3d)
    tsv = tmp_path / "participants.tsv"
    tsv.write_text("participant_id\tage\tgroup\n" + "".join(
        f"{s}\t{'n/a' if i == 0 else 20 + i}\tx\n" for i, s in enumerate(ds.subject_ids)))
    age = subject_property(ds, ds.subject_ids, "age", tsv)
    assert np.isnan(age[0]) and age[1] == 21
    with pytest.raises(DataError, match="column 'group' is not numeric .*'x'"):  # not silently NaN
        subject_property(ds, ds.subject_ids, "group", tsv)
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
    assert meta["reference_kind"] == "prior" and isinstance(meta["warnings"], list)
    # from the mean code of the real images: its prediction is the linear model's at that code
    assert main(["latent", "traverse", str(run), "--codes", str(codes_file), "--data", str(tiny3d), "--out", str(png),
                 "--steps", "3", "--reference", "codes-mean"]) == 0
    meta = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    direction = fit_linear_direction(codes.codes, subject_property(load_prepared(tiny3d), codes.subject_ids,
                                                                   "total_brain_volume"), "tbv")
    assert meta["reference_kind"] == "codes-mean"
    assert meta["reference"] == pytest.approx(float(direction.predict(codes.codes.mean(0, keepdims=True))[0]))
    capsys.readouterr()

    # bad values are one-line errors naming the option or the column, exit 2
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("participant_id\tsex\tscore\n" + "".join(f"sub-{i:02d}\t{'mf'[i % 2]}\t{i - 3}\n"
                                                               for i in range(8)))
    base = ["latent", "ridge", str(codes_file), "--data", str(tiny3d), "--participants", str(bad_tsv)]
    for extra, message in ((["--properties", "total_brain_volume", "--alpha", "foo"], "--alpha"),
                           (["--properties", "total_brain_volume", "--alpha", "-1"], "--alpha"),
                           (["--properties", "total_brain_volume", "--folds", "1"], "--folds"),
                           (["--properties", "sex"], "column 'sex' is not numeric"),
                           (["--properties", "score", "--log"], "--log needs positive values")):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("synthmed: error:") and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    # codes computed from other images are refused
    assert main(["latent", "ridge", str(codes_file), "--data", str(tmp_path / "missing")]) == 2


def test_ridge_table_notes_negative_r2_with_small_p() -> None:
    from synthmed.latent import format_ridge_table
    from synthmed.latent.regression import RidgeResult

    ok = RidgeResult("tbv", 72, 1e-4, False, 5, 0.9, [0.9] * 5, 0.005, 200)
    assert "Note:" not in format_ridge_table([ok])
    neg = RidgeResult("age", 72, 1e-4, False, 5, -0.46, [-0.6] * 5, 0.02, 200)
    table = format_ridge_table([ok, neg])
    assert "| age | 72 | 0.0001 | -0.460 |" in table and "negative R^2" in table
