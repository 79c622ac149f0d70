"""PGGAN: progressive growing of GANs (Karras et al. 2018), as used by paper 003 and paper 004 S.2.1
("prog-GAN"), for 2D and 3D images.

* Generator: ``[PN(z); embed(y)]`` -> dense to the start shape -> per level two 3^d equalised convs,
  each followed by LeakyReLU(0.2) and pixel norm; nearest-neighbour upsampling between levels; a 1^d
  "toRGB" conv per level, so consecutive levels of detail can be blended during fade-in.
* Discriminator: the same levels in the opposite order with "fromRGB" 1^d convs and average pooling,
  no pixel norm; the last block has the minibatch standard deviation as an extra channel, a 3^d conv,
  a conv over the whole start shape and a dense output; an auxiliary-classifier head (``ac``, paper 004
  S.2.1) or a projection term can be added.
* Progressive growing: training starts at ``start_resolution`` (paper 004: 8x8) and every new level is
  faded in (``alpha`` from 0 to 1) and then stabilised, each phase lasting ``phase_images`` real images
  (:func:`progressive_schedule`).  The current level and alpha are buffers of both networks, so a
  checkpoint generates at the resolution it was trained to; outputs are always returned at full size
  (nearest-neighbour upsampling of the current level) and the discriminator average-pools its input down
  to the current level, so the training loop, previews and the sampler need not know about levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.nn import check_spatial_dims, expand_size, plan_resolution, stage_channels
from synthmed.nn.conditional import LabelEmbedding, concat_label, discriminator_outputs
from synthmed.nn.progressive import (
    EqualizedConv,
    EqualizedLinear,
    MinibatchStd,
    PixelNorm,
    downsample,
    upsample,
)


def progressive_schedule(images_seen: int, phase_images: int, start_level: int, n_levels: int) -> tuple[int, float]:
    """(level, alpha) after ``images_seen`` real images (Karras et al. 2018, Sec. 3).

    Phase 0 trains ``start_level`` (alpha 1); then for each further level a fade-in phase (alpha rising
    linearly from 0 to 1) and a stabilisation phase (alpha 1), each ``phase_images`` long; after the
    last level, training stays there.

    Args:
        images_seen: real images shown to the discriminator so far.
        phase_images: images per phase (paper 004 S.2.1: 1.4M up to 32x32, 1M above).
        start_level: first level trained (0 = the start shape).
        n_levels: number of levels (the last one is the full resolution).
    """
    if phase_images < 1:
        raise ValueError(f"phase_images must be positive, got {phase_images}")
    phase, within = divmod(int(images_seen), int(phase_images))
    if phase == 0:
        return start_level, 1.0
    grown, part = divmod(phase - 1, 2)  # part 0: fade-in, part 1: stabilise
    level = start_level + grown + 1
    if level >= n_levels:
        return n_levels - 1, 1.0
    return level, (within / phase_images if part == 0 else 1.0)


class ProgressiveNet(nn.Module):
    """Level/alpha buffers shared by the progressive generator and discriminator."""

    n_levels: int

    def _init_progress(self, level: int) -> None:
        if not 0 <= level < self.n_levels:
            raise ValueError(f"start level must lie in [0, {self.n_levels}), got {level}")
        self.start_level = int(level)
        self.register_buffer("level", torch.tensor(int(level)))
        self.register_buffer("alpha", torch.tensor(1.0))

    def set_progress(self, level: int, alpha: float) -> None:
        """Select the level being trained and the fade-in weight of its newest layers."""
        if not 0 <= level < self.n_levels:
            raise ValueError(f"level must lie in [0, {self.n_levels}), got {level}")
        self.level.fill_(int(level))
        self.alpha.fill_(float(alpha))


def level_channels(n_levels: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels of each level, coarsest first (paper 004: 512 up to 32x32, halved per level above)."""
    return stage_channels(n_levels, base_channels, max_channels)


def init_levels(net: nn.Module, spatial_dims: int, size: int | Sequence[int], latent_dim: int, base_channels: int,
                max_channels: int, num_classes: int, label_embedding_dim: int) -> int:
    """The level plan and label input shared by the level-wise generators (PGGAN, cpD-GAN, StyleGAN-lite):
    sets ``spatial_dims``, ``size``, ``start_shape``, ``n_levels``, ``latent_dim``, ``num_classes``,
    ``channels`` and ``label_embed`` on ``net``; returns the input width (z plus the label embedding)."""
    net.spatial_dims = check_spatial_dims(spatial_dims)
    net.size = expand_size(size, spatial_dims)
    net.start_shape, n_up = plan_resolution(net.size, spatial_dims)
    net.n_levels = n_up + 1
    net.latent_dim, net.num_classes = latent_dim, num_classes
    net.channels = level_channels(net.n_levels, base_channels, max_channels)
    net.label_embed = LabelEmbedding(num_classes, label_embedding_dim) if num_classes else None
    return latent_dim + (net.label_embed.out_dim if net.label_embed is not None else 0)


