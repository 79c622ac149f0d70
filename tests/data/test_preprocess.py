"""Preprocessing: intensities, registration recovery, prepared-grid affine, 2D, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import BLOB_MM, blob_volume, oblique_las_affine, write_labels, write_nifti
from PIL import Image

from synthmed.data.prepared import load_prepared
from synthmed.data.preprocess import PreprocessOptions, clip_and_rescale, foreground_mask, run_preprocess
from synthmed.data.registration import (
    array_to_sitk,
    crop_resize_affine,
    matrix_transform,
    register_affine,
    resample_onto,
    resize_volumes,
    transform_matrix,
)
from synthmed.data.template import load_template
from synthmed.errors import ConfigError, DataError


def _opts(inp: Path, out: Path, **kw: object) -> PreprocessOptions:
    base = dict(input=inp, out=out, n_folds=2, test_fraction=0.0, progress=False)
    base.update(kw)
    return PreprocessOptions(**base)  # type: ignore[arg-type]


def test_clip_and_rescale_quantiles() -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((20, 20, 20), np.float32)
    vol[5:15, 5:15, 5:15] = rng.uniform(100, 200, (10, 10, 10))
    vol[6, 6, 6] = 1e6  # outlier
    fg = foreground_mask(vol)
    out = clip_and_rescale(vol, (0.01, 0.99), fg)
    q_lo, q_hi = np.quantile(vol[fg], [0.01, 0.99])
    assert out.min() == -1.0 and out.max() == 1.0 and out.dtype == np.float32
    assert np.all(out[~fg] == -1.0) and out[6, 6, 6] == 1.0
    inside = (vol > q_lo) & (vol < q_hi)
    np.testing.assert_allclose(out[inside], (vol[inside] - q_lo) / (q_hi - q_lo) * 2 - 1, atol=1e-5)
    # the reason for foreground quantiles: over all voxels the low quantile would be the background
    assert np.quantile(vol, 0.01) == 0.0
    with pytest.raises(DataError, match="no intensity contrast"):
        clip_and_rescale(np.ones((4, 4)), (0.01, 0.99), None, "flat.png")


def test_registration_recovers_known_pose() -> None:
    tpl = load_template("mni152", 4.0)
    pose = np.eye(4)
    a = np.deg2rad(6.0)
    pose[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) * 1.03
    pose[:3, 3] = [5.0, -4.0, 3.0]
    moved = resample_onto(tpl.to_sitk(), tpl.affine, tpl.shape, matrix_transform(np.linalg.inv(pose)))
    res = register_affine(tpl.to_sitk(), array_to_sitk(moved, tpl.affine), tpl.mask_sitk())
    got = transform_matrix(res.transform)
    # recovered mapping template->subject equals the pose; compare where it matters (brain points)
    pts = np.c_[np.argwhere(tpl.mask)[::50], np.ones(len(np.argwhere(tpl.mask)[::50]))] @ tpl.affine.T
    err = np.linalg.norm((pts @ got.T - pts @ pose.T)[:, :3], axis=1)
    assert err.mean() < 1.5 and err.max() < 4.0, (err.mean(), err.max())
    back = resample_onto(array_to_sitk(moved, tpl.affine), tpl.affine, tpl.shape, res.transform)
    before = np.corrcoef(moved[tpl.mask], tpl.image[tpl.mask])[0, 1]
    after = np.corrcoef(back[tpl.mask], tpl.image[tpl.mask])[0, 1]
    assert after > 0.95 and after > before + 0.2, (before, after)
    assert res.seconds < 10
    again = register_affine(tpl.to_sitk(), array_to_sitk(moved, tpl.affine), tpl.mask_sitk())
    np.testing.assert_allclose(transform_matrix(again.transform), got, atol=1e-3)  # seeded sampling


def test_crop_resize_affine_convention() -> None:
    # crop at voxel 10 along x, keep size: voxel 20 of the crop is voxel 30 of the grid (x = 60 mm)
    aff = crop_resize_affine(np.diag([2.0, 2.0, 2.0, 1.0]), [10, 0, 0], [20, 40, 40], [20, 40, 40])
    np.testing.assert_allclose(aff @ [20, 10, 20, 1], [60, 20, 40, 1])
    # halving: new voxel j is centred on old continuous index 2j + 0.5 (align_corners=False)
    aff = crop_resize_affine(np.eye(4), [0, 0, 0], [40, 4, 4], [20, 4, 4])
    np.testing.assert_allclose(aff @ [3, 0, 0, 1], [6.5, 0, 0, 1])
    ramp = np.tile(np.linspace(-1, 1, 40, dtype=np.float32)[None, :, None, None], (1, 1, 4, 4))
    small = resize_volumes(ramp, [20, 4, 4])
    expect = np.interp(2.0 * np.arange(5, 15) + 0.5, np.arange(40), np.linspace(-1, 1, 40))
    np.testing.assert_allclose(small[0, 5:15, 0, 0], expect, atol=0.02)


def test_prepared_affine_maps_blob_to_world(nifti_folder: Path, tmp_path: Path) -> None:
    # no upper clipping here, so the blob keeps its peak; its centroid locates it to sub-voxel accuracy
    out = run_preprocess(_opts(nifti_folder, tmp_path / "prep", labels_csv=nifti_folder / "labels.csv",
                               register=False, spacing=2.0, size=32, clip_quantiles=(0.0, 1.0)))
    ds = load_prepared(out)
    assert ds.images.shape == (4, 1, 32, 32, 32) and ds.classes == ["a", "b"]
    assert float(ds.images.min()) == -1.0 and float(ds.images.max()) <= 1.0
    for img in np.asarray(ds.images)[:, 0]:
        w = np.clip(img - 0.5 * img.max(), 0.0, None)  # above half maximum: the blob only
        centre = (np.argwhere(w > 0) * w[w > 0][:, None]).sum(axis=0) / w.sum()
        world = ds.affine @ np.append(centre, 1.0)
        assert np.linalg.norm(world[:3] - BLOB_MM) < 0.25 * min(ds.meta["spacing"]), (centre, world)
    assert ds.meta["spacing"] == pytest.approx(np.linalg.norm(ds.affine[:3, :3], axis=0))
    assert ds.meta["preprocessing"]["options"]["register"] is False
    union = (np.asarray(ds.images) > -1).any(axis=(0, 1))
    for axis in range(3):  # background-only slices are trimmed (up to the 1-voxel margin)
        prof = union.any(axis=tuple(a for a in range(3) if a != axis))
        assert prof[:2].any() and prof[-2:].any()


def test_2d_images_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("b", "a"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "img" / cls / f"{i}.png")
    ds = load_prepared(run_preprocess(_opts(tmp_path / "img", tmp_path / "prep", size=16)))
    assert ds.images.shape == (6, 1, 16, 16) and ds.spatial_dims == 2 and ds.classes == ["a", "b"]
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.meta["spacing"] == [2.5, 2.5]


def test_bad_input_leaves_nothing(tmp_path: Path, nifti_folder: Path) -> None:
    vol = np.ones((8, 8, 8), np.float32)
    vol[0, 0, 0] = np.nan
    write_nifti(nifti_folder / "zz.nii.gz", vol, np.eye(4))
    write_labels(nifti_folder / "labels.csv", {"s0": "a", "s1": "b", "zz": "a"})
    with pytest.raises(DataError, match=r"zz\.nii\.gz: volume contains 1 NaN"):
        run_preprocess(_opts(nifti_folder, tmp_path / "prep", labels_csv=nifti_folder / "labels.csv"))
    assert not (tmp_path / "prep").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prep")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the input format"):
        run_preprocess(_opts(tmp_path / "empty", tmp_path / "prep"))
    with pytest.raises(DataError, match="no .nii"):
        run_preprocess(_opts(tmp_path / "empty", tmp_path / "prep", reader="nifti"))
    assert not (tmp_path / "prep").exists()


def test_out_folder_rules(tmp_path: Path, nifti_folder: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prepared dataset folder"):
        run_preprocess(_opts(nifti_folder, tmp_path / "busy", register=False))
    opts = _opts(nifti_folder, tmp_path / "prep", register=False, size=32, labels_csv=nifti_folder / "labels.csv")
    run_preprocess(opts)
    opts.size = 48
    load = load_prepared(run_preprocess(opts))  # an older prepared folder is replaced
    assert load.shape == (48, 48, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "nii", "prep"]


def test_options_validation(tmp_path: Path) -> None:
    for kw in ({"size": 4}, {"clip_quantiles": (0.5, 0.2)}, {"reader": "nope"}, {"n_folds": 1}):
        with pytest.raises(ConfigError):
            run_preprocess(_opts(tmp_path, tmp_path / "o", **kw))


def test_workers_match_serial(tmp_path: Path) -> None:
    shape = (24, 28, 20)
    aff = oblique_las_affine(shape, spacing=(3.0, 3.0, 3.0))
    for i in range(2):
        write_nifti(tmp_path / "in" / f"v{i}.nii.gz", blob_volume(shape, aff, BLOB_MM, seed=i), aff)
    a = load_prepared(run_preprocess(_opts(tmp_path / "in", tmp_path / "a", register=False, size=32, spacing=3.0)))
    b = load_prepared(run_preprocess(_opts(tmp_path / "in", tmp_path / "b", register=False, size=32, spacing=3.0,
                                           workers=2)))
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert a.labels is None and a.classes == []


# ------------------------------------------------------------------ issue 16
def test_allow_missing_slices_is_recorded(tmp_path: Path) -> None:
    from data_helpers import series_with_bad_slice, write_dicom_series

    _, vol = series_with_bad_slice(tmp_path / "dcm", "missing")
    write_dicom_series(tmp_path / "dcm" / "p2", vol[::-1].copy(), (0.8, 0.9, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(DataError, match="non-uniform slice spacing"):
        run_preprocess(_opts(tmp_path / "dcm", tmp_path / "prep", register=False, size=32))
    assert not (tmp_path / "prep").exists()
    ds = load_prepared(run_preprocess(_opts(tmp_path / "dcm", tmp_path / "prep", register=False, size=32,
                                            allow_missing_slices=True)))
    assert ds.records[0].note.startswith("resampled 9 unevenly spaced slices onto 10 at 2 mm")
    assert "note" in (tmp_path / "prep" / "manifest.csv").read_text(encoding="utf-8").splitlines()[0]
    assert ds.meta["preprocessing"]["slice_repairs"] == {"p1": ds.records[0].note}
    assert ds.meta["preprocessing"]["options"]["allow_missing_slices"] is True


@pytest.mark.parametrize(("case", "message"), [
    ("zero", r"bad\.nii\.gz: an all-zero volume"),
    ("constant", r"bad\.nii\.gz: a constant volume \(every voxel is 7\)"),
    ("single_slice", r"bad\.nii\.gz: a single-slice volume \(shape \(48, 56, 1\)\)"),
    ("two_slices", r"bad\.nii\.gz: a volume only 2 voxels thick"),
])
def test_degenerate_volume_is_named_before_registration(tmp_path: Path, nifti_folder: Path, case: str,
                                                        message: str) -> None:
    shape = (48, 56, 40)
    aff = oblique_las_affine(shape)
    vol = {"zero": np.zeros(shape, np.float32), "constant": np.full(shape, 7.0, np.float32),
           "single_slice": blob_volume(shape, aff, BLOB_MM)[:, :, 20:21],
           "two_slices": blob_volume(shape, aff, BLOB_MM)[:, :, 20:22]}[case]
    write_nifti(nifti_folder / "bad.nii.gz", vol, aff)
    with pytest.raises(DataError, match=message):
        run_preprocess(_opts(nifti_folder, tmp_path / "prep", size=32))
    assert not (tmp_path / "prep").exists()


def test_thin_volume_at_the_registration_spacing_is_named(tmp_path: Path, nifti_folder: Path) -> None:
    vol = np.random.default_rng(0).random((40, 40, 5)).astype(np.float32)
    write_nifti(nifti_folder / "thin.nii.gz", vol, np.diag([1.0, 1.0, 1.0, 1.0]))  # 5 mm: 2 voxels at 2 mm
    with pytest.raises(DataError, match=r"thin\.nii\.gz: covers only 5 mm along axis 2 .*fewer than 4 voxels at 2 mm"):
        run_preprocess(_opts(nifti_folder, tmp_path / "prep", size=32))


def test_medmnist_3d_size_is_capped_like_every_3d_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f = tmp_path / "x3d.npz"
    np.savez(f, train_images=rng.integers(0, 256, (3, 6, 6, 6), dtype=np.uint8), train_labels=np.zeros((3, 1)))
    with pytest.raises(ConfigError, match=r"3D size must be at most 256, got 1024"):
        run_preprocess(_opts(f, tmp_path / "p", size=1024))
    assert not (tmp_path / "p").exists()


def _children(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live child processes of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((int(stat.parent.name), cmd))
    return out


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"  # a zombie has ended; only its parent's wait is due


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import synthmed

    shape = (48, 56, 40)
    aff = oblique_las_affine(shape)
    for i in range(6):  # registration with two workers: several seconds of work
        write_nifti(tmp_path / "in" / f"s{i}.nii.gz", blob_volume(shape, aff, BLOB_MM, seed=i), aff)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(synthmed.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "synthmed", "preprocess", str(tmp_path / "in"), "--out",
                             str(tmp_path / "prep"), "--workers", "2", "--size", "32", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p, cmd in _children(proc.pid) if "spawn_main" in cmd]
            time.sleep(0.05)
        assert len(workers) == 2, "the workers did not start"
        while not all(_loaded(p, "SimpleITK") for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)  # until they have imported synthmed.data.preprocess and run their initializer
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in workers:  # only the workers this test started
            if _alive(p):
                os.kill(p, signal.SIGKILL)
