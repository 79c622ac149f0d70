"""Dimension-generic layer factories: convolutions, batch norm, N-d pixel shuffle and ICNR.

Convolutions and normalisation layers come from MONAI's factories
(:mod:`monai.networks.layers.factories`), so the same network code builds 2D and 3D models.
``torch.nn.functional.pixel_shuffle`` only handles 2D images; :func:`pixel_shuffle_nd` handles
any number of spatial dimensions with the same channel ordering.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

SUPPORTED_DIMS = (1, 2, 3)


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` or raise ValueError if it is not 1, 2 or 3."""
    if spatial_dims not in SUPPORTED_DIMS:
        raise ValueError(f"spatial_dims must be one of {SUPPORTED_DIMS}, got {spatial_dims!r}")
    return spatial_dims


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, ...],
    stride: int = 1,
    padding: int | tuple[int, ...] = 0,
    bias: bool = True,
) -> nn.Module:
    """Build a ``Conv{1,2,3}d`` layer for ``spatial_dims``.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel edge (or one per dimension).
        stride: stride.
        padding: zero padding.
        bias: whether the layer has a bias.

    Returns:
        The convolution module mapping (B, in_channels, *S) -> (B, out_channels, *S').
    """
    conv_type = Conv[Conv.CONV, check_spatial_dims(spatial_dims)]
    return conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def batch_norm(spatial_dims: int, num_features: int) -> nn.Module:
    """Build a ``BatchNorm{1,2,3}d`` layer for ``spatial_dims`` with ``num_features`` channels."""
    return Norm[Norm.BATCH, check_spatial_dims(spatial_dims)](num_features)


def maybe_spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Apply spectral normalisation (Miyato et al. 2018) to ``module.weight`` if ``enabled``.

    Uses :func:`torch.nn.utils.parametrizations.spectral_norm`, which works with DDP and
    ``state_dict`` round trips; the trainable tensor becomes
    ``module.parametrizations.weight.original`` and ``u``/``v`` are buffers, so trainable
    parameter counts are those of the plain layer (paper 000 Figs. S3, S5).
    """
    return _spectral_norm(module) if enabled else module


def _check_shuffle_input(x: Tensor, scale: int) -> int:
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if x.ndim < 3:
        raise ValueError(f"expected a (B, C, *spatial) tensor with >= 1 spatial dim, got {tuple(x.shape)}")
    return x.ndim - 2


def pixel_shuffle_nd(x: Tensor, scale: int) -> Tensor:
    """Rearrange channels into space for any number of spatial dimensions (Shi et al. 2016).

    Input channel ``c * r**d + sum_k o_k * r**(d-1-k)`` goes to output channel ``c`` at position
    ``x_k * r + o_k`` in each spatial dimension ``k``; for 2D this equals
    :func:`torch.nn.functional.pixel_shuffle`.

    Args:
        x: (B, C * r**d, *S) with d spatial dimensions.
        scale: the upsampling factor r.

    Returns:
        (B, C, *(s * r for s in S)).

    Raises:
        ValueError: if the channels are not divisible by ``scale**d``.
    """
    d = _check_shuffle_input(x, scale)
    b, c, *spatial = x.shape
    block = scale**d
    if c % block != 0:
        raise ValueError(f"channels ({c}) must be divisible by scale**spatial_dims ({scale}**{d}={block})")
    out_c = c // block
    x = x.reshape(b, out_c, *([scale] * d), *spatial)
    # (B, C, o_1..o_d, s_1..s_d) -> (B, C, s_1, o_1, ..., s_d, o_d)
    perm = [0, 1]
    for k in range(d):
        perm += [2 + d + k, 2 + k]
    x = x.permute(perm)
    return x.reshape(b, out_c, *(s * scale for s in spatial))


def pixel_unshuffle_nd(x: Tensor, scale: int) -> Tensor:
    """Inverse of :func:`pixel_shuffle_nd`: fold space into channels.

    Args:
        x: (B, C, *S) with every spatial size divisible by ``scale``.
        scale: the downsampling factor r.

    Returns:
        (B, C * r**d, *(s // r for s in S)); for 2D equal to
        :func:`torch.nn.functional.pixel_unshuffle`.
    """
    d = _check_shuffle_input(x, scale)
    b, c, *spatial = x.shape
    if any(s % scale for s in spatial):
        raise ValueError(f"spatial size {tuple(spatial)} must be divisible by scale {scale}")
    small = [s // scale for s in spatial]
    interleaved: list[int] = []
    for s in small:
        interleaved += [s, scale]
    x = x.reshape(b, c, *interleaved)
    # (B, C, s_1, o_1, ..., s_d, o_d) -> (B, C, o_1..o_d, s_1..s_d)
    perm = [0, 1] + [3 + 2 * k for k in range(d)] + [2 + 2 * k for k in range(d)]
    return x.permute(perm).reshape(b, c * scale**d, *small)


class PixelShuffleND(nn.Module):
    """Module wrapper of :func:`pixel_shuffle_nd`: (B, C*r^d, *S) -> (B, C, *(r*S)).

    Args:
        scale: the upsampling factor r.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return pixel_shuffle_nd(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def icnr_(
    weight: Tensor,
    scale: int,
    spatial_dims: int,
    init: Callable[[Tensor], Tensor] = nn.init.kaiming_normal_,
) -> Tensor:
    """ICNR initialisation of a convolution that feeds a pixel shuffle (Aitken et al. 2017).

    Initialises a sub-kernel of ``out / r**d`` filters with ``init`` and repeats each filter for
    the ``r**d`` output channels that :func:`pixel_shuffle_nd` scatters into one r^d block, so at
    initialisation conv + pixel shuffle equals conv (with the sub-kernel) followed by
    nearest-neighbour upsampling: no checkerboard artefacts (paper 000, "SN-GAN").

    Args:
        weight: conv weight (out, in, *kernel) with ``out`` divisible by ``scale**spatial_dims``;
            modified in place.
        scale: the pixel-shuffle factor r.
        spatial_dims: the number of spatial dimensions d.
        init: an in-place initialiser for the sub-kernel (out / r**d, in, *kernel).

    Returns:
        ``weight``.
    """
    block = scale ** check_spatial_dims(spatial_dims)
    out_ch = weight.shape[0]
    if out_ch % block != 0:
        raise ValueError(f"weight has {out_ch} output channels, not divisible by {scale}**{spatial_dims}")
    sub = torch.empty((out_ch // block, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(block, dim=0))
    return weight
