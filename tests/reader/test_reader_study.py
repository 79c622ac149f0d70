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
    PLANE_EDGES,
    encode_png,
    mosaic,
    pad_png,
    padded_length,
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
    assert sorted(p.name for p in root.iterdir()) == ["access.json", "answers.sqlite", "images.npy", "images_png.bin",
                                                      "images_png.json", "study.json", "truth.csv"]
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


def test_padded_pngs_have_one_length_and_decode_unchanged() -> None:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    noise_px = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    noise, flat = encode_png(noise_px), encode_png(np.zeros((48, 40), dtype=np.uint8))
    assert len(flat) < len(noise)  # compressed: the size follows the content ...
    assert set(_png_chunks(noise)) == {b"IHDR", b"IDAT", b"IEND"}  # no text, time or gamma chunks
    length = padded_length(len(noise))
    assert length % 1024 == 0 and length >= len(noise) + 12
    padded = [pad_png(noise, length), pad_png(flat, length)]
    assert [len(d) for d in padded] == [length, length]  # ... until padded to one length
    for data, px in zip(padded, [noise_px, np.zeros((48, 40), dtype=np.uint8)], strict=True):
        assert _png_chunks(data) == [b"IHDR", b"IDAT", b"paDd", b"IEND"]
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.mode == "L" and not im.info  # the padding chunk is skipped, nothing else is added
            np.testing.assert_array_equal(np.asarray(im), px)
    assert len(pad_png(flat, len(flat) + 12)) == len(flat) + 12  # an empty padding chunk
    with pytest.raises(ValueError, match="cannot be padded"):
        pad_png(noise, len(noise) + 11)
    with pytest.raises(ValueError, match="not a PNG"):
        pad_png(b"GIF89a", 1024)
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def _marked_ras_volume(shape: tuple[int, int, int] = (12, 14, 10)) -> np.ndarray:
    """A dark RAS volume with one bright block at the patient's right, anterior, superior corner
    (high X, high Y, high Z), away from every edge."""
    vol = np.full(shape, -1.0, dtype=np.float32)
    x, y, z = shape
    vol[x - 4:x - 1, y - 4:y - 1, z - 4:z - 1] = 1.0
    return vol


def _assert_marker_on(stack: np.ndarray, vertical: str, horizontal: str) -> None:
    """The bright block of a display-oriented slice stack lies in the (top / bottom, left / right) half."""
    mip = stack.max(axis=0)
    rows, cols = np.nonzero(mip > (128 if mip.dtype == np.uint8 else 0))
    assert rows.size, "no marker in view"
    h, w = mip.shape
    assert (rows < h / 2).all() if vertical == "top" else (rows >= h / 2).all()
    assert (cols < w / 2).all() if horizontal == "left" else (cols >= w / 2).all()


def test_planes_follow_the_radiological_convention() -> None:
    vol = _marked_ras_volume()  # the patient's right, anterior, superior
    _assert_marker_on(plane_stack(vol, "axial"), "top", "left")  # anterior up, patient's right on the left
    _assert_marker_on(plane_stack(vol, "coronal"), "top", "left")  # superior up, patient's right on the left
    _assert_marker_on(plane_stack(vol, "sagittal"), "top", "left")  # superior up, anterior on the left
    assert PLANE_EDGES == {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
                           "sagittal": ("A", "P", "S", "I")}
    # slice k of each plane is voxel k along the plane's normal (inferior->superior, posterior->anterior,
    # left->right)
    np.testing.assert_array_equal(plane_stack(vol, "axial")[7], vol[:, :, 7].T[::-1, ::-1])
    np.testing.assert_array_equal(plane_stack(vol, "coronal")[3], vol[:, 3, :].T[::-1, ::-1])
    np.testing.assert_array_equal(plane_stack(vol, "sagittal")[2], vol[2, :, :].T[::-1, ::-1])
    left = vol[::-1]  # the block now at the patient's left
    _assert_marker_on(plane_stack(left, "axial"), "top", "right")
    _assert_marker_on(plane_stack(left, "coronal"), "top", "right")
    _assert_marker_on(plane_stack(left, "sagittal"), "top", "left")
    inferior_posterior = vol[:, ::-1, ::-1]
    _assert_marker_on(plane_stack(inferior_posterior, "axial"), "bottom", "left")
    _assert_marker_on(plane_stack(inferior_posterior, "sagittal"), "bottom", "right")


