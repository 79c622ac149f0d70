"""Input readers for ``synthmed preprocess``: every supported layout becomes a list of RawSubject.

Each reader is registered in :data:`synthmed.registry.READERS` and called as
``reader(path, labels_csv=None, id_column="subject_id", label_column="label")``; arguments a
reader does not use are ignored.  Readers load and validate every file (so a bad input fails
before anything is written) but do not resample or normalise: that is ``preprocess.py``'s job.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from synthmed.data.registration import sitk_to_array
from synthmed.errors import DataError
from synthmed.io_utils import sha256_file
from synthmed.registry import READERS

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


@dataclass
class RawSubject:
    """One input image as read from disk, before any preprocessing.

    Attributes:
        subject_id: unique id (file name without extension, BIDS participant id ...).
        label_name: class name, or None when the input is unlabelled.
        source: where it came from (a path, or ``file.npz:train_images[3]``).
        array: (X, Y, Z) volume or (H, W) image, in the file's dtype.
        affine: 4x4 voxel-to-world affine (RAS+, mm); identity-like for 2D images and MedMNIST.
        source_sha256: SHA-256 of the source file (or of the array bytes for array sources).
        split: the source's own split (``train``/``val``/``test``) when it defines one.
        note: what the reader repaired (e.g. DICOM slices resampled onto a uniform grid); recorded in
            the prepared ``manifest.csv``.
    """

    subject_id: str
    label_name: str | None
    source: str
    array: np.ndarray
    affine: np.ndarray
    source_sha256: str = ""
    split: str | None = None
    note: str = ""

    @property
    def spatial_dims(self) -> int:
        return int(self.array.ndim)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per array axis."""
        sp = np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0)
        return tuple(float(s) for s in sp[: self.array.ndim])


