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
    """

    subject_id: str
    label_name: str | None
    source: str
    array: np.ndarray
    affine: np.ndarray
    source_sha256: str = ""
    split: str | None = None

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
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES):
            files[strip_suffix(p.name, NIFTI_SUFFIXES)] = p
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
def load_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the DICOM series in ``folder`` (the largest one if several) with SimpleITK/GDCM.

    Returns:
        ``(array (X, Y, Z), affine 4x4 RAS, file names)``.
    """
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: no DICOM series found")
    names = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    if len(series) > 1:
        log.warning("%s: %d DICOM series; using the largest (%d files)", folder, len(series), len(names))
    reader.SetFileNames(names)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise DataError(f"{folder}: cannot read DICOM series ({str(e).strip().splitlines()[-1]})") from None
    arr, aff = sitk_to_array(img)
    return check_volume(arr, folder), aff, list(names)


@READERS.register("dicom")
def read_dicom(path: str | Path, labels_csv: str | Path | None = None, id_column: str = "subject_id",
               label_column: str | None = "label", **_: object) -> list[RawSubject]:
    """One subfolder per subject holding a DICOM series; labels from a CSV (ids = folder names)."""
    root = Path(path)
    _require_dir(root, "DICOM")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        raise DataError(f"{root}: no subject subfolders with DICOM series found")
    subjects = []
    for sid, lab, folder in match_labels(folders, Path(labels_csv) if labels_csv else None, id_column,
                                         label_column):
        arr, aff, names = load_dicom_series(folder)
        h = hashlib.sha256("".join(sha256_file(n) for n in names).encode()).hexdigest()
        subjects.append(RawSubject(sid, lab, str(folder), arr, aff, h))
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


def detect_reader(path: str | Path) -> str:
    """Guess the reader for ``path`` (the ``auto`` reader's rule).

    participants.tsv -> ``bids``; ``.npz`` -> ``medmnist``; class subfolders with images ->
    ``images``; .nii[.gz] files -> ``nifti``; subfolders with DICOM files -> ``dicom``.
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
    if _nifti_files(p):
        return "nifti"
    subdirs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if any(_looks_dicom(d) for d in subdirs):
        return "dicom"
    try:
        _image_sets(p)
        return "images"
    except DataError:
        pass
    raise DataError(f"{p}: cannot tell the input format (no participants.tsv, .npz, .nii[.gz] files, "
                    "DICOM subfolders or class folders of images); choose one with --reader")


@READERS.register("auto")
def read_auto(path: str | Path, **kwargs: object) -> list[RawSubject]:
    """Detect the layout (BIDS, MedMNIST .npz, class folders, NIfTI folder, DICOM) and read it."""
    return READERS.get(detect_reader(path))(path, **kwargs)


def natural_key(name: str) -> list[object]:
    """Sort key that orders embedded numbers numerically (``"2" < "10"``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
