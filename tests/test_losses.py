"""Adversarial and reconstruction losses: registry entries and properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthmed.losses import HingeLoss, NonSaturatingLoss, WassersteinLoss, gradient_penalty, l1, l2
from synthmed.registry import LOSSES

ADVERSARIAL = [HingeLoss, NonSaturatingLoss, WassersteinLoss]


def test_registered() -> None:
    assert LOSSES.get("hinge") is HingeLoss
    assert LOSSES.get("nonsaturating") is NonSaturatingLoss
    assert LOSSES.get("wgan") is WassersteinLoss
    assert LOSSES.get("l1") is l1 and LOSSES.get("l2") is l2
    for cls in ADVERSARIAL:
        assert LOSSES.get(cls.name) is cls


def test_hinge_zero_when_separated() -> None:
    real = torch.tensor([1.0, 2.5, 7.0], requires_grad=True)
    fake = torch.tensor([-1.0, -3.0, -10.0], requires_grad=True)
    loss = HingeLoss().d_loss(real, fake)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(real.grad, torch.zeros(3)) and torch.equal(fake.grad, torch.zeros(3))


def test_hinge_values() -> None:
    hinge = HingeLoss()
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.5, -2.0])
    assert hinge.d_loss(real, fake).item() == pytest.approx((1.0 + 0.0) / 2 + (1.5 + 0.0) / 2)
    assert hinge.g_loss(fake).item() == pytest.approx(0.75)


def test_nonsaturating_matches_bce() -> None:
    real, fake = torch.randn(16) * 3, torch.randn(16) * 3
    ns = NonSaturatingLoss()
    bce = F.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(16)) + bce(fake, torch.zeros(16))
    torch.testing.assert_close(ns.d_loss(real, fake), expected_d)
    torch.testing.assert_close(ns.g_loss(fake), bce(fake, torch.ones(16)))
    # and against the textbook formula in float64
    r, f = real.double(), fake.double()
    manual = -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean())
    assert ns.d_loss(real, fake).item() == pytest.approx(manual.item(), rel=1e-5)


def test_nonsaturating_is_stable_for_large_logits() -> None:
    fake = torch.tensor([-200.0, 200.0], requires_grad=True)
    loss = NonSaturatingLoss().g_loss(fake)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(fake.grad).all()
    assert fake.grad[0].item() == pytest.approx(-0.5)  # no saturation: full gradient when D wins


def test_wgan_values() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert WassersteinLoss().d_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert WassersteinLoss().g_loss(fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize("cls", [HingeLoss, NonSaturatingLoss])
def test_symmetry(cls) -> None:
    real, fake = torch.randn(8), torch.randn(8)
    loss = cls()
    torch.testing.assert_close(loss.d_loss(real, fake), loss.d_loss(-fake, -real))


def test_wgan_antisymmetry() -> None:
    real, fake = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(WassersteinLoss().d_loss(real, fake), -WassersteinLoss().d_loss(fake, real))


@pytest.mark.parametrize("cls", ADVERSARIAL)
def test_monotonicity(cls) -> None:
    loss = cls()
    grid = torch.linspace(-0.9, 0.9, 7)  # inside the hinge margin, so strictly monotone
    zeros = torch.zeros(1)
    d_vs_real = torch.stack([loss.d_loss(v.reshape(1), zeros) for v in grid])
    d_vs_fake = torch.stack([loss.d_loss(zeros, v.reshape(1)) for v in grid])
    g_vs_fake = torch.stack([loss.g_loss(v.reshape(1)) for v in grid])
    assert (d_vs_real.diff() < 0).all()  # more confident on reals -> lower D loss
    assert (d_vs_fake.diff() > 0).all()  # higher scores for fakes -> higher D loss
    assert (g_vs_fake.diff() < 0).all()  # fooling D lowers the G loss


@pytest.mark.parametrize("cls", ADVERSARIAL)
def test_scalar_outputs(cls) -> None:
    loss = cls()
    assert loss.d_loss(torch.randn(4), torch.randn(4)).ndim == 0
    assert loss.g_loss(torch.randn(4)).ndim == 0


@pytest.mark.parametrize(("norm", "expected"), [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_linear_critic(norm: float, expected: float) -> None:
    w = torch.randn(1, 2, 3, 3)
    w = w / w.norm() * norm

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1)

    gp = gradient_penalty(critic, torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3))
    assert gp.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_penalty_backpropagates_into_critic() -> None:
    critic = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    real = torch.randn(3, 1, 4, 4)
    fake = torch.randn(3, 1, 4, 4, requires_grad=True)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    gp.backward()
    # every weight shapes grad_x D; the last bias does not, so it gets no gradient
    assert critic[1].weight.grad.abs().sum() > 0 and critic[3].weight.grad.abs().sum() > 0
    assert fake.grad is None
    again = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gp, again)
    with pytest.raises(ValueError):
        gradient_penalty(critic, real, fake[:2])


def test_reconstruction_losses() -> None:
    pred, target = torch.tensor([[1.0, -1.0], [0.0, 2.0]]), torch.zeros(2, 2)
    assert l1(pred, target).item() == pytest.approx(1.0)
    assert l2(pred, target).item() == pytest.approx(1.5)
    assert l1(target, target).item() == 0.0
    with pytest.raises(ValueError):
        l2(pred, torch.zeros(2))
