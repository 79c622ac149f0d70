"""The prepared-dataset folder: what ``synthmed preprocess`` writes and everything else reads.

Layout of a prepared folder::

    images.npy     float32 (N, 1, *spatial), intensities in [-1, 1]
    manifest.csv   index, subject_id, label, label_name, source, source_sha256 (and ``note``, what
                   ``preprocess --allow-missing-slices`` repaired, when any subject has one)
    dataset.json   spatial_dims, shape, spacing, affine (4x4, the prepared space), classes,
                   preprocessing parameters, images_sha256, synthmed version
    splits.json    seeded stratified k folds plus a held-out test set (see ``splits.py``)
    labels_multi.npy  optional: uint8 (N, K) 0/1 matrix of K binary findings per image (multi-label
                   conditioning, paper 004); their names are ``findings`` in dataset.json
                   (:func:`attach_multi_labels`).  Folders without it are single-label as before.

The images file is written last-but-one and the folder is only complete once ``dataset.json``
exists: every file is written atomically, so a crash never leaves a readable half dataset.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.errors import DataError
from synthmed.io_utils import atomic_path, sha256_file, write_json_atomic

FORMAT_VERSION = 1
MULTI_LABELS_FILE = "labels_multi.npy"
MANIFEST_COLUMNS = ["index", "subject_id", "label", "label_name", "source", "source_sha256"]


@dataclass
class Record:
    """One prepared subject."""

    subject_id: str
    label: int | None
    label_name: str
    source: str
    source_sha256: str
    #: what the reader repaired (``preprocess --allow-missing-slices``); a ``note`` column when any has one
    note: str = ""


@dataclass
class PreparedDataset:
    """A prepared dataset loaded from disk.

    Attributes:
        root: the folder.
        images: (N, 1, *spatial) float32 in [-1, 1] (memory-mapped).
        records: one per image, same order.
        meta: the content of ``dataset.json``.
        splits: the content of ``splits.json`` (or None if absent).
    """

    root: Path
    images: np.ndarray
    records: list[Record]
    meta: dict[str, Any]
    splits: dict[str, Any] | None = None
    _labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def spatial_dims(self) -> int:
        return int(self.meta["spatial_dims"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.meta["shape"])

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.meta["affine"], dtype=np.float64)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes") or [])

    @property
    def labels(self) -> np.ndarray | None:
        """(N,) int64 labels, or None when the dataset is unlabelled."""
        if any(r.label is None for r in self.records):
            return None
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def findings(self) -> list[str]:
        """Names of the K binary findings of a multi-label dataset ([] otherwise)."""
        return list(self.meta.get("findings") or [])

    @property
    def multi_labels(self) -> np.ndarray | None:
        """(N, K) uint8 0/1 matrix of findings (``labels_multi.npy``), or None when absent."""
        path = self.root / MULTI_LABELS_FILE
        if not path.is_file():
            return None
        try:
            m = np.load(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the multi-label matrix ({e})") from None
        if m.ndim != 2 or m.shape[0] != len(self) or m.shape[1] != len(self.findings) or not np.isin(m, (0, 1)).all():
            raise DataError(f"{path}: expected a ({len(self)}, {len(self.findings)}) matrix of 0/1 (one column per "
                            f"finding in dataset.json), got shape {m.shape}")
        return m.astype(np.uint8)

    @property
    def subject_ids(self) -> list[str]:
        return [r.subject_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def indices(self, subset: str = "all", fold: int = 0, label: str | int | None = None) -> np.ndarray:
        """Row indices of a subset: ``all``, ``test``, ``trainval`` (all but test),
        ``train`` or ``val`` (fold ``fold`` of the saved k folds within trainval); with ``label``
        (a class name or integer label) only that class's rows."""
        if label is not None and label != "":
            return self._with_label(self.indices(subset, fold), label)
        if subset == "all":
            return np.arange(len(self))
        if self.splits is None:
            raise DataError(f"{self.root / 'splits.json'}: no split file; cannot select subset {subset!r}")
        id_to_row = {sid: i for i, sid in enumerate(self.subject_ids)}
        test = set(self.splits["test"])
        folds = self.splits["folds"]
        if subset == "test":
            ids = [s for s in self.subject_ids if s in test]
        elif subset == "trainval":
            ids = [s for s in self.subject_ids if s not in test]
        elif subset in ("train", "val"):
            if not 0 <= fold < len(folds):
                raise DataError(f"fold {fold} does not exist; {self.root / 'splits.json'} has {len(folds)} folds")
            val = set(folds[fold])
            ids = [s for s in self.subject_ids if s not in test and ((s in val) == (subset == "val"))]
        else:
            raise DataError(f"unknown subset {subset!r}; expected all, test, trainval, train or val")
        return np.array([id_to_row[s] for s in ids], dtype=np.int64)

    def label_index(self, label: str | int) -> int:
        """The integer label of a class name (or of an integer label given as text)."""
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        try:
            value = int(label)
        except (TypeError, ValueError):
            value = -1
        if self.labels is None or value not in set(self.labels.tolist()):
            known = ", ".join(self.classes) or "(unlabelled dataset)"
            raise DataError(f"{self.root}: no class {label!r}; classes: {known}")
        return value

    def _with_label(self, rows: np.ndarray, label: str | int) -> np.ndarray:
        value = self.label_index(label)
        assert self.labels is not None
        return rows[self.labels[rows] == value]


