"""Seeded, stratified k-fold splits with a held-out test set (scikit-learn).

``splits.json`` holds::

    {"seed": 0, "n_folds": 5, "test_fraction": 0.2, "stratified": true,
     "test": [ids], "folds": [[ids of validation fold 0], ...]}

The folds partition every non-test id.  When a class is too small for the requested number of
folds the number of folds is reduced (with a warning); when stratification is impossible the split
falls back to an unstratified one (with a warning).  Only fewer than two non-test subjects is an
error.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthmed.errors import DataError

log = logging.getLogger(__name__)


def _n_test(n: int, test_fraction: float) -> int:
    if test_fraction <= 0:
        return 0
    return int(min(n - 2, max(1, round(test_fraction * n))))


def _split_test(ids: list[str], labels: list[Any] | None, test_fraction: float,
                seed: int) -> tuple[list[str], bool]:
    from sklearn.model_selection import train_test_split

    n_test = _n_test(len(ids), test_fraction)
    if n_test <= 0:
        return [], labels is not None
    if labels is not None:
        counts = Counter(labels)
        if min(counts.values()) >= 2 and n_test >= len(counts) and len(ids) - n_test >= len(counts):
            _, test = train_test_split(ids, test_size=n_test, random_state=seed, stratify=labels)
            return list(test), True
        log.warning("a class has fewer than 2 members or the test set is too small for %d classes; "
                    "the test set is drawn without stratification", len(counts))
    _, test = train_test_split(ids, test_size=n_test, random_state=seed)
    return list(test), False


def _folds(ids: list[str], labels: list[Any] | None, n_folds: int, seed: int) -> tuple[list[list[str]], bool]:
    from sklearn.model_selection import KFold, StratifiedKFold

    k = min(n_folds, len(ids))
    if k < n_folds:
        log.warning("only %d non-test subjects; using %d folds instead of %d", len(ids), k, n_folds)
    stratified = False
    if labels is not None:
        smallest = min(Counter(labels).values())
        if smallest >= 2:
            if smallest < k:
                log.warning("the smallest class has %d non-test members; using %d folds instead of %d",
                            smallest, smallest, k)
                k = smallest
            stratified = True
        else:
            log.warning("a class has a single non-test member; folds are not stratified")
    if stratified:
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = [val for _, val in splitter.split(np.zeros(len(ids)), labels if stratified else None)]
    return [[ids[i] for i in sorted(p)] for p in parts], stratified


def make_splits(subject_ids: Sequence[str], labels: Sequence[Any] | None, n_folds: int = 5,
                test_fraction: float = 0.2, seed: int = 0,
                fixed_test: Sequence[str] | None = None) -> dict[str, Any]:
    """Make a seeded split: a held-out test set plus k validation folds over the rest.

    Args:
        subject_ids: N unique ids.
        labels: N class labels (ints or names) for stratification; None (or any None entry)
            gives an unstratified split.
        n_folds: requested number of folds (>= 2; reduced when classes are too small).
        test_fraction: fraction of subjects held out for testing (0 for none); ignored when
            ``fixed_test`` is given.
        seed: random seed; the same inputs and seed always give the same split.
        fixed_test: ids of an official test set (e.g. MedMNIST's) to use as is.

    Returns:
        ``{"seed", "n_folds", "test_fraction", "stratified", "test", "folds"}``; ids keep the
        input order within each list.

    Raises:
        DataError: duplicate or unknown ids, bad arguments, or fewer than 2 non-test subjects.
    """
    ids = [str(s) for s in subject_ids]
    if len(set(ids)) != len(ids):
        dup = sorted(s for s, c in Counter(ids).items() if c > 1)
        raise DataError(f"duplicate subject ids: {', '.join(dup[:10])}")
    if labels is not None and len(labels) != len(ids):
        raise DataError(f"{len(labels)} labels for {len(ids)} subject ids")
    if n_folds < 2 or not 0.0 <= test_fraction < 1.0:
        raise DataError(f"need n_folds >= 2 and 0 <= test_fraction < 1, got {n_folds} and {test_fraction}")
    labs = None if labels is None or any(x is None for x in labels) else [str(x) for x in labels]
    if fixed_test is not None:
        unknown = sorted(set(map(str, fixed_test)) - set(ids))
        if unknown:
            raise DataError(f"fixed test ids not among the subjects: {', '.join(unknown[:10])}")
        test_set, strat_test = set(map(str, fixed_test)), labs is not None
    else:
        test, strat_test = _split_test(ids, labs, test_fraction, seed)
        test_set = set(test)
    rest = [i for i, s in enumerate(ids) if s not in test_set]
    if len(rest) < 2:
        raise DataError(f"only {len(rest)} subject(s) left after holding out the test set; cannot make folds")
    folds, strat_folds = _folds([ids[i] for i in rest], None if labs is None else [labs[i] for i in rest],
                                n_folds, seed)
    return {
        "seed": int(seed),
        "n_folds": len(folds),
        "test_fraction": float(len(test_set) / len(ids)) if fixed_test is not None else float(test_fraction),
        "stratified": bool(strat_test and strat_folds),
        "test": [s for s in ids if s in test_set],
        "folds": folds,
    }
