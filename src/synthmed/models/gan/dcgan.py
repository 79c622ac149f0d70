"""DCGAN baseline (Radford et al. 2016; paper 003 compares PGGAN with it) for 2D and 3D images.

* Generator: a transposed conv from the latent (a 1^d image) to the start shape, then stride-2 4^d
  transposed convs halving the channels, BatchNorm and ReLU after each but the last, Tanh at the end.
* Discriminator: stride-2 4^d convs with LeakyReLU(0.2), BatchNorm after every conv but the first, a
  conv over the whole start shape to one logit (the sigmoid is in the non-saturating loss); optional
  auxiliary-classifier head or projection term on the last features.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.factories import Conv
from torch import Tensor, nn

from synthmed.nn import (
    batch_norm,
    check_image_shape,
    check_spatial_dims,
    conv,
    down_stack,
    expand_size,
    plan_resolution,
)
from synthmed.nn.conditional import (
    ClassHead,
    LabelEmbedding,
    ProjectionHead,
    concat_label,
    discriminator_outputs,
)
from synthmed.nn.resolution import stage_channels


def _conv_t(spatial_dims: int, c_in: int, c_out: int, kernel: int | tuple[int, ...], stride: int = 1,
            padding: int = 0) -> nn.Module:
    return Conv[Conv.CONVTRANS, spatial_dims](c_in, c_out, kernel, stride=stride, padding=padding, bias=False)


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: weights N(0, 0.02); BatchNorm scales N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator.

    Shape:
        z: (B, latent_dim) [, code (B, K)] -> (B, 1, *size) in [-1, 1].
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 100, base_channels: int = 128,
                 max_channels: int = 1024, num_classes: int = 0, label_embedding_dim: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, n_stages = plan_resolution(self.size, spatial_dims)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.label_embed = LabelEmbedding(num_classes, label_embedding_dim) if num_classes else None
        in_dim = latent_dim + (self.label_embed.out_dim if self.label_embed is not None else 0)
        ch = stage_channels(n_stages, base_channels, max_channels)
        layers: list[nn.Module] = [_conv_t(spatial_dims, in_dim, ch[0], self.start_shape),
                                   batch_norm(spatial_dims, ch[0]), nn.ReLU()]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [_conv_t(spatial_dims, c_in, c_out, 4, 2, 1), batch_norm(spatial_dims, c_out), nn.ReLU()]
        layers += [_conv_t(spatial_dims, ch[-1], 1, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: Tensor, code: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        x = concat_label(z, code, self.label_embed)
        return self.body(x.reshape(*x.shape, *([1] * self.spatial_dims)))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (no spectral norm); ``outputs`` > 1 makes it the frozen classifier (b).

    Shape:
        x: (B, 1, *size) [, code (B, K)] -> logits (B,) (``(logits, class_logits)`` with ``ac``).
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], base_channels: int = 128,
                 max_channels: int = 1024, num_classes: int = 0, conditioning: str = "none", outputs: int = 1,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, n_stages = plan_resolution(self.size, spatial_dims)
        ch = stage_channels(n_stages, base_channels, max_channels)[::-1]
        self.body = nn.Sequential(*down_stack(spatial_dims, 1, ch, negative_slope=negative_slope,
                                              batch_norm_after_first=True))
        self.outputs = outputs
        self.head = conv(spatial_dims, ch[-1], outputs, self.start_shape, bias=False)
        self.conditioning = conditioning if num_classes else "none"
        self.class_head = (ClassHead(spatial_dims, ch[-1], num_classes, self.start_shape, spectral_norm=False)
                           if self.conditioning == "ac" else None)
        self.projection = (ProjectionHead(ch[-1], num_classes, spectral_norm=False)
                           if self.conditioning == "projection" else None)
        _dcgan_init(self)

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        check_image_shape(x, 1, self.size)
        h = self.body(x)
        return discriminator_outputs(self.head(h).reshape(x.shape[0], -1), h, code, self.outputs, self.projection,
                                     self.class_head)
