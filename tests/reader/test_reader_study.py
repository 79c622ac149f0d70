"""Study creation and blinded rendering."""

from __future__ import annotations

import csv
import json
import logging
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from reader_helpers import make_sample_folder, make_study

from synthmed.cli import build_parser, main
from synthmed.errors import DataError
from synthmed.reader.render import (
    encode_png,
    mosaic,
    plane_layouts,
    plane_stack,
    render_plane_png,
    window_uint8,
)
from synthmed.reader.study import ITEM_ID_RE, create_study, load_study, load_truth


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        out.append(data[i + 4:i + 8])
        i += 12 + length
    return out


def test_create_3d_study_layout_and_blinding(tmp_path: Path) -> None:
    root = make_study(tmp_path, 3, n_real=4, n_synthetic=4, readers=2)
    assert sorted(p.name for p in root.iterdir()) == ["access.json", "answers.sqlite", "images.npy", "study.json",
                                                      "truth.csv"]
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    meta = json.loads((root / "study.json").read_text(encoding="utf-8"))
    truth = load_truth(root)
    # no per-item truth in study.json, only in truth.csv
    text = (root / "study.json").read_text(encoding="utf-8")
    assert '"source": "real"' not in text and "sample_0" not in text
    assert sorted(truth) == sorted(meta["items"])
    assert sum(t["source"] == "real" for t in truth.values()) == 4
    assert all(ITEM_ID_RE.match(i) for i in meta["items"])
    # every reader sees every item once, each in its own order
    orders = [r["order"] for r in meta["readers"]]
    assert all(sorted(o) == sorted(meta["items"]) for o in orders)
    assert stat.S_IMODE((root / "access.json").stat().st_mode) == 0o600
    study = load_study(root)
    assert study.images.dtype == np.uint8 and study.images.shape == (8, 16, 16, 16)
    assert [lay.name for lay in study.layouts] == ["axial", "coronal", "sagittal"]
    assert len(set(study.reader_tokens)) == 2 and study.admin_token not in study.reader_tokens


def test_study_images_are_windowed_identically(tmp_path: Path) -> None:
    from synthmed.data.prepared import load_prepared
    from synthmed.evaluate.synthetic import load_sampled_folder

    root = make_study(tmp_path, 2, n_real=3, n_synthetic=3, readers=1)
    study, truth = load_study(root), load_truth(root)
    real = load_prepared(tmp_path / "prep2d").images
    syn = load_sampled_folder(tmp_path / "syn2d").images
    for item in study.items:
        t = truth[item]
        src = real if t["source"] == "real" else syn
        expected = np.rint((np.clip(src[int(t["source_index"]), 0], -1, 1) + 1) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(study.image(item), expected)


def test_create_2d_with_split_and_names(tmp_path: Path) -> None:
    from synth_testdata import make_tiny_prepared

    real = make_tiny_prepared(tmp_path / "prep", 2, 16, 8)
    syn = make_sample_folder(tmp_path / "syn", 2, 16, 4)
    root = create_study(real, [syn, syn], tmp_path / "s", n_real=2, n_synthetic=2, readers=["ann", "bo"],
                        split="test")
    truth = load_truth(root)
    splits = json.loads((real / "splits.json").read_text(encoding="utf-8"))
    real_ids = {t["source_id"] for t in truth.values() if t["source"] == "real"}
    assert real_ids <= set(splits["test"])
    assert sorted({t["source_name"] for t in truth.values()}) == ["real", "syn", "syn-2"]
    assert load_study(root).readers == ["ann", "bo"]
    assert [lay.name for lay in load_study(root).layouts] == ["image"]


@pytest.mark.parametrize("case", ["shape", "too_many", "exists", "names", "readers", "split"])
def test_create_errors_name_the_problem(tmp_path: Path, case: str) -> None:
    from synth_testdata import make_tiny_prepared

    real = make_tiny_prepared(tmp_path / "prep", 3, 16, 8)
    syn = make_sample_folder(tmp_path / "syn", 3, 8 if case == "shape" else 16, 4)
    kwargs: dict = {"n_real": 2, "n_synthetic": 2, "readers": 2}
    if case == "too_many":
        kwargs.update(n_real=9, split="all")
    elif case == "exists":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "x").write_text("keep me")
    elif case == "names":
        kwargs["readers"] = ["a", "a"]
    elif case == "readers":
        kwargs["readers"] = 0
    elif case == "split":
        kwargs["split"] = "nonsense"
    expected = {"shape": "shape", "too_many": "only 8 available", "exists": "not empty", "names": "unique",
                "readers": "at least 1", "split": "unknown subset"}[case]
    with pytest.raises(DataError, match=expected):
        create_study(real, syn, tmp_path / "out", **kwargs)
    if case == "exists":
        assert (tmp_path / "out" / "x").read_text(encoding="utf-8") == "keep me"
    else:
        assert not (tmp_path / "out").exists()


