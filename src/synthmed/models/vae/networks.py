"""Vanilla VAE / DFC-VAE encoder and decoder for 2D and 3D images (paper 002, Sec. 3.2).

"The encoder consisted of 4 convolutional layers of 4x4 kernels.  The stride was set to the constant
value of 2 and batch normalization was used before LeakyReLU activations.  The encoder network
concluded with two fully connected layers to output mean and variance of the encodings.  The decoder
was formed by 4 convolutional layers, this time with 3x3 kernels and a constant stride of 1.
Upsampling was performed following the nearest neighbor method by a scale of 2."  This is the
network of the DFC-VAE paper (Hou et al. 2017: channels 32-64-128-256), which the DFC-VAE of paper
002 shares.  Resolution is one ``size`` argument: the number of stride-2 stages is at most
``max_stages`` (4, as the paper) and fewer when the image cannot be halved that often (28 -> 2).

Conditioning: both networks take ``cond_dim`` extra inputs, a label code concatenated to the
flattened encoder features and to the latent code: the conditional VAE (Sohn et al. 2015) of
``model.conditioning: cvae`` (:mod:`synthmed.models.vae.families`) builds them with ``cond_dim`` = K
and supplies the one-hot / multi-hot label as ``cond``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.nn import (
    batch_norm,
    check_image_shape,
    check_spatial_dims,
    conv,
    expand_size,
    plan_resolution,
    stage_channels,
)


def plan_stages(size: Sequence[int], spatial_dims: int, max_stages: int | None) -> tuple[tuple[int, ...], int]:
    """:func:`synthmed.nn.plan_resolution`, stopping after ``max_stages`` halvings.

    Returns:
        ``(start_shape, n_stages)``, e.g. 64 -> ((4, 4), 4); 128 with ``max_stages=4`` -> ((8, 8), 4)
        as paper 002's 4 convolutions on 128 x 128; 28 -> ((7, 7), 2).
    """
    start, n = plan_resolution(size, spatial_dims)
    if max_stages is not None:
        if max_stages < 1:
            raise ValueError(f"max_stages must be >= 1, got {max_stages}")
        keep = min(n, max_stages)
        start, n = tuple(s * 2 ** (n - keep) for s in start), keep
    return start, n


def concat_condition(h: Tensor, cond: Tensor | None, cond_dim: int) -> Tensor:
    """Append a (B, cond_dim) label embedding to (B, F) features; checks it is given iff cond_dim > 0."""
    if cond_dim == 0:
        if cond is not None:
            raise ValueError("this network was built with cond_dim=0 and takes no conditioning input")
        return h
    if cond is None or cond.shape != (h.shape[0], cond_dim):
        got = None if cond is None else tuple(cond.shape)
        raise ValueError(f"expected cond of shape ({h.shape[0]}, {cond_dim}), got {got}")
    return torch.cat([h, cond.to(h.dtype)], dim=1)


class GaussianEncoder(nn.Module):
    """Convolutional encoder to a diagonal Gaussian posterior q(z|x) (paper 002, Sec. 3.2).

    ``n`` 4^d convolutions, stride 2, padding 1, each followed by BatchNorm and LeakyReLU, channels
    ``in -> 32 -> 64 -> 128 -> 256`` (finest first, capped at ``max_channels``); the flattened map
    feeds two linear heads for the mean and the log-variance.

    Args:
        spatial_dims: 2 or 3.
        size: input image size (int or one per dimension).
        latent_dim: length of z (200 in paper 002).
        in_channels: image channels.
        base_channels: channels after the first conv.
        max_channels: cap on channels per stage.
        max_stages: at most this many stride-2 convs (4 in paper 002).
        negative_slope: LeakyReLU slope.
        cond_dim: length of an optional label embedding concatenated before the heads.

    Shape:
        x: (B, in_channels, *size) -> (mu, logvar), each (B, latent_dim).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 200, in_channels: int = 1,
                 base_channels: int = 32, max_channels: int = 256, max_stages: int | None = 4,
                 negative_slope: float = 0.2, cond_dim: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_stages(self.size, spatial_dims, max_stages)
        self.in_channels, self.latent_dim, self.cond_dim = in_channels, latent_dim, cond_dim
        channels = stage_channels(self.n_stages, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels, strict=True):
            layers += [conv(spatial_dims, c_in, c_out, 4, stride=2, padding=1, bias=False),
                       batch_norm(spatial_dims, c_out), nn.LeakyReLU(negative_slope)]
        self.body = nn.Sequential(*layers)
        flat = channels[-1] * int(torch.tensor(self.start_shape).prod())
        self.mu = nn.Linear(flat + cond_dim, latent_dim)
        self.logvar = nn.Linear(flat + cond_dim, latent_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images (B, in_channels, *size): (mu, logvar), each (B, latent_dim)."""
        check_image_shape(x, self.in_channels, self.size)
        h = concat_condition(self.body(x).flatten(1), cond, self.cond_dim)
        return self.mu(h), self.logvar(h)


class UpsamplingDecoder(nn.Module):
    """Decoder with nearest-neighbour upsampling and 3^d convolutions (paper 002, Sec. 3.2).

    A linear layer maps z to (c_0, *start_shape); then ``n`` times: nearest-neighbour upsampling x2
    and a 3^d convolution (stride 1), channels ``256 -> 128 -> 64 -> 32 -> out`` (coarsest first),
    each followed by BatchNorm and LeakyReLU except the last, which is followed by Tanh so images lie
    in the data range [-1, 1] (the paper's data were in [0, 1]).

    Args:
        spatial_dims: 2 or 3.
        size: output image size (int or one per dimension).
        latent_dim: length of z.
        out_channels: image channels.
        base_channels: channels of the finest hidden stage.
        max_channels: cap on channels per stage.
        max_stages: at most this many upsampling stages (4 in paper 002).
        negative_slope: LeakyReLU slope.
        cond_dim: length of an optional label embedding concatenated to z.

    Shape:
        z: (B, latent_dim) -> (B, out_channels, *size) in [-1, 1].
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 200, out_channels: int = 1,
                 base_channels: int = 32, max_channels: int = 256, max_stages: int | None = 4,
                 negative_slope: float = 0.2, cond_dim: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_stages(self.size, spatial_dims, max_stages)
        self.latent_dim, self.out_channels, self.cond_dim = latent_dim, out_channels, cond_dim
        self.channels = stage_channels(self.n_stages, base_channels, max_channels)
        self.project = nn.Linear(latent_dim + cond_dim, self.channels[0] * int(torch.tensor(self.start_shape).prod()))
        layers: list[nn.Module] = []
        outs = [*self.channels[1:], out_channels]
        for i, (c_in, c_out) in enumerate(zip(self.channels, outs, strict=True)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       conv(spatial_dims, c_in, c_out, 3, padding=1, bias=i == len(outs) - 1)]
            if i < len(outs) - 1:
                layers += [batch_norm(spatial_dims, c_out), nn.LeakyReLU(negative_slope)]
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Images (B, out_channels, *size) in [-1, 1] from latent codes (B, latent_dim)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.project(concat_condition(z, cond, self.cond_dim))
        return self.body(h.reshape(z.shape[0], self.channels[0], *self.start_shape))
