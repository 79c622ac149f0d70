"""VAE losses on inputs with known answers (paper 002, Eqs. 5-8)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from synthmed.losses import (
    feature_perceptual_loss,
    gaussian_kl,
    kl_margin_hinge,
    reparameterise,
    scaled_squared_error,
)
from synthmed.registry import LOSSES


def test_registered() -> None:
    assert LOSSES.get("gaussian_kl") is gaussian_kl
    assert LOSSES.get("scaled_squared_error") is scaled_squared_error
    assert LOSSES.get("feature_perceptual") is feature_perceptual_loss
    assert LOSSES.get("kl_margin_hinge") is kl_margin_hinge


def test_kl_is_zero_at_the_prior() -> None:
    mu, logvar = torch.zeros(3, 7, requires_grad=True), torch.zeros(3, 7, requires_grad=True)
    kl = gaussian_kl(mu, logvar)
    assert kl.item() == 0.0
    kl.backward()
    assert torch.equal(mu.grad, torch.zeros(3, 7)) and torch.equal(logvar.grad, torch.zeros(3, 7))


def test_kl_hand_computed() -> None:
    # 1/2 [(1 + 1 - 1 - 0) + (4 + 2 - 1 - ln 2)] = 1/2 (6 - ln 2)
    mu, logvar = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, math.log(2.0)]])
    assert gaussian_kl(mu, logvar).item() == pytest.approx(0.5 * (6.0 - math.log(2.0)), rel=1e-6)
    # per-sample sums over latent dims, mean over the batch
    both = gaussian_kl(torch.cat([mu, torch.zeros(1, 2)]), torch.cat([logvar, torch.zeros(1, 2)]), reduction="none")
    assert both.tolist() == pytest.approx([0.5 * (6.0 - math.log(2.0)), 0.0], rel=1e-6)


def test_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(5, 9, generator=g), torch.randn(5, 9, generator=g)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar, reduction="none"), ref, rtol=1e-5, atol=1e-5)


def test_scaled_squared_error_known_answer() -> None:
    # pred 0 and target -1 in [-1, 1] are 0.5 and 0 in [0, 1]: 0.25 per pixel, 16 pixels, x 0.025 = 0.1
    pred, target = torch.zeros(2, 1, 4, 4), -torch.ones(2, 1, 4, 4)
    assert scaled_squared_error(pred, target).item() == pytest.approx(0.1)
    # "0.025 x H x W" times the mean squared error on [0, 1] intensities (paper 002, Sec. 3.2)
    mse_unit = torch.mean(((pred + 1) / 2 - (target + 1) / 2) ** 2)
    assert scaled_squared_error(pred, target).item() == pytest.approx(0.025 * 4 * 4 * mse_unit.item())
    assert scaled_squared_error(pred, target, scale=1.0, value_range=(0.0, 1.0)).item() == pytest.approx(16.0)
    # 3D: D x H x W pixels; per-sample values
    vol = scaled_squared_error(torch.zeros(2, 1, 2, 2, 2), torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1).expand(2, 1, 2, 2, 2),
                               reduction="none")
    assert vol.tolist() == pytest.approx([0.025 * 8 * 0.25] * 2)
    assert scaled_squared_error(target, target).item() == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        scaled_squared_error(pred, target[:, :, :2])


def test_perceptual_loss_eq7() -> None:
    a = [torch.ones(1, 2, 3, 3), torch.zeros(1, 4, 2, 2)]
    b = [torch.zeros(1, 2, 3, 3), torch.full((1, 4, 2, 2), 2.0)]
    # layer 1: 18 ones / (2 * 18) = 0.5; layer 2: 16 fours / (2 * 16) = 2
    assert feature_perceptual_loss(a, b).item() == pytest.approx(2.5)
    assert feature_perceptual_loss(a, b, normalise=False).item() == pytest.approx(18 + 64)
    assert feature_perceptual_loss(a, a).item() == 0.0
    with pytest.raises(ValueError):
        feature_perceptual_loss(a, b[:1])


def test_margin_hinge_is_zero_beyond_m() -> None:
    kl = torch.tensor([0.0, 50.0, 110.0, 200.0], requires_grad=True)
    loss = kl_margin_hinge(kl, margin=110.0)
    assert loss.item() == pytest.approx((110 + 60 + 0 + 0) / 4)
    loss.backward()
    assert kl.grad.tolist() == [-0.25, -0.25, 0.0, 0.0]  # pushes fakes' KL up to m, no further


def test_reparameterise_moments() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.full((20000, 1), 3.0), torch.full((20000, 1), math.log(4.0))
    z = reparameterise(mu, logvar, generator=g)
    assert z.mean().item() == pytest.approx(3.0, abs=0.05) and z.std().item() == pytest.approx(2.0, abs=0.05)
    assert torch.equal(reparameterise(mu[:3], torch.full((3, 1), -float("inf"))), mu[:3])
