"""Derived cohorts of the protocol: resampling, sweep points (classes, samples, held-out fold), pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from protocol_helpers import make_multiclass, tiny_raw

from synthmed.data.prepared import load_prepared
from synthmed.protocol import build_protocol_config
from synthmed.protocol.data import resize_images
from synthmed.protocol.sweeps import point_dataset
from synthmed.utility.compositions import make_partition


def test_resize_area_is_block_mean_and_range_kept() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 1, 8, 8, 8)).astype(np.float32)
    y = resize_images(x, 4)
    want = x.reshape(3, 1, 4, 2, 4, 2, 4, 2).mean(axis=(3, 5, 7))
    assert y.shape == (3, 1, 4, 4, 4) and np.allclose(y, want, atol=1e-6)
    up = resize_images(x, 12)
    assert up.shape == (3, 1, 12, 12, 12) and up.min() >= -1 and up.max() <= 1
    assert np.array_equal(resize_images(x, 8), x)


@pytest.mark.parametrize(("sweep", "value"), [("classes", 2), ("samples_per_class", 4), ("resolution", 8)])
def test_point_dataset(sweep: str, value: int, tmp_path: Path) -> None:
    prep = make_multiclass(tmp_path / "prep", [10, 6, 8])
    ds = load_prepared(prep)
    cfg = build_protocol_config(tiny_raw(prep, sweeps={"seeds": [0], "folds": 3, "samples_per_class": [4]}))
    d = point_dataset(ds, cfg, sweep, value, seed=5, out=tmp_path / "point")
    counts = np.bincount(d.labels).tolist()
    if sweep == "classes":  # the two most frequent classes, renumbered
        assert d.classes == ["c0", "c2"] and counts == [10, 8]
    elif sweep == "samples_per_class":
        assert d.classes == ["c0", "c1", "c2"] and counts == [4, 4, 4]
    else:
        assert d.shape == (8, 8, 8) and counts == [10, 6, 8]
        assert np.allclose(np.diag(d.affine)[:3], 4.0) and d.meta["spacing"] == [4.0, 4.0, 4.0]
    # the held-out test set is fold 0's validation + test part of the utility partition (same seed)
    part = make_partition(d.subject_ids, d.labels.tolist(), 3, 5)
    assert sorted(d.splits["test"]) == sorted(part["folds"][0]["val"] + part["folds"][0]["test"])
    trainval = sorted(d.subject_ids[i] for i in d.indices("trainval"))
    assert trainval == sorted(part["folds"][0]["train"])
    # reused when complete and identical, not rewritten
    mtime = (tmp_path / "point" / "images.npy").stat().st_mtime_ns
    point_dataset(ds, cfg, sweep, value, seed=5, out=tmp_path / "point")
    assert (tmp_path / "point" / "images.npy").stat().st_mtime_ns == mtime
