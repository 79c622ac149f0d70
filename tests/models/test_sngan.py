"""SN-GAN generator and discriminator (paper 000, Figs. S2 and S3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthmed.models.gan.sngan import SNGANDiscriminator, SNGANGenerator


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def conv_weights(module: nn.Module) -> list[int]:
    return [m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]


def test_generator_matches_paper_at_64() -> None:
    g = SNGANGenerator(3, 64)
    assert n_params(g) == 25_681_600
    assert g.channels == [256, 128, 64, 32]
    assert g.latent_dim == 1000
    assert conv_weights(g) == [16_384_000, 7_077_888, 1_769_472, 442_368, 6_912]
    assert all(m.bias is None for m in g.modules() if isinstance(m, nn.Conv3d))


def test_discriminator_matches_paper_at_64() -> None:
    d = SNGANDiscriminator(3, 64)
    assert n_params(d) == 2_770_944
    assert conv_weights(d) == [2_048, 131_072, 524_288, 2_097_152, 16_384]
    assert d.feature_channels == 256 and d.start_shape == (4, 4, 4)
    assert d.head.weight.shape == (1, 256, 4, 4, 4)


@pytest.mark.parametrize(("dims", "size"), [(2, 16), (3, 16), (2, (8, 16)), (3, 8)])
def test_tiny_forward_backward(dims: int, size) -> None:
    g = SNGANGenerator(dims, size, latent_dim=16, base_channels=4, max_channels=8)
    d = SNGANDiscriminator(dims, size, base_channels=4, max_channels=8)
    shape = g.size
    z = torch.randn(3, 16)
    x = g(z)
    assert x.shape == (3, 1, *shape)
    assert x.abs().max() <= 1.0
    logits = d(x)
    assert logits.shape == (3,)
    logits.mean().backward()
    for net in (g, d):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    feats = d.features(torch.randn(2, 1, *shape))
    assert feats.shape == (2, d.feature_channels, *d.start_shape)


@pytest.mark.parametrize(
    ("dims", "size", "stages"),
    [(3, 32, 3), (3, 64, 4), (3, 128, 5), (2, 28, 2), (2, 64, 4), (2, 224, 5)],
)
def test_sizes_build_from_one_parameter(dims: int, size: int, stages: int) -> None:
    g = SNGANGenerator(dims, size, latent_dim=8, base_channels=2, max_channels=4)
    d = SNGANDiscriminator(dims, size, base_channels=2, max_channels=4)
    assert g.n_stages == d.n_stages == stages
    with torch.no_grad():
        x = g(torch.randn(1, 8))
        assert x.shape == (1, 1, *([size] * dims))
        assert d(x).shape == (1,)


def test_128_channel_plan() -> None:
    with torch.device("meta"):
        g = SNGANGenerator(3, 128)
    assert g.channels == [256, 256, 128, 64, 32]


def test_non_cubic_start_shape() -> None:
    g = SNGANGenerator(2, 28, latent_dim=8, base_channels=4)
    d = SNGANDiscriminator(2, 28, base_channels=4)
    assert g.start_shape == d.start_shape == (7, 7)
    assert d.head.weight.shape[-2:] == (7, 7)
    assert d(g(torch.randn(2, 8))).shape == (2,)


def test_multichannel_images() -> None:
    g = SNGANGenerator(2, 8, latent_dim=4, base_channels=4, out_channels=3)
    d = SNGANDiscriminator(2, 8, in_channels=3, base_channels=4)
    assert d(g(torch.randn(2, 4))).shape == (2,)


def largest_singular_values(module: nn.Module) -> list[float]:
    values = []
    for m in module.modules():
        if hasattr(m, "parametrizations"):
            w = m.weight.detach()
            values.append(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item())
    return values


def test_spectral_norm_keeps_sigma_near_one() -> None:
    d = SNGANDiscriminator(3, 16, base_channels=4, max_channels=8).train()
    for _ in range(20):
        d(torch.randn(2, 1, 16, 16, 16))
    sigmas = largest_singular_values(d)
    assert len(sigmas) == 3  # two strided convs + head
    assert sigmas == pytest.approx([1.0] * 3, abs=0.05)


def test_spectral_norm_can_be_disabled() -> None:
    d = SNGANDiscriminator(2, 8, base_channels=4, spectral_norm=False)
    assert largest_singular_values(d) == []
    assert n_params(d) == n_params(SNGANDiscriminator(2, 8, base_channels=4))


def test_discriminator_state_dict_round_trip() -> None:
    d = SNGANDiscriminator(2, 16, base_channels=4).train()
    x = torch.randn(2, 1, 16, 16)
    d(x)
    clone = SNGANDiscriminator(2, 16, base_channels=4)
    clone.load_state_dict(d.state_dict())
    d.eval()
    clone.eval()
    torch.testing.assert_close(clone(x), d(x))


def test_generator_state_dict_round_trip() -> None:
    g = SNGANGenerator(2, 8, latent_dim=4, base_channels=4)
    clone = SNGANGenerator(2, 8, latent_dim=4, base_channels=4)
    clone.load_state_dict(g.state_dict())
    z = torch.randn(2, 4)
    torch.testing.assert_close(clone.eval()(z), g.eval()(z))


def test_shape_errors() -> None:
    g = SNGANGenerator(2, 8, latent_dim=4, base_channels=4)
    d = SNGANDiscriminator(2, 8, base_channels=4)
    with pytest.raises(ValueError, match="latent|z of shape"):
        g(torch.randn(2, 5))
    with pytest.raises(ValueError, match="input of shape"):
        d(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="image size"):
        SNGANGenerator(3, 6)