def write_prepared(
    out_dir: str | Path,
    images: np.ndarray,
    records: list[Record],
    meta: dict[str, Any],
    splits: dict[str, Any] | None,
) -> Path:
    """Write a prepared dataset folder atomically (file by file, ``dataset.json`` last).

    Args:
        out_dir: destination folder (created).
        images: (N, 1, *spatial) float array in [-1, 1].
        records: N records in the same order.
        meta: must contain ``spatial_dims``, ``spacing`` and ``affine``; ``shape``, ``classes``,
            hashes and version are filled in here.
        splits: the split dictionary from ``splits.make_splits`` (or None).
    """
    out = Path(out_dir)
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim not in (4, 5) or images.shape[1] != 1:
        raise DataError(f"prepared images must be (N, 1, *spatial) with 2 or 3 spatial dims, got {images.shape}")
    if len(records) != images.shape[0]:
        raise DataError(f"{len(records)} records for {images.shape[0]} images")
    if not np.isfinite(images).all():
        raise DataError("prepared images contain NaN or Inf")
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").unlink(missing_ok=True)  # marks the folder incomplete while we write
    with atomic_path(out / "images.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    with atomic_path(out / "manifest.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            notes = any(r.note for r in records)
            w.writerow(MANIFEST_COLUMNS + (["note"] if notes else []))
            for i, r in enumerate(records):
                w.writerow([i, r.subject_id, "" if r.label is None else r.label, r.label_name, r.source, r.source_sha256]
                           + ([r.note] if notes else []))
    if splits is not None:
        write_json_atomic(out / "splits.json", splits)
    full = dict(meta)
    full.update(
        format_version=FORMAT_VERSION,
        synthmed_version=__version__,
        spatial_dims=int(images.ndim - 2),
        shape=list(images.shape[2:]),
        n=int(images.shape[0]),
        images_sha256=sha256_file(out / "images.npy"),
    )
    full.setdefault("classes", [])
    full["affine"] = np.asarray(full["affine"], dtype=float).tolist()
    write_json_atomic(out / "dataset.json", full)
    return out


def load_prepared(path: str | Path, mmap: bool = True) -> PreparedDataset:
    """Load a prepared dataset folder, checking that it is complete and consistent."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: prepared dataset folder does not exist (run `synthmed preprocess` first)")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{root}: not a prepared dataset (no dataset.json); run `synthmed preprocess INPUT --out {root}`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: corrupt JSON ({e})") from None
    try:
        images = np.load(root / "images.npy", mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as e:
        raise DataError(f"{root / 'images.npy'}: cannot read prepared images ({e})") from None
    if list(images.shape[2:]) != list(meta.get("shape", [])):
        raise DataError(f"{root / 'images.npy'}: shape {images.shape} does not match dataset.json shape {meta.get('shape')}")
    records: list[Record] = []
    try:
        with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                lab = row["label"]
                records.append(Record(row["subject_id"], int(lab) if lab != "" else None, row["label_name"],
                                      row["source"], row["source_sha256"], row.get("note") or ""))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{root / 'manifest.csv'}: cannot read manifest ({e})") from None
    if len(records) != images.shape[0]:
        raise DataError(f"{root / 'manifest.csv'}: {len(records)} rows but images.npy holds {images.shape[0]} images")
    splits = None
    if (root / "splits.json").is_file():
        splits = json.loads((root / "splits.json").read_text(encoding="utf-8"))
    return PreparedDataset(root=root, images=images, records=records, meta=meta, splits=splits)


def attach_multi_labels(root: str | Path, labels_csv: str | Path, id_column: str = "subject_id",
                        columns: list[str] | None = None) -> Path:
    """Add a multi-label matrix (several binary findings per image) to a prepared dataset.

    Reads ``labels_csv`` (one row per subject, ``id_column`` plus one 0/1 column per finding; all columns
    but the id when ``columns`` is None), writes ``labels_multi.npy`` (N, K) in the prepared order and
    the finding names into ``dataset.json`` (``findings``), both atomically.  Images and single labels
    are untouched, so the folder stays readable by every older reader.

    Raises:
        DataError: naming the file and what is wrong (missing column, subject or non-0/1 value).
    """
    ds = load_prepared(root)
    path = Path(labels_csv)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as e:
        raise DataError(f"{path}: cannot read the label table ({e})") from None
    if id_column not in header:
        raise DataError(f"{path}: no id column {id_column!r}; columns: {', '.join(header)}")
    cols = columns if columns is not None else [c for c in header if c != id_column]
    missing = [c for c in cols if c not in header]
    if not cols or missing:
        raise DataError(f"{path}: finding column(s) {', '.join(missing) or '(none given)'} not found; columns: {', '.join(header)}")
    by_id = {r[id_column]: r for r in rows}
    matrix = np.zeros((len(ds), len(cols)), dtype=np.uint8)
    for i, sid in enumerate(ds.subject_ids):
        if sid not in by_id:
            raise DataError(f"{path}: no row for subject {sid!r} of {ds.root}")
        for j, c in enumerate(cols):
            v = by_id[sid][c].strip()
            if v not in ("0", "1"):
                raise DataError(f"{path}: column {c!r} of subject {sid!r} is {v!r}; expected 0 or 1")
            matrix[i, j] = int(v)
    with atomic_path(ds.root / MULTI_LABELS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, matrix)
    meta = dict(ds.meta)
    meta["findings"] = list(cols)
    write_json_atomic(ds.root / "dataset.json", meta)
    return ds.root
