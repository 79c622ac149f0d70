"""Training-set compositions against paper 000 Table 1, the 60/20/20 partition, classic augmentation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from synthmed.augment.classic import ClassicAugment
from synthmed.errors import DataError
from synthmed.utility.compositions import COMPOSITIONS, composition_counts, make_partition, subsample

#: Paper 000 Table 1 with 61 patients (label 1) and 55 controls (label 0): (real, synthetic).
TABLE_1 = {
    "real": {1: (61, 0), 0: (55, 0)},
    "augmented": {1: (61, 0), 0: (55, 0)},
    "mixed-small": {1: (31, 30), 0: (28, 27)},
    "mixed-large": {1: (61, 305), 0: (55, 275)},
    "synthetic-small": {1: (0, 61), 0: (0, 55)},
}


@pytest.mark.parametrize("name", list(TABLE_1))
def test_table_1_sizes_and_balance(name: str) -> None:
    assert composition_counts(name, {1: 61, 0: 55}) == TABLE_1[name]


def test_synthetic_large_matches_mixed_large() -> None:
    """Table 1 prints 367 / 328 (695 in total) although the text says the size is matched to mixed
    (large) (696); we use 6 n_c per class, i.e. mixed (large)'s size and class balance."""
    large = composition_counts("synthetic-large", {1: 61, 0: 55})
    mixed = composition_counts("mixed-large", {1: 61, 0: 55})
    assert large == {1: (0, 366), 0: (0, 330)}
    assert {c: sum(v) for c, v in large.items()} == {c: sum(v) for c, v in mixed.items()}
    assert abs(sum(sum(v) for v in large.values()) - (367 + 328)) == 1


def test_infinite_and_flags() -> None:
    inf = COMPOSITIONS["synthetic-infinite"]
    assert inf.infinite and inf.synthetic_only and inf.counts(10) == (0, -1)
    assert COMPOSITIONS["augmented"].augment and not COMPOSITIONS["real"].uses_synthetic
    assert COMPOSITIONS["mixed-small"].uses_synthetic and not COMPOSITIONS["mixed-small"].synthetic_only


def test_partition_is_stratified_60_20_20_and_tests_everyone_once() -> None:
    ids = [f"s{i:03d}" for i in range(193)]
    labels = [1] * 102 + [0] * 91  # paper 000's cohort: 193 subjects
    part = make_partition(ids, labels, n_folds=5, seed=3)
    lab = dict(zip(ids, labels, strict=True))
    tested = Counter()
    for fold in part["folds"]:
        tr, va, te = set(fold["train"]), set(fold["val"]), set(fold["test"])
        assert not (tr & va) and not (tr & te) and not (va & te) and len(tr | va | te) == 193
        assert 0.58 <= len(tr) / 193 <= 0.62 and 0.18 <= len(te) / 193 <= 0.22 and 0.18 <= len(va) / 193 <= 0.22
        for s in (tr, va, te):  # stratified: the class share stays within one subject of the cohort's
            share = sum(lab[i] for i in s) / len(s)
            assert abs(share - 102 / 193) < 1.5 / len(s) + 1e-9
        tested.update(te)
    assert set(tested.values()) == {1} and len(tested) == 193
    assert make_partition(ids, labels, 5, 3) == part and make_partition(ids, labels, 5, 4) != part


def test_partition_errors_and_subsample() -> None:
    with pytest.raises(DataError, match="fewer than the 5 folds"):
        make_partition([f"s{i}" for i in range(12)], [0] * 9 + [1] * 3, 5)
    keep = subsample([f"s{i}" for i in range(100)], [0] * 70 + [1] * 30, 20, seed=0)
    assert len(keep) == 20 and sum(1 for i in keep if i >= 70) == 6


def test_classic_augment_probabilities_and_ranges() -> None:
    x = torch.rand(64, 1, 16, 16, 16) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(ClassicAugment(probability=0.0)(x, gen), x)
    # intensity only: factor in [0.7, 1] on the [0, 1] intensity, background -1 stays -1
    aug = ClassicAugment(probability=1.0, crop_ratio=0.0, translation_ratio=0.0)
    bg = torch.full((4, 1, 8, 8), -1.0)
    assert torch.equal(aug(bg, gen), bg)
    x_bright = x.abs() * 0.5 + 0.4  # away from -1, where the ratio below is ill-conditioned
    f = ((aug(x_bright, gen) + 1) / (x_bright + 1)).flatten(1)
    assert torch.allclose(f.min(1).values, f.max(1).values, atol=1e-4)
    assert (f[:, 0] >= 0.7 - 1e-6).all() and (f[:, 0] <= 1.0 + 1e-6).all()
    # each operation applies to about a third of the images
    changed = (ClassicAugment()(x, gen) != x).flatten(1).any(1).float().mean()
    assert 0.5 < float(changed) < 0.9  # 1 - (2/3)^3 = 0.70
    # crop: a box of at most half of each axis is set to the background
    crop = ClassicAugment(probability=1.0, translation_ratio=0.0, intensity=(1.0, 1.0))(x, gen)
    diff = (crop != x)[:, 0]
    assert (crop[:, 0][diff] == -1).all()
    assert diff.flatten(1).sum(1).max() <= 8 ** 3
    # translation: whole-voxel shifts of at most 1/8 (2 voxels), background shifted in
    shift = ClassicAugment(probability=1.0, crop_ratio=0.0, intensity=(1.0, 1.0))(x[:1], gen)
    found = [s for s in np.ndindex(5, 5, 5)
             if torch.equal(torch.roll(x[:1], tuple(int(v) - 2 for v in s), (2, 3, 4))[..., 2:-2, 2:-2, 2:-2],
                            shift[..., 2:-2, 2:-2, 2:-2])]
    assert found
