"""Training-set compositions (paper 000, Table 1) and the cross-validation partition.

A composition says, per class, how many real and how many synthetic training images a classifier
sees, relative to the class's real training count ``n_c`` in the fold:
``real = ceil(real_fraction * n_c)`` and ``synthetic = total_multiple * n_c - real``.  With paper
000's 61 patients / 55 controls this gives Table 1: mixed (small) 31/30 and 28/27, mixed (large)
61/305 and 55/275.  Table 1 lists synthetic (large) as 367 / 328, one image fewer in total than
mixed (large) (695 vs 696) although the text says the size "is matched"; here it is 6 * n_c per
class (366 / 330), the same size and class balance as mixed (large).

Validation and test sets are always real only; no composition touches them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthmed.errors import ConfigError, DataError


@dataclass(frozen=True)
class Composition:
    """One training-set composition.

    Attributes:
        name: the config name.
        real_fraction: share of each class's real training images kept (rounded up).
        total_multiple: training images per class as a multiple of its real training count;
            ``math.inf`` for the "infinite" set (a fresh synthetic batch every iteration).
        augment: apply classic augmentation to the real images (paper 000's augmented baseline).
        title: the row name of paper 000's Table 1.
    """

    name: str
    real_fraction: float
    total_multiple: float
    augment: bool = False
    title: str = ""

    @property
    def infinite(self) -> bool:
        return math.isinf(self.total_multiple)

    @property
    def uses_synthetic(self) -> bool:
        return self.infinite or self.total_multiple > self.real_fraction

    @property
    def synthetic_only(self) -> bool:
        return self.real_fraction == 0

    def counts(self, n_real: int) -> tuple[int, int]:
        """(real, synthetic) training images of a class with ``n_real`` real training images
        (synthetic is -1 for the infinite set)."""
        real = math.ceil(self.real_fraction * n_real - 1e-9)
        if self.infinite:
            return real, -1
        return real, int(round(self.total_multiple * n_real)) - real


#: The compositions of paper 000, Table 1, plus its "infinite" synthetic set.
COMPOSITIONS: dict[str, Composition] = {c.name: c for c in (
    Composition("real", 1.0, 1.0, title="Real (small)"),
    Composition("augmented", 1.0, 1.0, augment=True, title="Augmented (small)"),
    Composition("mixed-small", 0.5, 1.0, title="Mixed (small)"),
    Composition("mixed-large", 1.0, 6.0, title="Mixed (large)"),
    Composition("synthetic-small", 0.0, 1.0, title="Synthetic (small)"),
    Composition("synthetic-large", 0.0, 6.0, title="Synthetic (large)"),
    Composition("synthetic-infinite", 0.0, math.inf, title="Synthetic (infinite)"),
)}

#: The same-size compositions compared by paper 000's first ANOVA (F(3,16) over 4 sets, 5 folds).
SMALL = ("real", "augmented", "mixed-small", "synthetic-small")


def get_composition(name: str) -> Composition:
    if name not in COMPOSITIONS:
        raise ConfigError(f"unknown composition {name!r}; expected any of: {', '.join(COMPOSITIONS)}")
    return COMPOSITIONS[name]


def composition_counts(name: str, real_counts: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Per class: (real, synthetic) training images of composition ``name``."""
    comp = get_composition(name)
    return {c: comp.counts(n) for c, n in real_counts.items()}


# ---------------------------------------------------------------------------------------------
# the partition


def subsample(ids: Sequence[str], labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Row positions of a seeded, stratified subsample of ``n`` subjects (all when n <= 0 or n >= len)."""
    from sklearn.model_selection import train_test_split

    if n <= 0 or n >= len(ids):
        return list(range(len(ids)))
    keep, _ = train_test_split(np.arange(len(ids)), train_size=n, random_state=seed, stratify=np.asarray(labels))
    return sorted(int(i) for i in keep)


def make_partition(subject_ids: Sequence[str], labels: Sequence[int], n_folds: int = 5,
                   seed: int = 0) -> dict[str, Any]:
    """Seeded stratified k-fold partition into train / validation / test per fold (paper 000: 60/20/20).

    The subjects are cut into ``n_folds`` stratified parts (scikit-learn's ``StratifiedKFold``);
    fold ``k`` tests on part ``k``, validates on part ``k + 1`` (mod k) and trains on the rest, so
    every subject is tested exactly once.

    Returns:
        ``{"seed", "n_folds", "parts": [[ids]...], "folds": [{"train", "val", "test"}...]}``.

    Raises:
        DataError: when a class has fewer members than folds.
    """
    from sklearn.model_selection import StratifiedKFold

    if n_folds < 3:
        raise ConfigError(f"config key 'folds': need at least 3 folds (train/validation/test), got {n_folds}")
    counts = Counter(int(v) for v in labels)
    if len(counts) < 2:
        raise DataError(f"the utility protocol needs at least two classes; found {dict(counts)}")
    if min(counts.values()) < n_folds:
        raise DataError(f"the smallest class has {min(counts.values())} subjects, fewer than the {n_folds} folds "
                        f"(class counts {dict(sorted(counts.items()))}); lower 'folds'")
    ids = list(subject_ids)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    parts = [sorted(ids[i] for i in test) for _, test in skf.split(np.zeros(len(ids)), np.asarray(labels))]
    folds = []
    for k in range(n_folds):
        val = (k + 1) % n_folds
        train = sorted(s for j, p in enumerate(parts) if j not in (k, val) for s in p)
        folds.append({"train": train, "val": parts[val], "test": parts[k]})
    return {"seed": seed, "n_folds": n_folds, "parts": parts, "folds": folds}