def _oriented(vol_ras: np.ndarray, codes: str, spacing_ras: tuple[float, float, float]
              ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``vol_ras`` stored in orientation ``codes`` (e.g. "LAS"): the array, its affine and spacing."""
    world = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    axes = [world[c] for c in codes]
    arr = np.transpose(vol_ras, [w for w, _ in axes])
    affine = np.eye(4)
    for a, (w, sign) in enumerate(axes):
        if sign < 0:
            arr = np.flip(arr, axis=a)
        affine[:3, a] = 0.0
        affine[w, a] = sign * spacing_ras[w]
    affine[:3, 3] = [-20.0, 15.0, 30.0]
    return np.ascontiguousarray(arr), affine, [spacing_ras[w] for w, _ in axes]


@pytest.mark.parametrize("codes", ["LAS", "PSR"])
def test_create_reorients_both_sources_with_the_prepared_affine(tmp_path: Path, codes: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import nibabel as nib

    from synthmed.data.prepared import Record, write_prepared
    from synthmed.generate.writers import write_nifti

    vol = _marked_ras_volume()
    arr, affine, spacing = _oriented(vol, codes, (1.0, 1.5, 2.0))
    assert "".join(nib.aff2axcodes(affine)) == codes
    n = 3
    records = [Record(f"sub-{i}", 0, "a", f"synthetic://{i}", "0" * 64) for i in range(n)]
    real = write_prepared(tmp_path / "prep", np.stack([arr[None]] * n), records,
                          {"spatial_dims": 3, "spacing": spacing, "affine": affine, "classes": ["a"]}, None)
    syn = tmp_path / "syn"
    syn.mkdir()
    for i in range(n):  # generated on the prepared grid: the same voxel order
        write_nifti(arr, affine, syn / f"sample_{i:05d}.nii.gz")
    (syn / "manifest.csv").write_text("file\n" + "".join(f"sample_{i:05d}.nii.gz\n" for i in range(n)))
    (syn / "sample.json").write_text(json.dumps({"affine": affine.tolist()}))
    with caplog.at_level(logging.WARNING, logger="synthmed.reader.study"):
        root = create_study(real, syn, tmp_path / "study", n_real=n, n_synthetic=n, readers=1, split="all")
    assert "oriented" not in caplog.text  # the same grid
    study = load_study(root)
    meta = json.loads((root / "study.json").read_text(encoding="utf-8"))
    assert meta["orientation"]["source_axcodes"] == codes and meta["orientation"]["display"] == "radiological"
    assert meta["shape"] == [12, 14, 10] and meta["spacing"] == [1.0, 1.5, 2.0]  # RAS order
    expected = window_uint8(vol[None, None])[0]
    for item in study.items:  # real and synthetic alike, stored RAS, shown radiologically
        np.testing.assert_array_equal(study.image(item), expected)
    for plane in ("axial", "coronal", "sagittal"):
        _assert_marker_on(plane_stack(study.image(study.items[0]), plane), "top", "left")
    # a synthetic folder whose recorded grid is oriented otherwise than the prepared data is named
    (syn / "sample.json").write_text(json.dumps({"affine": np.diag([2.0, 2.0, 2.0, 1.0]).tolist()}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synthmed.reader.study"):
        create_study(real, syn, tmp_path / "study2", n_real=n, n_synthetic=n, readers=1, split="all")
    assert f"grid is oriented RAS but the real images' {codes}" in caplog.text


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
