"""Group normalisation with statistics per slice, so a network is local along its first spatial axis.

HA-GAN's high-resolution generator G^H is trained on sub-volumes (slabs of slices) but applied to
the whole volume at inference (paper 001, Sec. III-B, "Inference").  With ordinary GroupNorm (Wu &
He 2018) the statistics of a slab differ from those of the whole volume, so the training and the
inference paths give different images.  Normalising every slice on its own (over the channels of a
group and the in-plane axes, never across slices) makes G^H a purely local operator along the slice
axis: a slab computed with enough neighbouring slices as context equals the same slab of the full
volume exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """``nn.GroupNorm`` with ``gcd(groups, channels)`` groups, so any channel count is accepted."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class SliceGroupNorm(nn.Module):
    """GroupNorm whose statistics are computed separately for every index of the first spatial axis.

    For ``x`` of shape (B, C, D, *rest) the mean and variance are taken over the C/G channels of a
    group and the ``rest`` axes, separately for each sample, group and slice ``d``; then a per-channel
    affine transform is applied, as in ``nn.GroupNorm``.  Statistics are computed in float32 under
    mixed precision.

    Args:
        num_channels: channels C.
        groups: groups G (``gcd(groups, C)`` is used, so any C works).
        eps: added to the variance.

    Shape:
        (B, C, D, *rest) -> same shape; needs at least one spatial axis.
    """

    def __init__(self, num_channels: int, groups: int = 8, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_groups = math.gcd(groups, num_channels)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 3 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected (B, {self.num_channels}, D, ...), got {tuple(x.shape)}")
        b, c, d = x.shape[:3]
        xs = x.reshape(b, self.num_groups, c // self.num_groups, d, -1)
        var, mean = torch.var_mean(xs.float(), dim=(2, 4), unbiased=False, keepdim=True)
        y = ((xs - mean) * torch.rsqrt(var + self.eps)).to(x.dtype).reshape(x.shape)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return y * self.weight.view(shape).to(y.dtype) + self.bias.view(shape).to(y.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
