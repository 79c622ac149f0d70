"""HA-GAN networks (paper 001, supp. Tables I-VII): geometry, sub-volume selection, training path = inference path."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthmed.errors import ConfigError
from synthmed.models.base import get_family
from synthmed.models.gan.hagan import (
    HierarchicalDiscriminator,
    HierarchicalGenerator,
    build_encoders,
    encode_hierarchical,
)
from synthmed.models.gan.hagan_geometry import (
    SubVolume,
    downsample,
    partition,
    plan_hierarchy,
    random_subvolume,
)
from synthmed.nn.slicenorm import SliceGroupNorm

TINY = {"latent_dim": 16, "base_channels": 4, "max_channels": 8}


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("size", "low", "sub"), [(64, 16, 8), (128, 32, 16), (256, 64, 32)])
def test_geometry_from_one_size(size: int, low: int, sub: int) -> None:
    plan = plan_hierarchy(3, size)
    assert plan.low == (low,) * 3 and plan.subvolume_shape == (sub, size, size)
    assert plan.factor == 4 and plan.high_stages == 2 and plan.n_positions == low - sub // 4 + 1


def test_geometry_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="divisible by low_factor 4"):
        plan_hierarchy(3, 30)
    with pytest.raises(ValueError, match="power of two"):
        plan_hierarchy(3, 64, low_factor=3)
    with pytest.raises(ValueError, match="subvolume_depth"):
        plan_hierarchy(3, 64, subvolume_depth=6)


def test_paper_architecture_at_256() -> None:
    """Supp. Tables I-VII with the defaults; Table VII counts 79.7 M parameters at 256^3."""
    g, d = HierarchicalGenerator(3, 256), HierarchicalDiscriminator(3, 256)
    eh, eg = build_encoders(3, 256)
    assert g.shared.channels == [512, 512, 256, 128, 64]
    assert g.shared.fc.out_features == 512 * 4**3 and g.shared.fc.in_features == 1024
    dh_convs = [m for m in d.high.body.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in dh_convs] == [16, 32, 64, 128, 256, 512, 128]
    assert [tuple(c.kernel_size) for c in dh_convs][3:] == [(2, 4, 4), (2, 4, 4), (1, 4, 4), (1, 4, 4)]
    assert [m.out_features for m in d.high.modules() if isinstance(m, torch.nn.Linear)] == [64, 32, 1]
    assert [m.out_channels for m in eg.modules() if isinstance(m, torch.nn.Conv3d)] == [32, 64, 128, 256, 1024]
    assert [m.out_channels for m in eh.modules() if isinstance(m, torch.nn.Conv3d)] == [32, 32, 64]
    total = sum(_count(m) for m in (g, d, eh, eg))
    assert abs(total - 79.7e6) < 0.1e6


def test_subvolumes_are_uniform_and_synchronised() -> None:
    plan = plan_hierarchy(3, 32)  # A: 8 slices, sub-volume: 1 slice of A = 4 image slices
    g = torch.Generator().manual_seed(0)
    counts = Counter(random_subvolume(plan, g).start for _ in range(2000))
    assert set(counts) == set(range(plan.n_positions))
    assert max(counts.values()) / min(counts.values()) < 1.5
    x = torch.randn(2, 1, 32, 32, 32)
    for start in range(plan.n_positions):
        sub = SubVolume(start, plan.depth_low, plan.factor, plan.low[0])
        high = sub.select_high(x)
        assert torch.equal(high, x[:, :, 4 * start:4 * start + 4])
        # S^L on X^L selects exactly the downsampled S^H: the same fraction of the volume
        assert torch.allclose(sub.select_low(downsample(x, 4)), downsample(high, 4), atol=1e-6)
        assert sub.position == pytest.approx(start / (plan.n_positions - 1))


def test_downsample_is_block_mean() -> None:
    x = torch.randn(1, 1, 8, 8, 8)
    ref = x.reshape(1, 1, 2, 4, 2, 4, 2, 4).mean(dim=(3, 5, 7))
    assert torch.allclose(downsample(x, 4), ref, atol=1e-6)


def test_partition_covers_every_slice_once() -> None:
    plan = plan_hierarchy(3, 64)
    parts = partition(plan)
    assert [(p.start, p.depth) for p in parts] == [(s, 2) for s in range(0, 16, 2)]
    assert [(p.start, p.depth) for p in partition(plan, 3)][-1] == (15, 1)


def test_slice_group_norm_equals_group_norm_per_slice() -> None:
    norm = SliceGroupNorm(8, groups=4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 5, 6, 7) * 3 + 1
    ref = torch.stack([F.group_norm(x[:, :, i], 4, norm.weight, norm.bias) for i in range(5)], 2)
    assert torch.allclose(norm(x), ref, atol=1e-5)


@pytest.mark.parametrize(("dims", "size"), [(3, 16), (2, 32)])
def test_training_path_equals_inference_path(dims: int, size: int) -> None:
    """G^H(S^L(G^A(z); r)) equals the slab r of G^H(G^A(z)) for every r, and slab-wise inference equals whole."""
    g = HierarchicalGenerator(dims, size, **TINY).eval()
    z = torch.randn(3, 16)
    with torch.no_grad():
        full = g.full(z, chunk=0)
        assert full.shape == (3, 1, *(size,) * dims)
        for start in range(g.plan.n_positions):
            sub = SubVolume(start, g.plan.depth_low, g.plan.factor, g.plan.low[0])
            low, high = g(z, sub)
            assert low.shape == (3, 1, *g.plan.low) and high.shape == (3, 1, *g.plan.subvolume_shape)
            assert torch.allclose(high, sub.select_high(full), atol=1e-5), start
        for chunk in (1, 3):
            assert torch.allclose(g.full(z, chunk=chunk), full, atol=1e-5)


def test_paper_groupnorm_without_context_differs() -> None:
    """Why slice_norm and the halo exist: with the paper's G^H a slab is not the slab of the full volume."""
    g = HierarchicalGenerator(3, 32, **TINY, slice_norm=False, halo=0).eval()
    z = torch.randn(2, 16)
    sub = SubVolume(3, g.plan.depth_low, g.plan.factor, g.plan.low[0])
    with torch.no_grad():
        assert not torch.allclose(g(z, sub)[1], sub.select_high(g.full(z)), atol=1e-3)