# ----------------------------------------------------------------------------------- labels
def strip_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    """``sub-01.nii.gz`` -> ``sub-01`` for the first matching suffix (case-insensitive)."""
    low = name.lower()
    for s in suffixes:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def read_label_table(path: str | Path, id_column: str, label_column: str,
                     delimiter: str | None = None) -> dict[str, str]:
    """Read ``{id: label}`` from a CSV/TSV file.

    Args:
        path: the table; the delimiter is sniffed from the extension (``.tsv`` = tab) unless given.
        id_column: column holding subject ids.
        label_column: column holding class names.

    Raises:
        DataError: missing file or column (listing the available ones), duplicate id with
            conflicting labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label table not found")
    delim = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delim)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        for col, flag in ((id_column, "--id-column"), (label_column, "--label-column")):
            if col not in cols:
                raise DataError(f"{path}: no column {col!r} (choose with {flag}); "
                                f"available columns: {', '.join(cols) or '(none)'}")
        table: dict[str, str] = {}
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            sid, lab = row[id_column], row[label_column]
            if not sid:
                continue
            if sid in table and table[sid] != lab:
                raise DataError(f"{path}: id {sid!r} appears twice with labels {table[sid]!r} and {lab!r}")
            table[sid] = lab
    return table


def match_labels(files: dict[str, Path], labels_csv: Path | None, id_column: str,
                 label_column: str | None) -> list[tuple[str, str | None, Path]]:
    """Pair files (by id) with label rows.

    CSV ids that match no file raise DataError naming them; files without a row are skipped
    with a warning; without a CSV everything is unlabelled.

    Returns:
        ``(subject_id, label_name or None, path)`` sorted by id.
    """
    if labels_csv is None or label_column is None:
        return [(sid, None, files[sid]) for sid in sorted(files)]
    table = read_label_table(labels_csv, id_column, label_column)
    missing = sorted(set(table) - set(files))
    if missing:
        raise DataError(f"{labels_csv}: {len(missing)} id(s) match no input file: {', '.join(missing[:10])}"
                        f"{' ...' if len(missing) > 10 else ''} (ids are file names without extension)")
    extra = sorted(set(files) - set(table))
    if extra:
        log.warning("%d file(s) have no row in %s and are skipped: %s", len(extra), labels_csv,
                    ", ".join(extra[:10]))
    out = []
    for sid in sorted(table):
        if not table[sid] or table[sid].lower() == "n/a":
            log.warning("%s: subject %s has an empty label and is skipped", labels_csv, sid)
            continue
        out.append((sid, table[sid], files[sid]))
    return out


# ----------------------------------------------------------------------------------- volumes
def check_volume(array: np.ndarray, source: str | Path) -> np.ndarray:
    """Validate a volume: squeeze trailing singleton dims, require 3D and finite values.

    Raises:
        DataError: 4D (or other non-3D) data, or NaN/Inf values, naming ``source``.
    """
    arr = np.asarray(array)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"{source}: expected a 3D volume, got shape {tuple(array.shape)}"
                        + (" (a 4D series; extract one volume first)" if arr.ndim == 4 else ""))
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"{source}: volume contains {int((~np.isfinite(arr)).sum())} NaN/Inf voxels")
    return arr


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one NIfTI file.

    Returns:
        ``(array (X, Y, Z) in the stored dtype after scaling, affine 4x4 RAS)``.

    Raises:
        DataError: unreadable/corrupt file, non-3D data or NaNs.
    """
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as e:
        raise DataError(f"{path}: cannot read NIfTI file ({type(e).__name__}: {e})") from None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: invalid (singular or non-finite) affine in the NIfTI header")
    return check_volume(data, path), affine


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{subject id: file}`` of the .nii/.nii.gz files in ``folder``.

    Raises:
        DataError: two files with one id (``sub-01.nii`` and ``sub-01.nii.gz``), naming both.
    """
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES):
            sid = strip_suffix(p.name, NIFTI_SUFFIXES)
            if sid in files:
                raise DataError(f"{folder}: two files for subject id {sid!r}: {files[sid].name} and {p.name}; "
                                "keep one of them (ids are file names without extension)")
            files[sid] = p
    return files


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder does not exist")


@READERS.register("nifti")
def read_nifti(path: str | Path, labels_csv: str | Path | None = None, id_column: str = "subject_id",
               label_column: str | None = "label", **_: object) -> list[RawSubject]:
    """A folder of .nii/.nii.gz volumes plus an optional CSV of labels (ids = file names)."""
    folder = Path(path)
    _require_dir(folder, "NIfTI")
    files = _nifti_files(folder)
    if not files:
        raise DataError(f"{folder}: no .nii or .nii.gz files found")
    _warn_ignored(folder, "nifti")
    csv_path = Path(labels_csv) if labels_csv else None
    subjects = []
    for sid, lab, p in match_labels(files, csv_path, id_column, label_column):
        arr, aff = load_nifti(p)
        subjects.append(RawSubject(sid, lab, str(p), arr, aff, sha256_file(p)))
    if not subjects:
        raise DataError(f"{folder}: no labelled volumes (check {csv_path})")
    return subjects


def _bids_t1w(root: Path, pid: str) -> Path | None:
    found = sorted(p for pat in ("anat/*_T1w.nii*", "ses-*/anat/*_T1w.nii*") for p in (root / pid).glob(pat))
    if len(found) > 1:
        log.warning("%s: %d T1w images; using %s", root / pid, len(found), found[0].name)
    return found[0] if found else None


@READERS.register("bids")
def read_bids(path: str | Path, label_column: str | None = "label", **_: object) -> list[RawSubject]:
    """A BIDS dataset: participants.tsv labels and sub-*/[ses-*/]anat/*_T1w.nii[.gz] images."""
    root = Path(path)
    _require_dir(root, "BIDS")
    tsv = root / "participants.tsv"
    if not tsv.is_file():
        raise DataError(f"{root}: not a BIDS dataset (no participants.tsv)")
    table = read_label_table(tsv, "participant_id", label_column or "participant_id", "\t")
    subjects = []
    for pid in sorted(table):
        img = _bids_t1w(root, pid)
        if img is None:
            log.warning("%s: participant %s has no anat/*_T1w.nii[.gz]; skipped", tsv, pid)
            continue
        lab = table[pid] if label_column else None
        if label_column and (not lab or lab.lower() == "n/a"):
            log.warning("%s: participant %s has no %r value; skipped", tsv, pid, label_column)
            continue
        arr, aff = load_nifti(img)
        subjects.append(RawSubject(pid, lab, str(img), arr, aff, sha256_file(img)))
    if not subjects:
        raise DataError(f"{root}: no participant in participants.tsv has a T1w image")
    return subjects


# ----------------------------------------------------------------------------------- DICOM
#: files in a series folder that are not slices and are not checked (besides hidden files)
DICOM_IGNORED_NAMES = ("DICOMDIR",)
DICOM_IGNORED_SUFFIXES = (".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".html", ".pdf", ".log", ".ini",
                          ".yaml", ".yml")
#: slice positions must be uniform within this fraction of the series' slice spacing (and 0.001 mm)
SLICE_SPACING_TOLERANCE = 0.01
_FLAG_HINT = "--allow-missing-slices to resample the readable slices onto a uniform grid"


@dataclass
class _Slice:
    name: str
    position: np.ndarray | None  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray | None  # ImageOrientationPatient (row and column cosines, LPS)


def _dicom_header(path: str | Path) -> tuple[object | None, str]:
    """``(pydicom dataset without pixel data, "")``, or ``(None, why it cannot be read)``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True), ""
    except InvalidDicomError:
        return None, "not a DICOM file"
    except Exception as e:  # pydicom raises many kinds on truncated or corrupt files
        return None, f"{type(e).__name__}: {e}"


def _float_tag(ds: object, keyword: str, n: int) -> np.ndarray | None:
    value = getattr(ds, keyword, None)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.shape == (n,) and np.isfinite(arr).all() else None


def _series_slices(names: list[str]) -> list[_Slice]:
    out = []
    for n in names:
        ds, _ = _dicom_header(n)
        pos = _float_tag(ds, "ImagePositionPatient", 3) if ds is not None else None
        ori = _float_tag(ds, "ImageOrientationPatient", 6) if ds is not None else None
        out.append(_Slice(n, pos, ori))
    return out


def _unreadable_files(folder: Path, in_series: set[str], series_uid: str | None) -> list[tuple[Path, str]]:
    """Files of ``folder`` that GDCM put in no series and that are unreadable or are slices of the chosen
    series (GDCM leaves out truncated and corrupt slices without a word)."""
    bad = []
    for p in sorted(folder.iterdir()):
        if (not p.is_file() or p.name.startswith(".") or p.name.upper() in DICOM_IGNORED_NAMES
                or p.suffix.lower() in DICOM_IGNORED_SUFFIXES or str(p) in in_series):
            continue
        ds, why = _dicom_header(p)
        if ds is None:
            bad.append((p, why))
        elif not getattr(ds, "SeriesInstanceUID", None):
            bad.append((p, "an incomplete DICOM file (no SeriesInstanceUID; truncated?)"))
        elif series_uid is not None and str(getattr(ds, "SeriesInstanceUID", "")) == series_uid:
            bad.append((p, "a slice of the series that cannot be read (truncated or corrupt pixel data?)"))
    return bad


def _slice_normal(slices: list[_Slice], folder: Path) -> np.ndarray:
    ori = slices[0].orientation
    assert ori is not None
    for s in slices[1:]:
        if s.orientation is not None and not np.allclose(s.orientation, ori, atol=1e-3):
            raise DataError(f"{folder}: the slices of the DICOM series have different orientations "
                            f"(ImageOrientationPatient of {Path(slices[0].name).name} and {Path(s.name).name} "
                            "differ); one series folder must hold one stack of parallel slices")
    normal = np.cross(ori[:3], ori[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise DataError(f"{slices[0].name}: invalid ImageOrientationPatient {ori.tolist()}")
    return normal / norm


def check_slice_positions(folder: Path, slices: list[_Slice],
                          tolerance: float = SLICE_SPACING_TOLERANCE) -> tuple[np.ndarray, float, list[str]]:
    """Check that the slices of a series are evenly spaced along their normal.

    Positions are ImagePositionPatient projected on the slice normal (the cross product of the
    ImageOrientationPatient row and column cosines).

    Returns:
        ``(sorted positions relative to the first (mm), the series' slice spacing (the median gap),
        non-uniform gaps as text)``; the gaps are empty for a uniform series.

    Raises:
        DataError: two slices at one position, slices of different orientations.
    """
    normal = _slice_normal(slices, folder)
    proj = np.array([float(np.dot(s.position, normal)) for s in slices])  # type: ignore[arg-type]
    order = np.argsort(proj, kind="stable")
    proj = proj[order]
    names = [Path(slices[i].name).name for i in order]
    gaps = np.diff(proj)
    if len(gaps) == 0:
        return proj - proj[0], 0.0, []
    dup = np.flatnonzero(gaps < 1e-3)
    if len(dup):
        i = int(dup[0])
        raise DataError(f"{folder}: two DICOM slices at the same position ({names[i]} and {names[i + 1]}, "
                        f"{proj[i]:.4g} mm along the slice normal); one series folder must hold one stack of "
                        "slices (a duplicate file, or two series with the same SeriesInstanceUID?)")
    spacing = float(np.median(gaps))
    tol = max(tolerance * spacing, 1e-3)
    bad = np.flatnonzero(np.abs(gaps - spacing) > tol)
    text = [f"{names[i]} to {names[i + 1]}: {gaps[i]:.4g} mm" for i in bad]
    return proj - proj[0], spacing, text


def _uniform_slices(arr: np.ndarray, positions: np.ndarray, spacing: float) -> np.ndarray:
    """Linear interpolation along the last axis from slices at ``positions`` (mm, increasing, first 0)
    onto positions 0, spacing, 2 spacing ... up to the last slice."""
    n = int(round(positions[-1] / spacing)) + 1
    target = np.arange(n) * spacing
    j = np.clip(np.searchsorted(positions, target, side="right") - 1, 0, len(positions) - 2)
    w = np.clip((target - positions[j]) / (positions[j + 1] - positions[j]), 0.0, 1.0).astype(np.float32)
    src = np.asarray(arr, dtype=np.float32)
    return src[..., j] * (1.0 - w) + src[..., j + 1] * w


def load_dicom_series(folder: Path, allow_missing_slices: bool = False,
                      tolerance: float = SLICE_SPACING_TOLERANCE) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Read the DICOM series in ``folder`` (the largest one if several) with SimpleITK/GDCM.

    Before reading, every slice's ImagePositionPatient projected on the slice normal is checked for
    uniform spacing (within ``tolerance`` of the median gap), and every other file in the folder must
    be a readable DICOM file of another series: GDCM leaves truncated and corrupt slices out without a
    word, and ITK then stacks the rest evenly (89 slices at 2.02 mm instead of 90 at 2 mm).

    Args:
        allow_missing_slices: instead of refusing, leave unreadable files and slices without a
            position out and, when the remaining slices are not evenly spaced, resample them (linear
            interpolation along the normal) onto a uniform grid at the series' slice spacing.

    Returns:
        ``(array (X, Y, Z), affine 4x4 RAS, file names, note)``; ``note`` says what was repaired
        ("" when nothing was).

    Raises:
        DataError: naming the folder or file: no series, an unreadable file, a slice without a
            position, non-uniform slice spacing (a missing slice), duplicate positions.
    """
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: no DICOM series found")
    all_names = {s: list(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
    uid = max(all_names, key=lambda s: len(all_names[s]))
    names = all_names[uid]
    if len(series) > 1:
        log.warning("%s: %d DICOM series; using the largest (%d files)", folder, len(series), len(names))
    in_series = {str(Path(n)) for ns in all_names.values() for n in ns}
    notes: list[str] = []
    bad = _unreadable_files(folder, in_series, _series_uid(names[0]))
    if bad and not allow_missing_slices:
        p, why = bad[0]
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        raise DataError(f"{p}: unreadable file in the DICOM series folder {folder}: {why}{more}; remove or "
                        f"replace it, or pass {_FLAG_HINT}")
    if bad:
        notes.append("left out " + ", ".join(p.name for p, _ in bad) + " (unreadable)")
    slices = _series_slices(names)
    unplaced = [s for s in slices if s.position is None or s.orientation is None]
    if unplaced and not allow_missing_slices:
        raise DataError(f"{unplaced[0].name}: no valid ImagePositionPatient/ImageOrientationPatient, so the slice "
                        f"cannot be placed in the DICOM series {folder}"
                        f"{f' (and {len(unplaced) - 1} more slice(s))' if len(unplaced) > 1 else ''}; fix or remove it, or pass "
                        f"{_FLAG_HINT}")
    if unplaced:
        notes.append("left out " + ", ".join(Path(s.name).name for s in unplaced) + " (no position)")
        slices = [s for s in slices if s.position is not None and s.orientation is not None]
        if not slices:
            raise DataError(f"{folder}: no slice of the DICOM series has a position")
    positions, spacing, uneven = np.zeros(1), 0.0, []
    if len(slices) > 1:
        positions, spacing, uneven = check_slice_positions(folder, slices, tolerance)
        normal = _slice_normal(slices, folder)
        slices = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
    if uneven and not allow_missing_slices:
        raise DataError(f"{folder}: non-uniform slice spacing in the DICOM series ({len(slices)} slices at "
                        f"{spacing:.4g} mm, but {'; '.join(uneven[:3])}{' ...' if len(uneven) > 3 else ''}): a "
                        f"missing slice? Complete the series, or pass {_FLAG_HINT}")
    names = [s.name for s in slices]
    reader.SetFileNames(names)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    if uneven:  # ITK's "Non uniform sampling or missing slices detected": said above, and repaired below
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{folder}: cannot read DICOM series ({str(e).strip().splitlines()[-1]})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    arr, aff = sitk_to_array(img)
    if uneven:
        arr = _uniform_slices(arr, positions, spacing)
        axis = aff[:3, 2] / np.linalg.norm(aff[:3, 2])
        aff = aff.copy()
        aff[:3, 2] = axis * spacing
        notes.append(f"resampled {len(slices)} unevenly spaced slices onto {arr.shape[2]} at {spacing:.4g} mm "
                     f"(linear; {'; '.join(uneven[:5])}{' ...' if len(uneven) > 5 else ''})")
    note = "; ".join(notes)
    if note:
        log.warning("%s: %s (--allow-missing-slices)", folder, note)
    return check_volume(arr, folder), aff, names, note


def _series_uid(path: str) -> str | None:
    ds, _ = _dicom_header(path)
    uid = getattr(ds, "SeriesInstanceUID", None) if ds is not None else None
    return None if uid is None else str(uid)


@READERS.register("dicom")
def read_dicom(path: str | Path, labels_csv: str | Path | None = None, id_column: str = "subject_id",
               label_column: str | None = "label", allow_missing_slices: bool = False,
               **_: object) -> list[RawSubject]:
    """One subfolder per subject holding a DICOM series; labels from a CSV (ids = folder names).

    Series with non-uniform slice positions, slices without a position or unreadable files are refused
    unless ``allow_missing_slices`` (see :func:`load_dicom_series`)."""
    root = Path(path)
    _require_dir(root, "DICOM")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        raise DataError(f"{root}: no subject subfolders with DICOM series found")
    subjects = []
    for sid, lab, folder in match_labels(folders, Path(labels_csv) if labels_csv else None, id_column,
                                         label_column):
        arr, aff, names, note = load_dicom_series(folder, allow_missing_slices)
        h = hashlib.sha256("".join(sha256_file(n) for n in names).encode()).hexdigest()
        subjects.append(RawSubject(sid, lab, str(folder), arr, aff, h, note=note))
    return subjects


# ----------------------------------------------------------------------------------- 2D images
def load_image(path: Path) -> np.ndarray:
    """Load a 2D image as grayscale (H, W): uint8 for 8-bit files, float32 for 16-bit/float ones."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return np.asarray(im, dtype=np.float32)
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def _class_dirs(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if imgs:
            out[d.name] = imgs
    return out


def _image_sets(root: Path) -> list[tuple[str | None, Path]]:
    """``[(split or None, class-folder root)]``: the folder itself, or Training/Testing-style sets."""
    if _class_dirs(root):
        return [(None, root)]
    subs = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in SPLIT_NAMES]
    sets = [(SPLIT_NAMES[p.name.lower()], p) for p in subs if _class_dirs(p)]
    if not sets:
        raise DataError(f"{root}: no class subfolders with images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sets


@READERS.register("images")
def read_images(path: str | Path, **_: object) -> list[RawSubject]:
    """2D images in one folder per class (PNG/JPG/BMP/TIF, converted to grayscale)."""
    root = Path(path)
    _require_dir(root, "image")
    _warn_ignored(root, "images")
    subjects = []
    for split, folder in _image_sets(root):
        for cls, files in _class_dirs(folder).items():
            for f in files:
                arr = load_image(f)
                sid = str(f.relative_to(root).with_suffix("")).replace("\\", "/")
                subjects.append(RawSubject(sid, cls, str(f), arr, np.eye(4), sha256_file(f), split))
    return subjects


# ----------------------------------------------------------------------------------- detection
def _looks_dicom(folder: Path) -> bool:
    for p in list(folder.iterdir())[:20]:
        if p.is_file():
            if p.suffix.lower() == ".dcm":
                return True
            with open(p, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
    return False


_KIND_TEXT = {"nifti": ".nii[.gz] files", "dicom": "DICOM subfolders", "images": "class folders of images"}


def input_kinds(folder: Path) -> dict[str, list[str]]:
    """The kinds of input directly in ``folder``: ``{"nifti" | "dicom" | "images": [example names]}``."""
    kinds: dict[str, list[str]] = {}
    nii = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES))
    if nii:
        kinds["nifti"] = nii
    subdirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    dicom = [d.name + "/" for d in subdirs if _looks_dicom(d)]
    if dicom:
        kinds["dicom"] = dicom
    classes = [d + "/" for d in _class_dirs(folder)]
    sets = [d.name + "/" for d in subdirs if d.name.lower() in SPLIT_NAMES and _class_dirs(d)]
    images = [c for c in classes if c not in dicom] + sets
    if images:
        kinds["images"] = images
    return kinds


def _examples(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _warn_ignored(folder: Path, reader: str) -> None:
    """One warning per other kind of input in ``folder`` that ``reader`` does not read."""
    for kind, names in input_kinds(folder).items():
        if kind != reader:
            log.warning("%s: the %s reader ignores the %s here (%s); choose what to read with --reader, or move "
                        "them to another folder", folder, reader, _KIND_TEXT[kind], _examples(names))


def detect_reader(path: str | Path) -> str:
    """Guess the reader for ``path`` (the ``auto`` reader's rule).

    participants.tsv -> ``bids``; ``.npz`` -> ``medmnist``; .nii[.gz] files -> ``nifti``; subfolders
    with DICOM files -> ``dicom``; class subfolders with images -> ``images``.  A folder holding more
    than one of the last three kinds is refused (DataError naming them): the reader would silently
    ignore the others.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "medmnist"
        raise DataError(f"{p}: cannot preprocess a single file; point at a folder or a MedMNIST .npz")
    if not p.is_dir():
        raise DataError(f"{p}: input does not exist")
    if (p / "participants.tsv").is_file():
        return "bids"
    kinds = input_kinds(p)
    if len(kinds) > 1:
        found = "; ".join(f"{_KIND_TEXT[k]} ({_examples(v)})" for k, v in kinds.items())
        raise DataError(f"{p}: holds more than one kind of input: {found}; one reader would ignore the others. "
                        f"Choose one with --reader {' or --reader '.join(kinds)}, or move the others to another "
                        "folder")
    if kinds:
        return next(iter(kinds))
    raise DataError(f"{p}: cannot tell the input format (no participants.tsv, .npz, .nii[.gz] files, "
                    "DICOM subfolders or class folders of images); choose one with --reader")


@READERS.register("auto")
def read_auto(path: str | Path, **kwargs: object) -> list[RawSubject]:
    """Detect the layout (BIDS, MedMNIST .npz, class folders, NIfTI folder, DICOM) and read it."""
    return READERS.get(detect_reader(path))(path, **kwargs)


def natural_key(name: str) -> list[object]:
    """Sort key that orders embedded numbers numerically (``"2" < "10"``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
