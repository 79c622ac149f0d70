"""Layers of the progressive-GAN lineage (Karras et al. 2018, 2019), for any number of spatial dims.

Used by PGGAN (papers 003 and 004 S.2.1), cpD-GAN (paper 004 S.2.2) and StyleGAN-lite (paper 002
Sec. 3.2):

* :class:`EqualizedConv` / :class:`EqualizedLinear`: "equalised learning rate" -- weights are drawn
  from N(0, 1) and multiplied at every forward pass by He's constant ``gain / sqrt(fan_in)``, so Adam's
  per-parameter step sizes are equal for every layer (paper 004: "All weights in the network are
  dynamically scaled with a variant of He's initialiser at each optimisation step").
* :class:`PixelNorm`: pixel-wise feature vector normalisation ``a / sqrt(mean_c a^2 + eps)``.
* :class:`ConditionalPixelNorm`: paper 004 Eq. 1, pixel norm with ``gamma = W1 [z; y] + b1`` and
  ``beta = W2 [z; y] + b2``.
* :class:`MinibatchStd`: minibatch standard deviation as one extra feature channel.
* :class:`AdaIN` and :class:`NoiseInjection`: StyleGAN's adaptive instance normalisation (paper 002
  Eq. 10) and per-layer noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.nn.factories import check_spatial_dims

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def downsample(x: Tensor, factor: int = 2) -> Tensor:
    """Average pooling by ``factor`` in every spatial dim (identity for 1)."""
    return x if factor == 1 else _AVG[x.ndim - 2](x, factor)


def upsample(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling by ``factor`` (identity for 1)."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


class EqualizedConv(nn.Module):
    """Convolution with the equalised learning rate (Karras et al. 2018, Sec. 4.1).

    ``y = conv(x, w * gain / sqrt(in * prod(kernel))) + b`` with ``w ~ N(0, 1)``, ``b = 0``;
    padding keeps the size for odd kernels (``padding=None``) unless given.

    A convolution without padding whose kernel covers the whole input (the "conv over the whole start
    shape" of the progressive discriminators' last block) is a dense layer on the flattened input; it is
    computed as one, ``linear(flatten(x), flatten(w))`` (the same weights, output (B, out, 1, ...)):
    on a CPU the convolution's backward pass over a 7x7 kernel is 5-6 times slower than the matrix product.

    Shape:
        (B, in, *S) -> (B, out, *S').
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 gain: float = math.sqrt(2), bias: bool = True, padding: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        k = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * math.prod(k))
        self.padding = tuple(s // 2 for s in k) if padding is None else padding

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.scale
        if tuple(x.shape[2:]) == tuple(w.shape[2:]) and not any(_as_tuple(self.padding, self.spatial_dims)):
            out = F.linear(x.flatten(1), w.flatten(1), self.bias)
            return out.reshape(*out.shape, *([1] * self.spatial_dims))
        return _CONV[self.spatial_dims](x, w, self.bias, padding=self.padding)


def _as_tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


class EqualizedLinear(nn.Module):
    """Linear layer with the equalised learning rate; ``lr_mul`` scales the effective learning rate
    (StyleGAN's mapping network uses 0.01): weights ``N(0, 1/lr_mul^2)``, runtime scale ``lr_mul * c``."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2), bias: bool = True,
                 bias_init: float = 0.0, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        b = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, b)


class PixelNorm(nn.Module):
    """``a / sqrt(mean over channels of a^2 + eps)`` at every pixel/voxel (or of a (B, C) vector)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)


class ConditionalPixelNorm(nn.Module):
    """Paper 004 Eq. 1: ``b^i = a^i / sqrt(1/N sum_j (a^j)^2 + eps) * gamma^i + beta^i``.

    ``gamma = W1 [z; y] + b1`` and ``beta = W2 [z; y] + b2`` (eps = 1e-8).  W1, W2 start at 0 and
    b1 = 1, b2 = 0, so the layer starts as the plain pixel norm of prog-GAN (as conditional batch
    normalisation starts as batch normalisation) and learns its dependence on noise and label.

    Shape:
        x: (B, C, *S), s = [z; y]: (B, cond_dim) -> (B, C, *S).
    """

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = PixelNorm(eps)
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        view = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        return self.norm(x) * self.gamma(s).reshape(view) + self.beta(s).reshape(view)


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, Sec. 3): one extra channel holding, for each
    group of ``group_size`` samples, the mean over features and positions of the per-feature standard
    deviation across the group (population std, ``sqrt(var + 1e-8)``).  The group is the whole batch
    when its size does not divide the batch."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        g = self.group_size if b % self.group_size == 0 else b
        y = x.float().reshape(g, b // g, *x.shape[1:])
        std = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (b/g, C, *S)
        stat = std.flatten(1).mean(1)  # (b/g,)
        stat = stat.repeat(g).reshape(b, 1, *([1] * (x.ndim - 2))).expand(b, 1, *x.shape[2:])
        return torch.cat([x, stat.to(x.dtype)], 1)


class AdaIN(nn.Module):
    """Adaptive instance normalisation (paper 002 Eq. 10): ``y_s (x - mu(x)) / sigma(x) + y_b`` with
    ``(y_s, y_b)`` an affine map of the style vector w (y_s starts at 1, y_b at 0).

    Shape:
        x: (B, C, *S), w: (B, w_dim) -> (B, C, *S).
    """

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.style = EqualizedLinear(w_dim, 2 * channels, gain=1.0)
        with torch.no_grad():
            self.style.bias[:channels] = 1.0
        self.eps = eps

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        dims = tuple(range(2, x.ndim))
        mu = x.mean(dims, keepdim=True)
        sigma = torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + self.eps)
        ys, yb = self.style(w).chunk(2, 1)
        view = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        return ys.reshape(view) * (x - mu) / sigma + yb.reshape(view)


class NoiseInjection(nn.Module):
    """Per-layer noise (StyleGAN): ``x + s * n`` with one N(0, 1) map per sample broadcast over channels
    and a learned per-channel strength ``s`` (starts at 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return x + self.strength.reshape(view) * noise


def seeded_noise(z: Tensor, shapes: Sequence[Sequence[int]]) -> list[Tensor]:
    """Noise maps that are a deterministic function of each latent code: sample ``i`` draws its maps
    from a generator seeded with a hash of ``z[i]``.  Used in eval mode, so a generated image depends
    only on its latent (the sampler's per-sample seeds stay reproducible and batch-size independent).

    Returns:
        one (B, 1, *shape) tensor per entry of ``shapes``.
    """
    out: list[list[Tensor]] = [[] for _ in shapes]
    for row in z.detach().float().cpu():
        seed = int.from_bytes(hashlib.sha256(row.numpy().tobytes()).digest()[:8], "little") & ((1 << 63) - 1)
        gen = torch.Generator().manual_seed(seed)
        for k, shape in enumerate(shapes):
            out[k].append(torch.randn(1, *shape, generator=gen))
    return [torch.stack(maps).to(device=z.device, dtype=z.dtype) for maps in out]
