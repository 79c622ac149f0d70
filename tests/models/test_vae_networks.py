"""VAE networks (paper 002, Sec. 3.2) and the encoder interface of ModelFamily."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.models import get_family
from synthmed.models.vae.intro import IntroDecoder, IntroEncoder
from synthmed.models.vae.networks import GaussianEncoder, UpsamplingDecoder, plan_stages
from synthmed.nn.residual import ResidualBlock

TINY = dict(latent_dim=6, base_channels=4, max_channels=8)


def test_paper_layout_at_128() -> None:
    e, d = GaussianEncoder(2, 128), UpsamplingDecoder(2, 128)
    convs = [m for m in e.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (4, 4), (2, 2)), (64, (4, 4), (2, 2)), (128, (4, 4), (2, 2)), (256, (4, 4), (2, 2))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in e.modules()) == 4
    assert e.mu.out_features == e.logvar.out_features == 200 and e.start_shape == (8, 8)
    dconvs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in dconvs] == [
        (128, (3, 3), (1, 1)), (64, (3, 3), (1, 1)), (32, (3, 3), (1, 1)), (1, (3, 3), (1, 1))]
    ups = [m for m in d.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)


def test_plan_stages() -> None:
    assert plan_stages((64, 64), 2, 4) == ((4, 4), 4)
    assert plan_stages((128, 128), 2, 4) == ((8, 8), 4)
    assert plan_stages((28, 28, 28), 3, 4) == ((7, 7, 7), 2)
    assert plan_stages((128, 128), 2, None) == ((4, 4), 5)


@pytest.mark.parametrize(("dims", "size"), [(2, 16), (3, 16), (2, 28), (3, (8, 16, 16))])
@pytest.mark.parametrize(("enc_cls", "dec_cls"), [(GaussianEncoder, UpsamplingDecoder), (IntroEncoder, IntroDecoder)])
def test_forward_backward_shapes(dims: int, size, enc_cls, dec_cls) -> None:
    e, d = enc_cls(dims, size, **TINY), dec_cls(dims, size, **TINY)
    x = torch.rand(3, 1, *e.size) * 2 - 1
    mu, logvar = e(x)
    assert mu.shape == logvar.shape == (3, 6)
    y = d(mu)
    assert y.shape == x.shape and y.abs().max() <= 1
    (y.pow(2).mean() + logvar.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*e.parameters(), *d.parameters()])
    with pytest.raises(ValueError, match="input of shape"):
        e(torch.randn(3, 2, *e.size))
    with pytest.raises(ValueError, match="z of shape"):
        d(torch.randn(3, 7))


@pytest.mark.parametrize(("enc_cls", "dec_cls"), [(GaussianEncoder, UpsamplingDecoder), (IntroEncoder, IntroDecoder)])
def test_label_embedding_can_be_concatenated(enc_cls, dec_cls) -> None:
    e, d = enc_cls(2, 16, cond_dim=3, **TINY), dec_cls(2, 16, cond_dim=3, **TINY)
    x, y = torch.randn(2, 1, 16, 16), torch.eye(3)[[0, 2]]
    mu, _ = e(x, y)
    assert d(mu, y).shape == x.shape
    with pytest.raises(ValueError, match="cond of shape"):
        d(mu)
    with pytest.raises(ValueError, match="cond_dim=0"):
        enc_cls(2, 16, **TINY)(x, y)


def test_residual_block() -> None:
    block = ResidualBlock(3, 4, 6)
    assert block(torch.randn(2, 4, 5, 5, 5)).shape == (2, 6, 5, 5, 5)
    assert isinstance(ResidualBlock(2, 4, 4).skip, nn.Identity)


@pytest.mark.parametrize("model", ["vae", "dfc_vae", "intro_vae", "alpha_sngan"])
@pytest.mark.parametrize("dims", [2, 3])
def test_encoder_round_trip(model: str, dims: int) -> None:
    fam = get_family(model)
    extra = {"code_hidden_dim": 8} if model == "alpha_sngan" else {}
    params = fam.Params(**TINY, **extra)
    nets = fam.build(params, dims, (16,) * dims)
    assert fam.has_encoder
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1) + (16,) * dims).astype(np.float32)
    for m in nets.values():
        m.train()
    z = fam.encode(nets, torch.from_numpy(x))
    assert z.shape == (5, 6)
    rec = fam.reconstruct_images(nets, x)
    assert rec.shape == x.shape and rec.dtype == np.float32 and np.abs(rec).max() <= 1
    assert all(m.training for m in nets.values())  # modes restored
    # eval mode: a reconstruction does not depend on its batch
    np.testing.assert_allclose(fam.reconstruct_images(nets, x, batch_size=2), rec, atol=1e-5)
    np.testing.assert_allclose(fam.reconstruct_images(nets, x[:1]), rec[:1], atol=1e-5)
    # posterior samples: seeded per image, so also independent of the batch size
    sampled = fam.reconstruct_images(nets, x, sample_seed=3)
    np.testing.assert_allclose(fam.reconstruct_images(nets, x, batch_size=2, sample_seed=3), sampled, atol=1e-5)
    assert np.allclose(sampled, rec, atol=1e-6) == (model == "alpha_sngan")  # its encoder is deterministic


def test_vae_encode_is_the_posterior_mean() -> None:
    fam = get_family("vae")
    nets = fam.build(fam.Params(**TINY), 2, (16, 16))
    x = torch.randn(2, 1, 16, 16)
    nets["E"].eval()
    torch.testing.assert_close(fam.encode(nets, x), nets["E"](x)[0])
    torch.testing.assert_close(fam.generate(nets, fam.encode(nets, x)), nets["G"](nets["E"](x)[0]))


def test_family_without_encoder() -> None:
    fam = get_family("sngan")
    nets = fam.build(fam.Params(**TINY), 2, (16, 16))
    assert not fam.has_encoder
    with pytest.raises(ConfigError, match="no encoder.*alpha_sngan.*vae"):
        fam.reconstruct_images(nets, np.zeros((1, 1, 16, 16), np.float32))
