"""DiffAugment (Zhao et al. 2020; paper 000) in 1D, 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from synthmed.augment import DiffAugment, adjust_intensity, cutout, translate
from synthmed.registry import AUGMENTS

OPS = ["translation", "cutout", "intensity"]


def test_registered() -> None:
    assert AUGMENTS.get("diffaugment") is DiffAugment


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("policy", [OPS, ["translation"], ["cutout"], ["intensity"]])
def test_shapes_and_gradient(dims: int, policy: list[str]) -> None:
    x = torch.randn(3, 2, *([8] * dims), requires_grad=True)
    y = DiffAugment(policy)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_reaches_generator_parameters() -> None:
    weight = torch.nn.Parameter(torch.randn(1, 1, 4, 4, 4))
    fake = torch.tanh(weight.expand(2, 1, 4, 4, 4) * torch.randn(2, 1, 1, 1, 1))
    DiffAugment()(fake).pow(2).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_empty_policy_is_identity() -> None:
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(DiffAugment(policy=())(x), x)
    assert torch.equal(DiffAugment(policy="")(x), x)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_translate_moves_voxel(dims: int) -> None:
    n = 9
    x = torch.zeros(2, 1, *([n] * dims))
    src = (4,) * dims
    x[(slice(None), 0) + src] = 1.0
    shifts = torch.tensor([[2] * dims, [-3] + [1] * (dims - 1)])
    y = translate(x, shifts, fill=0.0)
    for b in range(2):
        expected = tuple(s + int(t) for s, t in zip(src, shifts[b], strict=True))
        assert torch.nonzero(y[b, 0]).tolist() == [list(expected)]


def test_translate_fills_and_keeps_content() -> None:
    x = torch.arange(1.0, 7.0).reshape(1, 1, 6)
    y = translate(x, torch.tensor([[2]]), fill=-1.0)
    assert y.tolist() == [[[-1.0, -1.0, 1.0, 2.0, 3.0, 4.0]]]
    y = translate(x, torch.tensor([[-1]]), fill=0.0)
    assert y.tolist() == [[[2.0, 3.0, 4.0, 5.0, 6.0, 0.0]]]
    assert torch.equal(translate(x, torch.tensor([[0]])), x)
    assert torch.equal(translate(x, torch.tensor([[7]]), fill=5.0), torch.full_like(x, 5.0))


def test_random_translation_bounded_and_per_sample() -> None:
    n, b = 16, 64
    x = torch.zeros(b, 1, n, n)
    x[:, 0, 8, 8] = 1.0
    y = DiffAugment(["translation"], translation_ratio=0.125)(x)
    pos = torch.nonzero(y[:, 0])  # every sample keeps its voxel: |shift| <= 2 < 8
    assert pos.shape == (b, 3)
    offsets = pos[:, 1:] - 8
    assert offsets.abs().max() <= 2
    assert len({tuple(o) for o in offsets.tolist()}) > 5


def test_cutout_box() -> None:
    x = torch.ones(1, 2, 6, 5)
    y = cutout(x, torch.tensor([[1, 2]]), box=(2, 3), fill=0.0)
    expected = torch.ones(6, 5)
    expected[1:3, 2:5] = 0.0
    assert torch.equal(y[0, 0], expected) and torch.equal(y[0, 1], expected)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_cutout_fraction(dims: int, ratio: float) -> None:
    x = torch.ones(32, 1, *([16] * dims))
    y = DiffAugment(["cutout"], cutout_ratio=ratio)(x)
    zero = (y == 0).flatten(1).float().mean(1)
    assert zero.mean().item() == pytest.approx(ratio**dims, abs=1e-6)
    # one box per sample, at different places
    assert len({tuple(torch.nonzero(y[i, 0] == 0)[0].tolist()) for i in range(32)}) > 3


def test_intensity_ranges() -> None:
    b = 256
    x = torch.zeros(b, 1, 4, 4)
    x[:, :, :2] = 1.0  # mean 0.5, spread 1
    y = DiffAugment(["intensity"])(x)
    mean_shift = y.flatten(1).mean(1) - 0.5
    spread = y[:, 0, 0, 0] - y[:, 0, 3, 3]
    assert mean_shift.min() >= -0.5 and mean_shift.max() <= 0.5
    assert spread.min() >= 0.5 and spread.max() <= 1.5
    assert mean_shift.std() > 0.2 and spread.std() > 0.2  # per-sample, roughly uniform


def test_adjust_intensity_explicit() -> None:
    x = torch.randn(2, 1, 3, 3, 3)
    torch.testing.assert_close(adjust_intensity(x, torch.zeros(2), torch.ones(2)), x)
    y = adjust_intensity(x, torch.tensor([0.25, -0.5]), torch.tensor([2.0, 0.5]))
    m = x.flatten(1).mean(1)
    torch.testing.assert_close(y.flatten(1).mean(1), m + torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(y[0] - y[0].mean(), 2.0 * (x[0] - x[0].mean()))


def test_determinism() -> None:
    aug = DiffAugment()
    x = torch.randn(4, 1, 8, 8, 8)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(aug(x, generator=g1), aug(x, generator=g2))


def test_translation_fill_value() -> None:
    x = torch.full((16, 1, 8, 8), 2.0)
    y = DiffAugment(["translation"], translation_ratio=0.25, fill=-1.0)(x)
    assert set(y.unique().tolist()) <= {2.0, -1.0} and (y == -1.0).any()


def test_policy_parsing_and_validation() -> None:
    assert DiffAugment("cutout, translation").policy == ("translation", "cutout")
    assert DiffAugment(["cutout", "intensity", "translation"]).policy == (
        "intensity",
        "translation",
        "cutout",
    )
    with pytest.raises(ValueError, match="color"):
        DiffAugment(["color"])
    with pytest.raises(ValueError, match="cutout_ratio"):
        DiffAugment(cutout_ratio=1.5)
    with pytest.raises(ValueError):
        DiffAugment()(torch.randn(4, 8))
    assert "translation" in repr(DiffAugment())
