"""Inception score (Salimans et al. 2016) and its three-plane form for volumes (paper 001)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.metrics import InceptionScorePlanes, inception_score, inception_score_planes
from synthmed.registry import METRICS


def _reference(probs: np.ndarray, splits: int) -> tuple[float, float]:
    """Salimans et al.'s procedure written out with loops: per split, per row, per class."""
    n, c = probs.shape
    scores = []
    for k in range(splits):
        part = probs[k * n // splits:(k + 1) * n // splits]
        marginal = [sum(row[j] for row in part) / len(part) for j in range(c)]
        kls = []
        for row in part:
            kls.append(sum(row[j] * (np.log(row[j]) - np.log(marginal[j])) for j in range(c) if row[j] > 0))
        scores.append(np.exp(sum(kls) / len(kls)))
    mean = sum(scores) / splits
    return mean, (sum((s - mean) ** 2 for s in scores) / splits) ** 0.5


def _dirichlet(n: int, c: int, alpha: float = 0.3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet([alpha] * c, size=n)


@pytest.mark.parametrize("splits", [1, 3, 10])
def test_matches_reference(splits: int) -> None:
    probs = _dirichlet(47, 6)  # 47 rows: unequal split sizes
    probs[0] = np.eye(6)[2]  # exact zeros
    mean, std = inception_score(probs, splits)
    ref_mean, ref_std = _reference(probs, splits)
    assert mean == pytest.approx(ref_mean, rel=1e-12) and std == pytest.approx(ref_std, rel=1e-9, abs=1e-12)


def test_entropy_identity_bounds_and_permutation() -> None:
    probs = _dirichlet(200, 8, seed=1)
    mean, std = inception_score(probs, splits=1)
    ent = lambda p: -(p * np.log(p)).sum(-1)  # noqa: E731
    assert mean == pytest.approx(np.exp(ent(probs.mean(0)) - ent(probs).mean()), rel=1e-10) and std == 0
    assert 1 <= mean <= 8
    assert inception_score(probs[:, ::-1], 4) == pytest.approx(inception_score(probs, 4))


def test_known_cases() -> None:
    uniform = np.full((30, 5), 0.2)
    assert inception_score(uniform, 3) == pytest.approx((1.0, 0.0))
    same_one_hot = np.tile(np.eye(5)[1], (30, 1))
    assert inception_score(same_one_hot, 3) == pytest.approx((1.0, 0.0))
    c = 8
    spread = np.eye(c)[np.arange(40) % c]  # 40 one-hot rows, every class 5 times, each split holds all
    assert inception_score(spread, 1) == pytest.approx((8.0, 0.0))
    assert inception_score(spread, 5) == pytest.approx((8.0, 0.0))
    softmax32 = torch.softmax(torch.randn(20, 10), dim=1).numpy()  # float32 round-off is fine
    assert np.isfinite(inception_score(softmax32, 2)[0])


def test_input_validation() -> None:
    probs = _dirichlet(10, 4)
    bad = probs.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        inception_score(bad)
    with pytest.raises(ValueError, match="sum to 1.*row 0"):
        inception_score(np.random.default_rng(0).normal(size=(10, 4)) + 5)  # logits, not probabilities
    neg = probs.copy()
    neg[0, :2] = [-0.5, probs[0, 0] + probs[0, 1] + 0.5]
    with pytest.raises(ValueError, match="non-negative"):
        inception_score(neg)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        inception_score(probs[0])
    for splits in (0, 11, 2.5):
        with pytest.raises(ValueError, match="splits"):
            inception_score(probs, splits)  # type: ignore[arg-type]
    assert "inception_score" in METRICS


class _MeanClassifier(nn.Module):
    """Logits from a slice's mean and spread; records the slice shapes and its mode per call."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.head = nn.Linear(2, classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(classes, 2) * 5)
        self.shapes: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.modes.append(self.training)
        flat = x.flatten(1)
        return self.head(torch.stack([flat.mean(1), flat.std(1)], dim=1))


def test_planes_follow_paper_001() -> None:
    """Middle sagittal/coronal/axial slices, one score per plane, averaged (paper 001, Sec. IV-B.1)."""
    rng = np.random.default_rng(0)
    vols = rng.uniform(-1, 1, (12, 1, 7, 10, 12)).astype(np.float32)
    clf = _MeanClassifier().train()
    res = inception_score_planes(vols, clf, splits=3, batch_size=5, progress=False)
    assert clf.training and not any(clf.modes)  # run in eval mode, mode restored
    assert {s[2:] for s in clf.shapes} == {(10, 12), (7, 12), (7, 10)} and max(s[0] for s in clf.shapes) == 5
    expected = {}
    with torch.no_grad():
        for name, slices in [("sagittal", vols[:, :, 3]), ("coronal", vols[:, :, :, 4]),
                             ("axial", vols[:, :, :, :, 5])]:
            probs = torch.softmax(clf(torch.from_numpy(np.ascontiguousarray(slices))).double(), 1).numpy()
            expected[name] = inception_score(probs, 3)
    assert list(res.per_plane) == ["sagittal", "coronal", "axial"]
    for name in expected:
        assert res.per_plane[name] == pytest.approx(expected[name], rel=1e-6)
    assert res.mean == pytest.approx(np.mean([m for m, _ in expected.values()]))
    assert res.std == pytest.approx(np.mean([s for _, s in expected.values()]))
    assert (res.n, res.splits, res.num_classes) == (12, 3, 4)
    again = inception_score_planes(torch.from_numpy(vols), clf, splits=3, batch_size=12, progress=False)
    assert again.mean == pytest.approx(res.mean, rel=1e-6)  # batch size does not matter


def test_planes_result_defaults_and_errors() -> None:
    vols = np.random.default_rng(1).uniform(-1, 1, (4, 1, 6, 6, 6)).astype(np.float32)
    clf = _MeanClassifier(3)
    res = inception_score_planes(vols, clf, progress=False)  # default splits = min(10, N)
    assert isinstance(res, InceptionScorePlanes) and res.splits == 4
    assert float(res) == res.mean and "sagittal" in str(res) and res["mean"] == res.mean
    data = json.loads(json.dumps(dict(res)))
    assert set(data) == {"mean", "std", "per_plane", "n", "splits", "num_classes"}
    images = inception_score_planes(vols[:, :, 2], clf, splits=2, progress=False)  # 2D: the images themselves
    assert list(images.per_plane) == ["image"]
    with pytest.raises(ValueError, match="volumes must be"):
        inception_score_planes(vols[:, 0], clf, progress=False)
    with pytest.raises(ValueError, match="splits"):
        inception_score_planes(vols, clf, splits=5, progress=False)
    with pytest.raises(ValueError, match="logits"):
        inception_score_planes(vols, lambda x: x.flatten(1)[:, None], progress=False)


def test_planes_with_inception_logits() -> None:
    """The Inception extractor's bound ``logits`` as the classifier (untrained, tiny volume)."""
    from synthmed.features import InceptionV3Extractor

    ext = InceptionV3Extractor().train()
    res = inception_score_planes(np.zeros((1, 1, 6, 6, 6), np.float32), ext.logits, splits=1, progress=False)
    assert ext.training  # mode of the method's module restored
    assert res.num_classes == 1000 and res.per_plane["axial"] == pytest.approx((1.0, 0.0))  # one image: IS 1
