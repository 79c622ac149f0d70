"""StyleGAN-lite generator (paper 002 Sec. 2.5 and 3.2; Karras et al. 2019) for 2D and 3D images.

Paper 002's modification of StyleGAN: "The mapping function was represented by 2 fully connected layers,
with both input and output activation dimensions of 512.  Progressive growing and mixing regularization
were discarded"; the discriminator is that of Progressive GANs (:class:`PGGANDiscriminator` fixed at its
last level); Wasserstein loss (Eqs. 11-12, with the gradient penalty); Adam, constant lr 1e-4.

* mapping: ``w = f([PN(z); embed(y)])``, two equalised dense layers with LeakyReLU (learning-rate
  multiplier 0.01 as in StyleGAN);
* synthesis: a learned constant at the start shape; per level (nearest-neighbour upsampling between
  levels) two 3^d convs (the first level has one, after the constant), each followed by per-layer noise,
  LeakyReLU and AdaIN (Eq. 10) with styles from w; a 1^d conv to the image.

Per-layer noise is random in training mode; in eval mode (sampling) each sample's noise is drawn from
a generator seeded by its latent code (:func:`synthmed.nn.progressive.seeded_noise`), so an image depends
only on its latent and the sampler stays reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.models.gan.pggan import init_levels
from synthmed.nn.conditional import concat_label
from synthmed.nn.progressive import (
    AdaIN,
    EqualizedConv,
    EqualizedLinear,
    NoiseInjection,
    PixelNorm,
    seeded_noise,
    upsample,
)


class StyleLayer(nn.Module):
    """[conv3 ->] noise -> LeakyReLU -> AdaIN."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, w_dim: int, conv: bool = True,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.conv = EqualizedConv(spatial_dims, c_in, c_out) if conv else None
        self.noise = NoiseInjection(c_out)
        self.act = nn.LeakyReLU(negative_slope)
        self.adain = AdaIN(c_out, w_dim)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        if self.conv is not None:
            x = self.conv(x)
        return self.adain(self.act(self.noise(x, noise)), w)


class StyleGenerator(nn.Module):
    """StyleGAN-lite generator (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        size: output size.
        latent_dim: z length (512).
        w_dim: style vector length (0: ``latent_dim``; paper 002: 512).
        mapping_layers: dense layers of the mapping network (paper 002: 2).
        base_channels / max_channels: channels of the finest level / cap.
        num_classes, label_embedding_dim: label conditioning (embedding concatenated to z).

    Shape:
        z: (B, latent_dim) [, code (B, K)] -> (B, 1, *size).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 512, w_dim: int = 0,
                 mapping_layers: int = 2, base_channels: int = 64, max_channels: int = 512, num_classes: int = 0,
                 label_embedding_dim: int = 0, negative_slope: float = 0.2) -> None:
        super().__init__()
        in_dim = init_levels(self, spatial_dims, size, latent_dim, base_channels, max_channels, num_classes,
                             label_embedding_dim)
        self.w_dim = w_dim or latent_dim
        self.norm = PixelNorm()
        layers: list[nn.Module] = []
        for i in range(mapping_layers):
            layers += [EqualizedLinear(in_dim if i == 0 else self.w_dim, self.w_dim, lr_mul=0.01),
                       nn.LeakyReLU(negative_slope)]
        self.mapping = nn.Sequential(*layers)
        c0 = self.channels[0]
        self.const = nn.Parameter(torch.ones(1, c0, *self.start_shape))
        self.layers = nn.ModuleList()
        self.layer_level: list[int] = []
        for i, c in enumerate(self.channels):
            c_in = c0 if i == 0 else self.channels[i - 1]
            specs = [(c0, c0, False), (c0, c, True)] if i == 0 else [(c_in, c, True), (c, c, True)]
            for a, b, has_conv in specs:
                self.layers.append(StyleLayer(spatial_dims, a, b, self.w_dim, has_conv, negative_slope))
                self.layer_level.append(i)
        self.to_rgb = EqualizedConv(spatial_dims, self.channels[-1], 1, 1, gain=1.0)

    def _noise_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s * 2**lvl for s in self.start_shape) for lvl in self.layer_level]

    def forward(self, z: Tensor, code: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        w = self.mapping(concat_label(self.norm(z), code, self.label_embed))
        shapes = self._noise_shapes()
        if self.training:
            noises = [torch.randn(z.shape[0], 1, *s, device=z.device, dtype=z.dtype) for s in shapes]
        else:
            noises = seeded_noise(z, shapes)
        h = self.const.expand(z.shape[0], *self.const.shape[1:])
        level = 0
        for layer, lvl, noise in zip(self.layers, self.layer_level, noises, strict=True):
            if lvl != level:
                h, level = upsample(h), lvl
            h = layer(h, w, noise)
        return self.to_rgb(h)