def test_load_study_rejects_broken_folders(tmp_path: Path) -> None:
    root = make_study(tmp_path, 2, n_real=2, n_synthetic=2, readers=1)
    with pytest.raises(DataError, match="does not exist"):
        load_study(tmp_path / "nope")
    meta = json.loads((root / "study.json").read_text(encoding="utf-8"))
    meta["readers"][0]["order"] = meta["readers"][0]["order"][:-1]
    (root / "study.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="permutation"):
        load_study(root)
    (root / "study.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt JSON"):
        load_study(root)


def test_png_size_and_chunks_do_not_depend_on_content() -> None:
    rng = np.random.default_rng(0)
    noise = encode_png(rng.integers(0, 256, (48, 40), dtype=np.uint8))
    flat = encode_png(np.zeros((48, 40), dtype=np.uint8))
    assert len(noise) == len(flat)
    assert set(_png_chunks(noise)) == {b"IHDR", b"IDAT", b"IEND"}  # no text, time or gamma chunks
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def test_plane_orientation_matches_the_preview_convention() -> None:
    from synthmed.data.preview import orthogonal_slices

    vol = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    ax, co, sa = orthogonal_slices(vol)  # middle slices, display-oriented
    np.testing.assert_array_equal(plane_stack(vol, "axial")[7 // 2], ax)
    np.testing.assert_array_equal(plane_stack(vol, "coronal")[6 // 2], co)
    np.testing.assert_array_equal(plane_stack(vol, "sagittal")[5 // 2], sa)


def test_mosaic_tiles_every_slice() -> None:
    vol = np.random.default_rng(1).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    for lay in plane_layouts(vol.shape, [1.0, 1.0, 2.0]):
        m = mosaic(vol, lay)
        stack = plane_stack(vol, lay.name)
        assert m.shape == (lay.grid_rows * lay.rows, lay.grid_cols * lay.cols)
        for k in range(lay.n_slices):
            r, c = divmod(k, lay.grid_cols)
            np.testing.assert_array_equal(m[r * lay.rows:(r + 1) * lay.rows, c * lay.cols:(c + 1) * lay.cols],
                                          stack[k])
        assert render_plane_png(vol, lay)[:4] == b"\x89PNG"
    ax = plane_layouts((5, 6, 7), [1.0, 1.0, 2.0])[1]  # coronal: 5 wide, 7 slices tall at 2 mm
    assert ax.height_px / ax.width_px == pytest.approx(14 / 5, rel=0.02)


def test_window_uint8() -> None:
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(window_uint8(x)[0, :, 0], [0, 0, 128, 255, 255])
    with pytest.raises(ValueError):
        window_uint8(x, 1.0, 1.0)


def test_truth_csv_names_the_sources(tmp_path: Path) -> None:
    root = make_study(tmp_path, 3, n_real=2, n_synthetic=2, readers=1)
    with open(root / "truth.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    syn = [r for r in rows if r["source"] == "synthetic"]
    assert all(r["source_id"].startswith("sample_") for r in syn)
    assert all(r["source_id"].startswith("sub-") for r in rows if r["source"] == "real")


def test_real_images_come_from_the_held_out_test_split_by_default(tmp_path: Path) -> None:
    from synth_testdata import make_tiny_prepared

    assert build_parser().parse_args(["reader", "create", "--real", "p", "--synthetic", "s",
                                      "--out", "o"]).split == "test"
    real = make_tiny_prepared(tmp_path / "prep", 2, 16, 8)
    syn = make_sample_folder(tmp_path / "syn", 2, 16, 4)
    root = create_study(real, syn, tmp_path / "s", n_real=2, n_synthetic=2, readers=1)
    splits = json.loads((real / "splits.json").read_text(encoding="utf-8"))
    assert {t["source_id"] for t in load_truth(root).values() if t["source"] == "real"} == set(splits["test"])
    assert json.loads((root / "study.json").read_text(encoding="utf-8"))["sources"]["real"]["split"] == "test"
    with pytest.raises(DataError, match="only 2 available.*--split"):  # too few held-out images: says what to do
        create_study(real, syn, tmp_path / "s2", n_real=3, n_synthetic=2, readers=1)


def test_a_bad_window_fails_before_any_image_is_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the real folder does not exist: only a check made before loading can report the window
    for window in [(1.0, -1.0), (0.5, 0.5), (float("nan"), 1.0)]:
        with pytest.raises(DataError, match="--window"):
            create_study(tmp_path / "missing", tmp_path / "missing-too", tmp_path / "s", window=window)
    code = main(["reader", "create", "--real", str(tmp_path / "missing"), "--synthetic", str(tmp_path),
                 "--out", str(tmp_path / "s"), "--window", "1", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("synthmed: error: --window") and "LOW < HIGH" in err
    assert not (tmp_path / "s").exists()


def _sample_folder_from(images: np.ndarray, root: Path) -> Path:
    """A `synthmed sample`-like folder holding exactly ``images`` (N, 1, D, H, W)."""
    from synthmed.generate.writers import write_nifti

    root.mkdir()
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "label_name", "seed"])
        for i, img in enumerate(images):
            write_nifti(img[0], np.eye(4), root / f"sample_{i:05d}.nii.gz")
            w.writerow([f"sample_{i:05d}.nii.gz", 0, "a", i])
    return root


def test_create_warns_when_the_sources_differ_at_a_glance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from synth_testdata import make_tiny_prepared

    from synthmed.data.prepared import load_prepared

    real = make_tiny_prepared(tmp_path / "prep", 3, 12, 8)  # blobs on a background of exactly -1 (half of it)
    noisy = make_sample_folder(tmp_path / "noisy", 3, 12, 8)  # noise around 0: almost no black voxels
    with caplog.at_level(logging.WARNING, logger="synthmed.reader.study"):
        root = create_study(real, noisy, tmp_path / "s1", n_real=8, n_synthetic=8, readers=1, split="all")
    checks = json.loads((root / "study.json").read_text(encoding="utf-8"))["visible_differences"]
    assert "rule" in checks
    found = {(f["source"], f["statistic"]): f for f in checks["findings"]}
    black = found[("noisy", "black_fraction")]
    assert black["real"]["min"] > black["synthetic"]["max"] and black["ks"] == 1.0
    lines = [r.getMessage() for r in caplog.records if r.name == "synthmed.reader.study"]
    assert len(lines) == len(checks["findings"]) and all("\n" not in ln for ln in lines)
    assert any("noisy" in ln and "black" in ln for ln in lines)
    # the same images on both sides: nothing to warn about
    same = _sample_folder_from(np.asarray(load_prepared(real).images), tmp_path / "same")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synthmed.reader.study"):
        root = create_study(real, same, tmp_path / "s2", n_real=8, n_synthetic=8, readers=1, split="all")
    assert json.loads((root / "study.json").read_text(encoding="utf-8"))["visible_differences"]["findings"] == []
    assert not [r for r in caplog.records if r.name == "synthmed.reader.study"]
