"""IntroVAE residual encoder and decoder for 2D and 3D images (paper 002, Sec. 3.2; Huang et al. 2018).

"Encoder and generator were similar to the corresponding networks in the PGGAN (Progressive Growing
of GANs), but with the additional use of residual blocks."  As in IntroVAE's networks: the encoder is
a 5^d stem convolution, then one residual block and a 2x average pooling per stage down to a small
grid (4^d at 64^d), a last residual block and one linear layer to mean and log-variance; the decoder
mirrors it with nearest-neighbour upsampling and a 5^d output convolution.  Stages and channels come
from the one ``size`` argument (:func:`synthmed.nn.plan_resolution`).

Conditioning hook as in :mod:`synthmed.models.vae.networks`: ``cond_dim`` extra inputs concatenated
to the flattened encoder features and to z.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.models.vae.networks import concat_condition, plan_stages
from synthmed.nn import batch_norm, check_image_shape, check_spatial_dims, conv, expand_size, stage_channels
from synthmed.nn.residual import ResidualBlock


def _avg_pool(spatial_dims: int) -> nn.Module:
    return (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[spatial_dims - 1](2)


class IntroEncoder(nn.Module):
    """IntroVAE encoder, which is also its discriminator (paper 002 Eq. 8): images -> (mu, logvar).

    Stem: 5^d conv ``in -> c_0``, BatchNorm, LeakyReLU, avg-pool x2; then for stages 1..n-1 a
    :class:`ResidualBlock` ``c_{i-1} -> c_i`` and avg-pool x2; a last residual block ``c_{n-1} ->
    c_{n-1}``; one linear layer to ``2 x latent_dim`` split into mean and log-variance.  Channels
    finest first: 32, 64, 128, 256 at 64^d with the defaults.

    Args:
        spatial_dims: 2 or 3.
        size: input image size (int or one per dimension).
        latent_dim: length of z (256 in paper 002).
        in_channels: image channels.
        base_channels: channels of the finest stage.
        max_channels: cap on channels per stage.
        max_stages: at most this many poolings (None: down to the planned start shape).
        negative_slope: LeakyReLU slope.
        cond_dim: length of an optional label embedding concatenated before the linear layer.

    Shape:
        x: (B, in_channels, *size) -> (mu, logvar), each (B, latent_dim).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 256, in_channels: int = 1,
                 base_channels: int = 32, max_channels: int = 256, max_stages: int | None = None,
                 negative_slope: float = 0.2, cond_dim: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_stages(self.size, spatial_dims, max_stages)
        self.in_channels, self.latent_dim, self.cond_dim = in_channels, latent_dim, cond_dim
        ch = stage_channels(self.n_stages, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = [conv(spatial_dims, in_channels, ch[0], 5, padding=2, bias=False),
                                   batch_norm(spatial_dims, ch[0]), nn.LeakyReLU(negative_slope),
                                   _avg_pool(spatial_dims)]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [ResidualBlock(spatial_dims, c_in, c_out, negative_slope), _avg_pool(spatial_dims)]
        layers.append(ResidualBlock(spatial_dims, ch[-1], ch[-1], negative_slope))
        self.body = nn.Sequential(*layers)
        flat = ch[-1] * int(torch.tensor(self.start_shape).prod())
        self.head = nn.Linear(flat + cond_dim, 2 * latent_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images (B, in_channels, *size): (mu, logvar), each (B, latent_dim)."""
        check_image_shape(x, self.in_channels, self.size)
        h = self.head(concat_condition(self.body(x).flatten(1), cond, self.cond_dim))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar


class IntroDecoder(nn.Module):
    """IntroVAE decoder (generator): z -> images in [-1, 1].

    A linear layer to (c_0, *start_shape) and LeakyReLU; a residual block ``c_0 -> c_0``; then per
    stage nearest-neighbour upsampling x2 and a residual block ``c_i -> c_{i+1}`` (the last keeps
    its channels); a 5^d output convolution and Tanh.

    Args:
        spatial_dims: 2 or 3.
        size: output image size (int or one per dimension).
        latent_dim: length of z.
        out_channels: image channels.
        base_channels: channels of the finest stage.
        max_channels: cap on channels per stage.
        max_stages: at most this many upsamplings (None: from the planned start shape).
        negative_slope: LeakyReLU slope.
        cond_dim: length of an optional label embedding concatenated to z.

    Shape:
        z: (B, latent_dim) -> (B, out_channels, *size) in [-1, 1].
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 256, out_channels: int = 1,
                 base_channels: int = 32, max_channels: int = 256, max_stages: int | None = None,
                 negative_slope: float = 0.2, cond_dim: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_stages(self.size, spatial_dims, max_stages)
        self.latent_dim, self.out_channels, self.cond_dim = latent_dim, out_channels, cond_dim
        self.channels = stage_channels(self.n_stages, base_channels, max_channels)
        ch = self.channels
        self.project = nn.Sequential(
            nn.Linear(latent_dim + cond_dim, ch[0] * int(torch.tensor(self.start_shape).prod())),
            nn.LeakyReLU(negative_slope))
        layers: list[nn.Module] = [ResidualBlock(spatial_dims, ch[0], ch[0], negative_slope)]
        for c_in, c_out in zip(ch, [*ch[1:], ch[-1]], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       ResidualBlock(spatial_dims, c_in, c_out, negative_slope)]
        layers += [conv(spatial_dims, ch[-1], out_channels, 5, padding=2, bias=True), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Images (B, out_channels, *size) in [-1, 1] from latent codes (B, latent_dim)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.project(concat_condition(z, cond, self.cond_dim))
        return self.body(h.reshape(z.shape[0], self.channels[0], *self.start_shape))
