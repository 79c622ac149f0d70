"""cpD-GAN (paper 004 S.2.2) for 2D and 3D images: prog-GAN without progressive growing, a generator with
output skip connections, a residual discriminator, a projection discriminator and label- and
noise-conditioned pixel norm (Eq. 1), trained with WGAN-GP.

* Generator: ``s = [z; y]`` -> dense to the start shape; per level (nearest-neighbour upsampling between
  levels) two equalised 3^d convs, each followed by LeakyReLU and the conditional pixel norm of Eq. 1
  with ``gamma, beta`` affine in s; a 1^d "toRGB" conv per level whose outputs are upsampled and summed
  (output skips, as StyleGAN2).
* Discriminator: "fromRGB" at full resolution, then per level a residual block ``(conv3, LReLU, conv3,
  LReLU, avgpool) + (avgpool, 1^d conv)`` scaled by 1/sqrt(2); prog-GAN's last block (minibatch std) with
  the projection term ``y^T V phi(x)`` (Miyato & Koyama 2018) added to the logit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.models.gan.pggan import PGGANFinalBlock, init_levels, level_channels
from synthmed.nn import check_spatial_dims, expand_size, plan_resolution
from synthmed.nn.progressive import ConditionalPixelNorm, EqualizedConv, EqualizedLinear, downsample, upsample


class CPDGenerator(nn.Module):
    """Skip-connection generator with conditional pixel norm (paper 004 S.2.2, Eq. 1, Fig. S1).

    Args:
        spatial_dims: 2 or 3.
        size: output size.
        latent_dim: z length.
        base_channels / max_channels: channels of the finest level / cap (512 in paper 004).
        num_classes: K (0: unconditional; Eq. 1 then uses z alone).
        label_embedding_dim: size of the label embedding in ``[z; y]`` (0: the code itself, as Eq. 1).

    Shape:
        z: (B, latent_dim) [, code (B, K)] -> (B, 1, *size).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 512, base_channels: int = 512,
                 max_channels: int = 512, num_classes: int = 0, label_embedding_dim: int = 0,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        s_dim = init_levels(self, spatial_dims, size, latent_dim, base_channels, max_channels, num_classes,
                            label_embedding_dim)
        c0 = self.channels[0]
        self.act = nn.LeakyReLU(negative_slope)
        self.dense = EqualizedLinear(s_dim, c0 * math.prod(self.start_shape), gain=math.sqrt(2) / 4)
        self.dense_norm = ConditionalPixelNorm(c0, s_dim)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, c in enumerate(self.channels):
            c_in = c0 if i == 0 else self.channels[i - 1]
            pairs = [(c_in, c)] if i == 0 else [(c_in, c), (c, c)]
            self.convs.append(nn.ModuleList(EqualizedConv(spatial_dims, a, b) for a, b in pairs))
            self.norms.append(nn.ModuleList(ConditionalPixelNorm(b, s_dim) for _, b in pairs))
        self.to_rgb = nn.ModuleList(EqualizedConv(spatial_dims, c, 1, 1, gain=1.0) for c in self.channels)

    def forward(self, z: Tensor, code: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if self.label_embed is not None:
            if code is None:
                raise ValueError(f"this generator is conditional ({self.num_classes} classes): pass a label code")
            s = torch.cat([z, self.label_embed(code.to(z.dtype))], 1)
        else:
            s = z
        h = self.act(self.dense(s)).reshape(z.shape[0], self.channels[0], *self.start_shape)
        h = self.dense_norm(h, s)
        rgb: Tensor | None = None
        for i in range(self.n_levels):
            if i > 0:
                h = upsample(h)
            for conv, norm in zip(self.convs[i], self.norms[i], strict=True):
                h = norm(self.act(conv(h)), s)
            out = self.to_rgb[i](h)
            rgb = out if rgb is None else upsample(rgb) + out
        assert rgb is not None
        return rgb


class ResidualDown(nn.Module):
    """Residual discriminator block: ``((conv3, LReLU, conv3, LReLU, avgpool)(x) + conv1(avgpool(x))) / sqrt(2)``."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        act = nn.LeakyReLU(negative_slope)
        self.main = nn.Sequential(EqualizedConv(spatial_dims, c_in, c_in), act, EqualizedConv(spatial_dims, c_in, c_out), act)
        self.skip = EqualizedConv(spatial_dims, c_in, c_out, 1, gain=1.0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (downsample(self.main(x)) + self.skip(downsample(x))) / math.sqrt(2)


class CPDDiscriminator(nn.Module):
    """Residual projection discriminator (paper 004 S.2.2).

    Shape:
        x: (B, 1, *size) [, code (B, K)] -> logits (B,) (``(logits, class_logits)`` with ``ac``).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], base_channels: int = 512,
                 max_channels: int = 512, num_classes: int = 0, conditioning: str = "none", outputs: int = 1,
                 group_size: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, n_up = plan_resolution(self.size, spatial_dims)
        channels = level_channels(n_up + 1, base_channels, max_channels)
        self.from_rgb = nn.Sequential(EqualizedConv(spatial_dims, 1, channels[-1], 1), nn.LeakyReLU(negative_slope))
        self.blocks = nn.Sequential(*(ResidualDown(spatial_dims, channels[i], channels[i - 1], negative_slope)
                                      for i in range(n_up, 0, -1)))
        self.final = PGGANFinalBlock(spatial_dims, channels[0], self.start_shape, num_classes, conditioning, outputs,
                                     group_size, negative_slope)

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        return self.final(self.blocks(self.from_rgb(x)), code)