class PGGANGenerator(ProgressiveNet):
    """Progressive generator (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        size: output size.
        latent_dim: z length (512 in paper 004).
        base_channels / max_channels: channels of the finest level / cap (512).
        num_classes: > 0: ``G(z, code)`` with the label embedding concatenated to the normalised z.
        label_embedding_dim: embedding size (0: the code itself).
        start_level: the level trained first.
        negative_slope: LeakyReLU slope.

    Shape:
        z: (B, latent_dim) [, code (B, K)] -> (B, 1, *size) at the current level, upsampled to full size.
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 512,
                 base_channels: int = 128, max_channels: int = 512, num_classes: int = 0,
                 label_embedding_dim: int = 0, start_level: int = 0, negative_slope: float = 0.2) -> None:
        super().__init__()
        in_dim = init_levels(self, spatial_dims, size, latent_dim, base_channels, max_channels, num_classes,
                             label_embedding_dim)
        c0 = self.channels[0]
        self.norm = PixelNorm()
        act = nn.LeakyReLU(negative_slope)
        self.dense = EqualizedLinear(in_dim, c0 * math.prod(self.start_shape), gain=math.sqrt(2) / 4)
        self.blocks = nn.ModuleList()
        for i, c in enumerate(self.channels):
            c_in = c0 if i == 0 else self.channels[i - 1]
            layers: list[nn.Module] = [] if i == 0 else [EqualizedConv(spatial_dims, c_in, c), act, PixelNorm()]
            layers += [EqualizedConv(spatial_dims, c, c), act, PixelNorm()]
            self.blocks.append(nn.Sequential(*layers))
        self.to_rgb = nn.ModuleList(EqualizedConv(spatial_dims, c, 1, 1, gain=1.0) for c in self.channels)
        self.act = act
        self._init_progress(start_level)

    def forward(self, z: Tensor, code: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        level, alpha = int(self.level), float(self.alpha)
        x = concat_label(self.norm(z), code, self.label_embed)
        h = self.norm(self.act(self.dense(x))).reshape(z.shape[0], self.channels[0], *self.start_shape)
        prev = h
        for i in range(level + 1):
            if i > 0:
                prev = h
                h = upsample(h)
            h = self.blocks[i](h)
        rgb = self.to_rgb[level](h)
        if level > 0 and alpha < 1:
            rgb = torch.lerp(upsample(self.to_rgb[level - 1](prev)), rgb, alpha)
        return upsample(rgb, 2 ** (self.n_levels - 1 - level))


class PGGANFinalBlock(nn.Module):
    """The last discriminator block (minibatch std, 3^d conv, conv over the start shape) and its heads:
    the logit, optional class logits (``ac``) and optional projection term (``projection``).

    Shape:
        h: (B, C, *start_shape) [, code (B, K)] -> logits (B,) or (logits, class logits (B, K)).
    """

    def __init__(self, spatial_dims: int, channels: int, start_shape: Sequence[int], num_classes: int = 0,
                 conditioning: str = "none", outputs: int = 1, group_size: int = 4,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        act = nn.LeakyReLU(negative_slope)
        self.body = nn.Sequential(MinibatchStd(group_size), EqualizedConv(spatial_dims, channels + 1, channels), act,
                                  EqualizedConv(spatial_dims, channels, channels, tuple(start_shape), padding=0), act)
        self.outputs = outputs
        self.out = EqualizedLinear(channels, outputs, gain=1.0)
        self.conditioning = conditioning if num_classes else "none"
        self.class_out = EqualizedLinear(channels, num_classes, gain=1.0) if self.conditioning == "ac" else None
        self.embed = (EqualizedLinear(num_classes, channels, gain=1.0, bias=False)
                      if self.conditioning == "projection" else None)

    def forward(self, h: Tensor, code: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        v = self.body(h).flatten(1)
        projection = None if self.embed is None else (lambda v, code: (self.embed(code.to(v.dtype)) * v).sum(1))
        return discriminator_outputs(self.out(v), v, code, self.outputs, projection, self.class_out)


class PGGANDiscriminator(ProgressiveNet):
    """Progressive discriminator (see the module docstring); also StyleGAN-lite's discriminator
    (paper 002: "adopted from the implementation of Progressive GANs"), fixed at the last level.

    Shape:
        x: (B, 1, *size) [, code (B, K)] -> logits (B,) (``(logits, class_logits)`` with ``ac``).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], base_channels: int = 128,
                 max_channels: int = 512, num_classes: int = 0, conditioning: str = "none", outputs: int = 1,
                 start_level: int = 0, group_size: int = 4, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, n_up = plan_resolution(self.size, spatial_dims)
        self.n_levels = n_up + 1
        self.channels = level_channels(self.n_levels, base_channels, max_channels)
        act = nn.LeakyReLU(negative_slope)
        self.from_rgb = nn.ModuleList(nn.Sequential(EqualizedConv(spatial_dims, 1, c, 1), act) for c in self.channels)
        self.blocks = nn.ModuleList([nn.Identity()])
        for i in range(1, self.n_levels):
            c, c_out = self.channels[i], self.channels[i - 1]
            self.blocks.append(nn.Sequential(EqualizedConv(spatial_dims, c, c), act,
                                             EqualizedConv(spatial_dims, c, c_out), act))
        self.final = PGGANFinalBlock(spatial_dims, self.channels[0], self.start_shape, num_classes, conditioning,
                                     outputs, group_size, negative_slope)
        self._init_progress(start_level)

    def fade_real(self, x: Tensor) -> Tensor:
        """Real images as the discriminator sees them at the current level and alpha (Karras et al.
        blend the reals during fade-in too), returned at full size."""
        level, alpha = int(self.level), float(self.alpha)
        f = 2 ** (self.n_levels - 1 - level)
        x_l = downsample(x, f)
        if level > 0 and alpha < 1:
            x_l = torch.lerp(upsample(downsample(x_l)), x_l, alpha)
        return upsample(x_l, f)

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        level, alpha = int(self.level), float(self.alpha)
        x_l = downsample(x, 2 ** (self.n_levels - 1 - level))
        h = self.from_rgb[level](x_l)
        for i in range(level, 0, -1):
            h = downsample(self.blocks[i](h))
            if i == level and alpha < 1:
                h = torch.lerp(self.from_rgb[level - 1](downsample(x_l)), h, alpha)
        return self.final(h, code)
