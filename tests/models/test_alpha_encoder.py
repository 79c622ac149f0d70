"""α-SN-GAN encoder and code discriminator (paper 000, Figs. S4 and S5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthmed.models.gan.encoder import AlphaEncoder, CodeDiscriminator


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_encoder_matches_paper_at_64() -> None:
    e = AlphaEncoder(3, 64)
    assert n_params(e) == 19_140_936
    convs = [m for m in e.modules() if isinstance(m, nn.Conv3d)]
    assert [n_params(c) for c in convs] == [2_080, 131_136, 524_416, 2_097_408, 16_385_000]
    assert [m.num_features for m in e.modules() if isinstance(m, nn.BatchNorm3d)] == [64, 128, 256]


def test_code_discriminator_matches_paper() -> None:
    c = CodeDiscriminator()
    assert n_params(c) == 6_244_352
    linears = [m for m in c.modules() if isinstance(m, nn.Linear)]
    assert [lin.weight.numel() for lin in linears] == [2_048_000, 4_194_304, 2_048]
    assert all(lin.bias is None and hasattr(lin, "parametrizations") for lin in linears)


@pytest.mark.parametrize(("dims", "size"), [(2, 16), (3, 16), (2, 28)])
def test_encoder_forward_backward(dims: int, size: int) -> None:
    e = AlphaEncoder(dims, size, latent_dim=16, base_channels=4, max_channels=8)
    x = torch.randn(3, 1, *([size] * dims))
    z = e(x)
    assert z.shape == (3, 16)
    z.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in e.parameters())
    with pytest.raises(ValueError, match="input of shape"):
        e(torch.randn(3, 2, *([size] * dims)))


def test_encoder_sizes_from_one_parameter() -> None:
    for dims, size in [(3, 32), (3, 128), (2, 224)]:
        e = AlphaEncoder(dims, size, latent_dim=8, base_channels=2, max_channels=4)
        with torch.no_grad():
            assert e(torch.randn(1, 1, *([size] * dims))).shape == (1, 8)


def test_code_discriminator_forward_backward() -> None:
    c = CodeDiscriminator(latent_dim=16, hidden_dim=32)
    z = torch.randn(4, 16, requires_grad=True)
    logits = c(z)
    assert logits.shape == (4,)
    logits.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        c(torch.randn(4, 17))


@pytest.mark.parametrize("n_hidden", [1, 3])
def test_code_discriminator_depth(n_hidden: int) -> None:
    c = CodeDiscriminator(latent_dim=8, hidden_dim=16, n_hidden=n_hidden)
    assert sum(isinstance(m, nn.Linear) for m in c.modules()) == n_hidden + 1
    assert n_params(c) == 8 * 16 + (n_hidden - 1) * 16 * 16 + 16


def test_code_discriminator_spectral_norm() -> None:
    c = CodeDiscriminator(latent_dim=16, hidden_dim=32).train()
    for _ in range(20):
        c(torch.randn(4, 16))
    sigmas = [
        torch.linalg.matrix_norm(m.weight.detach(), ord=2).item()
        for m in c.modules()
        if isinstance(m, nn.Linear)
    ]
    assert sigmas == pytest.approx([1.0] * 3, abs=0.05)
    plain = CodeDiscriminator(latent_dim=16, hidden_dim=32, spectral_norm=False)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
