"""Derived cohorts of the protocol: a resampled / subsampled copy of the real data, and the
datasets of paper 004's benchmark points (fewer classes, fewer subjects per class, another
resolution), each a complete prepared dataset folder written atomically."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.prepared import PreparedDataset, Record, load_prepared, write_prepared
from synthmed.errors import DataError


def resize_images(images: np.ndarray, size: int, batch: int = 64) -> np.ndarray:
    """(N, 1, *spatial) -> (N, 1, size, ..., size): area averaging when shrinking by an integer
    factor, (tri)linear interpolation otherwise; the result stays in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    spatial = images.shape[2:]
    if all(s == size for s in spatial):
        return np.asarray(images, dtype=np.float32)
    shrink = all(s % size == 0 for s in spatial) and all(s >= size for s in spatial)
    mode = "area" if shrink else ("trilinear" if len(spatial) == 3 else "bilinear")
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.asarray(images[i:i + batch], dtype=np.float32))
        kw: dict[str, Any] = {} if mode == "area" else {"align_corners": False}
        out.append(F.interpolate(x, size=(size,) * len(spatial), mode=mode, **kw).clamp_(-1, 1).numpy())
    return np.concatenate(out).astype(np.float32)


def _resized_meta(ds: PreparedDataset, size: int) -> dict[str, Any]:
    meta = {k: v for k, v in ds.meta.items() if k not in ("shape", "n", "images_sha256", "format_version",
                                                          "synthmed_version", "findings")}
    if size and any(s != size for s in ds.shape):
        factors = [s / size for s in ds.shape]
        affine = ds.affine.copy()
        for j, f in enumerate(factors):  # voxel j grows by f; keep the field of view's corner
            affine[:3, j] *= f
        meta["affine"] = affine
        meta["spacing"] = [float(sp) * f for sp, f in zip(ds.meta.get("spacing") or [1.0] * len(factors),
                                                          factors, strict=False)]
    return meta


def balanced_rows(labels: np.ndarray, per_class: int, classes: list[int], seed: int) -> np.ndarray:
    """A seeded subsample of ``per_class`` rows of every class in ``classes`` (all rows when 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        have = np.flatnonzero(labels == c)
        if per_class and per_class > len(have):
            raise DataError(f"class {c} has {len(have)} subjects, fewer than the {per_class} per class asked for")
        rows.append(np.sort(rng.choice(have, per_class, replace=False)) if per_class else have)
    return np.sort(np.concatenate(rows))


def most_frequent_classes(labels: np.ndarray, k: int) -> list[int]:
    """The ``k`` most frequent labels (ties: the lower label first), in label order."""
    counts = Counter(int(v) for v in labels)
    if k > len(counts):
        raise DataError(f"asked for {k} classes, the data has {len(counts)}")
    return sorted(sorted(counts, key=lambda c: (-counts[c], c))[:k])


def write_derived(ds: PreparedDataset, rows: np.ndarray, out: Path, size: int = 0, classes: list[int] | None = None,
                  splits: dict[str, Any] | None = None, note: str = "") -> PreparedDataset:
    """A prepared dataset of ``rows`` of ``ds`` (resampled to ``size``^d when given), labels renumbered
    0..k-1 over ``classes`` (default: every label present), with ``splits`` (default: the prepared
    splits restricted to the kept subjects).  Written atomically (``dataset.json`` last)."""
    labels = ds.labels
    if labels is None:
        raise DataError(f"{ds.root}: the protocol needs labels; prepare the data with --label-column")
    rows = np.asarray(rows, dtype=np.int64)
    classes = sorted({int(v) for v in labels[rows]}) if classes is None else list(classes)
    new = {c: i for i, c in enumerate(classes)}
    names = [ds.classes[c] if c < len(ds.classes) else str(c) for c in classes]
    images = np.asarray(ds.images[rows], dtype=np.float32)
    if size:
        images = resize_images(images, size)
    recs = [Record(r.subject_id, new[int(labels[i])], names[new[int(labels[i])]], r.source, r.source_sha256)
            for i, r in ((int(i), ds.records[int(i)]) for i in rows)]
    ids = [r.subject_id for r in recs]
    if splits is None and ds.splits is not None:
        keep = set(ids)
        splits = {**ds.splits, "test": [s for s in ds.splits["test"] if s in keep],
                  "folds": [[s for s in f if s in keep] for f in ds.splits["folds"]]}
        if not splits["test"] or any(not f for f in splits["folds"]):
            from synthmed.data.splits import make_splits

            splits = make_splits(ids, [r.label for r in recs], n_folds=len(ds.splits["folds"]),
                                 test_fraction=0.2, seed=int(ds.splits.get("seed", 0)))
    meta = _resized_meta(ds, size)
    meta.update(classes=names, derived_from={"path": str(ds.root.resolve()),
                                             "images_sha256": ds.meta.get("images_sha256"), "note": note})
    write_prepared(out, images, recs, meta, splits)
    return load_prepared(out)


def dataset_summary(ds: PreparedDataset) -> dict[str, Any]:
    labels = ds.labels if ds.labels is not None else np.zeros(0, dtype=np.int64)
    return {"path": str(ds.root.resolve()), "n": len(ds), "shape": list(ds.shape),
            "classes": ds.classes, "class_counts": {n: int(np.sum(labels == c)) for c, n in enumerate(ds.classes)},
            "images_sha256": ds.meta.get("images_sha256")}


def is_complete(path: Path) -> bool:
    """A prepared folder whose ``dataset.json`` (written last) exists and parses."""
    try:
        json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return True
