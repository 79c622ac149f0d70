"""Readers: round trips on files written here, and every bad-input case."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_helpers import (
    oblique_las_affine,
    series_with_bad_slice,
    write_dicom_series,
    write_labels,
    write_nifti,
)
from PIL import Image

from synthmed.data.readers import detect_reader, read_bids, read_dicom, read_images, read_nifti
from synthmed.data.registration import canonical
from synthmed.errors import DataError
from synthmed.registry import READERS


def test_registry_has_all_readers() -> None:
    import synthmed.data  # noqa: F401

    for name in ("nifti", "bids", "dicom", "images", "medmnist", "auto"):
        assert name in READERS and READERS.describe(name)


def test_nifti_oblique_las_round_trip(tmp_path: Path) -> None:
    shape = (20, 24, 16)
    aff = oblique_las_affine(shape)
    vol = np.zeros(shape, dtype=np.int16)
    vol[3, 5, 7] = 1000
    write_nifti(tmp_path / "a.nii.gz", vol, aff)
    write_labels(tmp_path / "labels.csv", {"a": "x"})
    (subj,) = read_nifti(tmp_path, labels_csv=tmp_path / "labels.csv")
    assert (subj.subject_id, subj.label_name) == ("a", "x")
    np.testing.assert_array_equal(subj.array, vol)
    np.testing.assert_allclose(subj.affine, aff, atol=1e-5)
    assert subj.spacing == pytest.approx((2.0, 2.0, 2.5), abs=1e-5)
    arr, ras = canonical(subj.array, subj.affine)
    assert nib.aff2axcodes(ras) == ("R", "A", "S")
    world = aff @ [3, 5, 7, 1]
    np.testing.assert_allclose(ras @ np.append(np.argwhere(arr == arr.max())[0], 1), world, atol=1e-4)


def test_nifti_csv_ids_without_file(nifti_folder: Path, tmp_path: Path) -> None:
    csv = write_labels(tmp_path / "bad.csv", {"s0": "a", "s1": "b", "ghost": "a"})
    with pytest.raises(DataError, match=r"bad\.csv.*ghost"):
        read_nifti(nifti_folder, labels_csv=csv)


def test_nifti_files_without_row_are_skipped(nifti_folder: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    csv = write_labels(tmp_path / "part.csv", {"s0": "a", "s1": "b"})
    with caplog.at_level(logging.WARNING):
        subs = read_nifti(nifti_folder, labels_csv=csv)
    assert [s.subject_id for s in subs] == ["s0", "s1"]
    assert "s2" in caplog.text and "skipped" in caplog.text


def test_nifti_missing_label_column(nifti_folder: Path) -> None:
    with pytest.raises(DataError, match=r"no column 'diagnosis'.*available columns: subject_id, label"):
        read_nifti(nifti_folder, labels_csv=nifti_folder / "labels.csv", label_column="diagnosis")


def test_nifti_unlabelled_without_csv(nifti_folder: Path) -> None:
    subs = read_nifti(nifti_folder)
    assert len(subs) == 4 and all(s.label_name is None for s in subs)


@pytest.mark.parametrize("case", ["empty", "corrupt", "4d", "nan"])
def test_nifti_bad_inputs(tmp_path: Path, case: str) -> None:
    folder = tmp_path / case
    folder.mkdir()
    aff = np.eye(4)
    if case == "corrupt":
        write_nifti(folder / "x.nii.gz", np.ones((8, 8, 8), np.float32), aff)
        data = (folder / "x.nii.gz").read_bytes()
        (folder / "x.nii.gz").write_bytes(data[: len(data) // 2])
    elif case == "4d":
        write_nifti(folder / "x.nii.gz", np.ones((8, 8, 8, 3), np.float32), aff)
    elif case == "nan":
        vol = np.ones((8, 8, 8), np.float32)
        vol[1, 2, 3] = np.nan
        write_nifti(folder / "x.nii.gz", vol, aff)
    expected = {"empty": "no .nii", "corrupt": r"x\.nii\.gz: cannot read", "4d": r"x\.nii\.gz: expected a 3D",
                "nan": r"x\.nii\.gz: volume contains 1 NaN"}[case]
    with pytest.raises(DataError, match=expected):
        read_nifti(folder)


def test_nifti_garbage_gzip(tmp_path: Path) -> None:
    (tmp_path / "g.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(DataError, match=r"g\.nii\.gz"):
        read_nifti(tmp_path)


def _bids(root: Path) -> Path:
    (root / "participants.tsv").parent.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text("participant_id\tage\tgroup\nsub-01\t30\tdepr\nsub-02\t41\tcontrol\n"
                                           "sub-03\t50\tcontrol\n")
    vol = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    write_nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", vol, np.diag([-2.0, 2, 2, 1]))
    write_nifti(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii", vol + 1, np.diag([2.0, 2, 2, 1]))
    return root


def test_bids_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids")
    with caplog.at_level(logging.WARNING):
        subs = read_bids(root, label_column="group")
    assert [(s.subject_id, s.label_name) for s in subs] == [("sub-01", "depr"), ("sub-02", "control")]
    assert subs[1].source.endswith("sub-02_ses-1_T1w.nii") and subs[1].array[0, 0, 0] == 1
    assert "sub-03" in caplog.text  # listed but has no image
    assert detect_reader(root) == "bids"


def test_bids_missing_column_lists_columns(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids")
    with pytest.raises(DataError, match=r"participants\.tsv: no column 'diagnosis'.*participant_id, age, group"):
        read_bids(root, label_column="diagnosis")


def test_dicom_series_round_trip(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).integers(0, 1000, (10, 12, 6)).astype(np.int16)
    write_dicom_series(tmp_path / "dcm" / "p1", vol, (0.8, 0.9, 2.5), (-4.0, -5.0, 10.0))
    write_dicom_series(tmp_path / "dcm" / "p2", vol[::-1].copy(), (0.8, 0.9, 2.5), (0.0, 0.0, 0.0))
    write_labels(tmp_path / "labels.csv", {"p1": "a", "p2": "b"})
    assert detect_reader(tmp_path / "dcm") == "dicom"
    subs = read_dicom(tmp_path / "dcm", labels_csv=tmp_path / "labels.csv")
    assert [s.label_name for s in subs] == ["a", "b"]
    np.testing.assert_array_equal(subs[0].array, vol)
    assert subs[0].spacing == pytest.approx((0.8, 0.9, 2.5), abs=1e-4)
    # DICOM (LPS) origin (-4, -5, 10) is RAS (4, 5, 10); the x and y axes point to L and P
    np.testing.assert_allclose(subs[0].affine[:3, 3], [4.0, 5.0, 10.0], atol=1e-4)
    assert nib.aff2axcodes(subs[0].affine) == ("L", "P", "S")


def test_dicom_folder_without_series(tmp_path: Path) -> None:
    (tmp_path / "p1").mkdir()
    (tmp_path / "p1" / "x.dcm").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"p1: no DICOM series"):
        read_dicom(tmp_path)


def _png_classes(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(0)
    for cls in ("tumour", "normal"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)
            Image.fromarray(arr if i % 2 else arr[..., 0]).save(root / cls / f"{cls}{i}.png")


def test_images_reader_classes_and_grayscale(tmp_path: Path) -> None:
    _png_classes(tmp_path / "img")
    subs = read_images(tmp_path / "img")
    assert len(subs) == 6 and {s.label_name for s in subs} == {"tumour", "normal"}
    assert all(s.array.shape == (20, 16) and s.array.dtype == np.uint8 for s in subs)
    assert subs[0].subject_id == "normal/normal0" and detect_reader(tmp_path / "img") == "images"


def test_images_training_testing_sets(tmp_path: Path) -> None:
    _png_classes(tmp_path / "ds" / "Training")
    _png_classes(tmp_path / "ds" / "Testing", n=1)
    subs = read_images(tmp_path / "ds")
    assert sum(s.split == "test" for s in subs) == 2 and sum(s.split == "train" for s in subs) == 6
    assert len({s.subject_id for s in subs}) == 8


def test_images_unreadable(tmp_path: Path) -> None:
    _png_classes(tmp_path / "img", n=1)
    (tmp_path / "img" / "normal" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        read_images(tmp_path / "img")


def test_detect_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the input format"):
        detect_reader(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        detect_reader(tmp_path / "missing")
    write_nifti(tmp_path / "n" / "a.nii", np.ones((4, 4, 4), np.float32), np.eye(4))
    assert detect_reader(tmp_path / "n") == "nifti"


# ------------------------------------------------------------------ issue 16: incomplete DICOM series
@pytest.mark.parametrize(("case", "message"), [
    ("missing", r"p1: non-uniform slice spacing .*slice004\.dcm to slice006\.dcm: 4 mm.*--allow-missing-slices"),
    ("garbage", r"slice005\.dcm: unreadable file in the DICOM series folder .*p1: not a DICOM file"),
    ("truncated", r"slice005\.dcm: unreadable file .*a slice of the series that cannot be read"),
    ("no_position", r"slice005\.dcm: no valid ImagePositionPatient"),
])
def test_dicom_series_with_a_bad_slice_is_refused(tmp_path: Path, case: str, message: str) -> None:
    series_with_bad_slice(tmp_path / "dcm", case)
    with pytest.raises(DataError, match=message):
        read_dicom(tmp_path / "dcm")


@pytest.mark.parametrize("case", ["missing", "garbage"])
def test_dicom_allow_missing_slices_resamples_onto_the_uniform_grid(tmp_path: Path, case: str) -> None:
    _, vol = series_with_bad_slice(tmp_path / "dcm", case)
    (subj,) = read_dicom(tmp_path / "dcm", allow_missing_slices=True)
    assert subj.array.shape == (10, 12, 10)
    assert subj.spacing == pytest.approx((0.8, 0.9, 2.0), abs=1e-4)
    keep = [k for k in range(10) if k != 5]
    np.testing.assert_allclose(subj.array[..., keep], vol[..., keep], atol=1e-3)
    np.testing.assert_allclose(subj.array[..., 5], (vol[..., 4] + vol[..., 6].astype(np.float32)) / 2, atol=1e-3)
    assert "resampled 9 unevenly spaced slices onto 10 at 2 mm" in subj.note
    assert ("slice005.dcm (unreadable)" in subj.note) == (case == "garbage")


def test_dicom_duplicate_slice_position_is_refused(tmp_path: Path) -> None:
    folder, _ = series_with_bad_slice(tmp_path / "dcm", "none")
    import pydicom

    ds = pydicom.dcmread(folder / "slice006.dcm")
    ds.ImagePositionPatient = pydicom.dcmread(folder / "slice005.dcm").ImagePositionPatient
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "slice006.dcm")
    with pytest.raises(DataError, match=r"p1: two DICOM slices at the same position"):
        read_dicom(tmp_path / "dcm", allow_missing_slices=True)


# ------------------------------------------------------------------ issue 16: ambiguous folders
def test_nifti_and_nifti_gz_with_one_id_are_refused(tmp_path: Path) -> None:
    write_nifti(tmp_path / "sub-01.nii", np.ones((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "sub-01.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "sub-02.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    for call in (read_nifti, READERS.get("auto")):
        with pytest.raises(DataError, match=r"two files for subject id 'sub-01': sub-01\.nii and sub-01\.nii\.gz"):
            call(tmp_path)


def test_folder_mixing_nifti_and_png_classes_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _png_classes(tmp_path / "mix", n=1)
    write_nifti(tmp_path / "mix" / "a.nii.gz", np.ones((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(DataError, match=r"mix: holds more than one kind of input: \.nii\[\.gz\] files \(a\.nii\.gz\); "
                                        r"class folders of images \(normal/, tumour/\).*--reader nifti or --reader images"):
        detect_reader(tmp_path / "mix")
    with caplog.at_level(logging.WARNING):  # a reader chosen by hand says what it ignores
        assert len(read_nifti(tmp_path / "mix")) == 1
        assert len(read_images(tmp_path / "mix")) == 2
    assert "the nifti reader ignores the class folders of images here (normal/, tumour/)" in caplog.text
    assert "the images reader ignores the .nii[.gz] files here (a.nii.gz)" in caplog.text
