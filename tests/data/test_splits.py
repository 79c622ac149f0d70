"""Splits: stratification, disjointness, determinism, tiny classes."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from synthmed.data.splits import make_splits
from synthmed.errors import DataError

IDS = [f"s{i:02d}" for i in range(50)]
LABELS = ["depr"] * 35 + ["control"] * 15


def _check_partition(sp: dict, ids: list[str]) -> None:
    test = set(sp["test"])
    fold_ids = [s for f in sp["folds"] for s in f]
    assert len(fold_ids) == len(set(fold_ids)), "folds overlap"
    assert not test & set(fold_ids), "test leaks into folds"
    assert set(fold_ids) | test == set(ids)


def test_stratified_partition() -> None:
    sp = make_splits(IDS, LABELS, n_folds=5, test_fraction=0.2, seed=0)
    _check_partition(sp, IDS)
    assert sp["stratified"] and sp["n_folds"] == 5 and len(sp["test"]) == 10
    lab = dict(zip(IDS, LABELS, strict=True))
    assert Counter(lab[s] for s in sp["test"]) == {"depr": 7, "control": 3}
    for fold in sp["folds"]:
        c = Counter(lab[s] for s in fold)
        assert c["depr"] in (5, 6) and c["control"] in (2, 3)  # 28 / 5 and 12 / 5
    assert set(sp) == {"seed", "n_folds", "test_fraction", "stratified", "test", "folds"}


def test_deterministic_under_seed() -> None:
    a = make_splits(IDS, LABELS, seed=3)
    assert a == make_splits(IDS, LABELS, seed=3)
    assert a["test"] != make_splits(IDS, LABELS, seed=4)["test"]


def test_unlabelled_is_unstratified() -> None:
    sp = make_splits(IDS, None, n_folds=4, test_fraction=0.1)
    _check_partition(sp, IDS)
    assert not sp["stratified"] and sp["n_folds"] == 4 and len(sp["test"]) == 5


def test_tiny_class_reduces_folds(caplog: pytest.LogCaptureFixture) -> None:
    ids = [f"s{i}" for i in range(12)]
    labels = ["a"] * 9 + ["b"] * 3
    with caplog.at_level(logging.WARNING):
        sp = make_splits(ids, labels, n_folds=5, test_fraction=0.0)
    _check_partition(sp, ids)
    assert sp["n_folds"] == 3 and sp["stratified"] and "3 folds instead of 5" in caplog.text


def test_singleton_class_falls_back_to_unstratified(caplog: pytest.LogCaptureFixture) -> None:
    ids = [f"s{i}" for i in range(10)]
    labels = ["a"] * 9 + ["b"]
    with caplog.at_level(logging.WARNING):
        sp = make_splits(ids, labels, n_folds=3, test_fraction=0.2)
    _check_partition(sp, ids)
    assert not sp["stratified"] and caplog.text


def test_fixed_test_set() -> None:
    sp = make_splits(IDS, LABELS, n_folds=3, fixed_test=IDS[:7])
    assert sp["test"] == IDS[:7] and sp["test_fraction"] == pytest.approx(7 / 50)
    _check_partition(sp, IDS)
    with pytest.raises(DataError, match="not among the subjects"):
        make_splits(IDS, LABELS, fixed_test=["nobody"])


def test_impossible_and_bad_arguments() -> None:
    with pytest.raises(DataError, match="cannot make folds"):
        make_splits(["a"], ["x"])
    with pytest.raises(DataError, match="duplicate subject ids: a"):
        make_splits(["a", "a", "b"], None)
    with pytest.raises(DataError, match="n_folds"):
        make_splits(IDS, LABELS, n_folds=1)
    sp = make_splits(["a", "b", "c"], ["x", "y", "x"], n_folds=5, test_fraction=0.3)
    _check_partition(sp, ["a", "b", "c"])
