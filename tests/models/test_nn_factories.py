"""Dimension-generic factories: N-d pixel shuffle, ICNR, conv / norm / spectral norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.utils import pixelshuffle as monai_pixelshuffle
from torch import nn

from synthmed.nn.factories import (
    PixelShuffleND,
    batch_norm,
    check_spatial_dims,
    conv,
    icnr_,
    maybe_spectral_norm,
    pixel_shuffle_nd,
    pixel_unshuffle_nd,
)


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_pixel_shuffle_2d_equals_torch(scale: int) -> None:
    x = torch.randn(2, 3 * scale**2, 5, 4)
    assert torch.equal(pixel_shuffle_nd(x, scale), F.pixel_shuffle(x, scale))
    y = torch.randn(2, 3, 6 * scale, 2 * scale)
    assert torch.equal(pixel_unshuffle_nd(y, scale), F.pixel_unshuffle(y, scale))


def test_pixel_shuffle_3d_equals_monai() -> None:
    x = torch.randn(2, 2 * 27, 3, 2, 4)
    assert torch.equal(pixel_shuffle_nd(x, 3), monai_pixelshuffle(x, 3, 3))


def test_pixel_shuffle_3d_channel_layout() -> None:
    """Channel c*r^3 + o1*r^2 + o2*r + o3 at (i, j, k) lands at (i*r+o1, j*r+o2, k*r+o3)."""
    r = 2
    x = torch.zeros(1, 2 * r**3, 3, 3, 3)
    c, (o1, o2, o3), (i, j, k) = 1, (1, 0, 1), (2, 1, 0)
    x[0, c * r**3 + o1 * r**2 + o2 * r + o3, i, j, k] = 1.0
    y = pixel_shuffle_nd(x, r)
    assert y.shape == (1, 2, 6, 6, 6)
    assert torch.nonzero(y).tolist() == [[0, c, i * r + o1, j * r + o2, k * r + o3]]


@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 12, 3, 4), (1, 16, 2, 3, 4), (1, 32, 2, 2, 2, 2)])
def test_pixel_unshuffle_inverts_shuffle(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    d = x.ndim - 2
    r = 2
    x = x[:, : (x.shape[1] // r**d) * r**d]
    y = pixel_shuffle_nd(x, r)
    assert y.shape == (x.shape[0], x.shape[1] // r**d, *(s * r for s in x.shape[2:]))
    assert torch.equal(pixel_unshuffle_nd(y, r), x)
    z = torch.randn(2, 3, *([4] * d))
    assert torch.equal(pixel_shuffle_nd(pixel_unshuffle_nd(z, r), r), z)


def test_pixel_shuffle_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle_nd(torch.randn(1, 7, 2, 2, 2), 2)
    with pytest.raises(ValueError, match="divisible"):
        pixel_unshuffle_nd(torch.randn(1, 1, 3, 4), 2)
    with pytest.raises(ValueError):
        pixel_shuffle_nd(torch.randn(4, 8), 2)


def test_pixel_shuffle_module() -> None:
    m = PixelShuffleND(2)
    x = torch.randn(1, 16, 2, 2, 2)
    assert torch.equal(m(x), pixel_shuffle_nd(x, 2))
    assert "scale=2" in repr(m)


def test_conv_and_norm_factories() -> None:
    assert isinstance(conv(3, 2, 4, 3, padding=1), nn.Conv3d)
    c2 = conv(2, 2, 4, 4, stride=2, padding=1, bias=False)
    assert isinstance(c2, nn.Conv2d) and c2.bias is None and c2.stride == (2, 2)
    assert isinstance(batch_norm(3, 8), nn.BatchNorm3d)
    assert isinstance(batch_norm(2, 8), nn.BatchNorm2d)
    with pytest.raises(ValueError, match="spatial_dims"):
        check_spatial_dims(4)


def test_maybe_spectral_norm() -> None:
    layer = maybe_spectral_norm(nn.Linear(4, 3, bias=False))
    assert hasattr(layer, "parametrizations")
    assert sum(p.numel() for p in layer.parameters()) == 12
    plain = maybe_spectral_norm(nn.Linear(4, 3), enabled=False)
    assert not hasattr(plain, "parametrizations")


@pytest.mark.parametrize("dims", [2, 3])
def test_icnr_repeats_subkernel(dims: int) -> None:
    w = torch.empty(4 * 2**dims, 3, *([3] * dims))
    out = icnr_(w, 2, dims)
    assert out is w
    groups = w.reshape(4, 2**dims, -1)
    assert torch.equal(groups, groups[:, :1].expand_as(groups))
    assert groups[:, 0].std() > 0


def test_icnr_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="divisible"):
        icnr_(torch.empty(6, 3, 3, 3, 3), 2, 3)