@pytest.mark.parametrize("dims", [2, 3])
def test_discriminators_and_encoders_forward_backward(dims: int) -> None:
    size = 32
    d = HierarchicalDiscriminator(dims, size, base_channels=4, max_channels=8)
    eh, eg = build_encoders(dims, size, latent_dim=16, base_channels=4, max_channels=8)
    plan = d.plan
    x_sub = torch.randn(2, 1, *plan.subvolume_shape, requires_grad=True)
    out = d(x_sub, torch.randn(2, 1, *plan.low), torch.tensor([0.0, 1.0]))
    assert out.high.shape == (2,) and out.low.shape == (2,) and out.high_class is None
    (out.high.sum() + out.low.sum()).backward()
    assert x_sub.grad is not None and x_sub.grad.abs().sum() > 0
    x = torch.randn(2, 1, *(size,) * dims)
    z = encode_hierarchical(eh, eg, x, plan)
    assert z.shape == (2, 16)
    z.sum().backward()
    assert all(p.grad is not None for p in eh.parameters())


def test_location_reaches_the_subvolume_discriminator() -> None:
    d = HierarchicalDiscriminator(3, 32, base_channels=4, max_channels=8)
    x_sub, x_low = torch.randn(1, 1, *d.plan.subvolume_shape), torch.randn(1, 1, *d.plan.low)
    assert not torch.allclose(d(x_sub, x_low, 0.0).high, d(x_sub, x_low, 1.0).high)


@pytest.mark.parametrize("model", ["hagan", "alpha_hagan"])
def test_family_encode_and_reconstruct(model: str) -> None:
    """Encoder round trip: Ẑ = E^G(concat_v E^H(T_v)), batch-independent; reconstructions at full resolution."""
    fam = get_family(model)
    params = fam.Params(**TINY)
    nets = fam.build(params, 3, (32, 32, 32))
    assert set(nets) == ({"G", "D", "EH", "EG"} | ({"CD"} if model == "alpha_hagan" else set()))
    x = torch.rand(3, 1, 32, 32, 32) * 2 - 1
    with torch.no_grad():
        z = fam.encode(nets, x)
        parts = [nets["EH"](x[:, :, 4 * v:4 * v + 4]) for v in range(8)]  # 8 sub-volumes of 4 x 32 x 32
        assert torch.allclose(z, nets["EG"](torch.cat(parts, 2)), atol=1e-5)
        assert torch.allclose(fam.encode(nets, x[:1]), z[:1], atol=1e-5)
    rec = fam.reconstruct_images(nets, x.numpy(), batch_size=2)
    assert rec.shape == x.shape and rec.dtype == np.float32 and np.abs(rec).max() <= 1
    with torch.no_grad():
        assert np.allclose(rec, fam.generate(nets, z).clamp(-1, 1).numpy(), atol=1e-5)
    assert nets["G"].training and nets["EH"].training  # modes restored
    imgs = fam.generate_images(nets, torch.randn(2, 16))
    assert imgs.shape == (2, 1, 32, 32, 32)


def test_conditional_generator_and_heads() -> None:
    fam = get_family("hagan")
    nets = fam.build(fam.Params(**TINY, num_classes=3), 3, (32, 32, 32))
    g, d = nets["G"], nets["D"]
    sub = SubVolume(0, g.plan.depth_low, g.plan.factor, g.plan.low[0])
    z = torch.randn(2, 16)
    with pytest.raises(ValueError, match="conditional"):
        g(z, sub)
    low, high = g(z, sub, torch.tensor([0, 2]))
    assert not torch.allclose(g(z, sub, torch.tensor([1, 1]))[0], low)
    out = d(high, low, 0.5)
    assert out.high_class.shape == (2, 3) and out.low_class.shape == (2, 3)
    assert fam.generate_images(nets, z).shape == (2, 1, 32, 32, 32)  # labels cycle through the classes


def test_bad_size_is_a_config_error() -> None:
    fam = get_family("hagan")
    with pytest.raises(ConfigError, match="divisible"):
        fam.build(fam.Params(**TINY), 3, (30, 30, 30))
