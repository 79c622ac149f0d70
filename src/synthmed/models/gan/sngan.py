"""SN-GAN generator and discriminator for 2D and 3D images (paper 000, Figs. S2 and S3).

A DC-GAN (Radford et al. 2016) with spectral normalisation in the discriminator (Miyato et al.
2018), pixel-shuffle upsampling with ICNR initialisation in the generator (Shi et al. 2016;
Aitken et al. 2017) and LeakyReLU in both networks, as described in paper 000, "SN-GAN".  Both
networks are built from one ``size`` parameter via :func:`synthmed.nn.plan_resolution`; at 64^3
with the defaults they reproduce the paper's parameter counts exactly (generator 25,681,600;
discriminator 2,770,944 weights).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from synthmed.nn import (
    ShuffleConv,
    batch_norm,
    check_image_shape,
    check_spatial_dims,
    conv,
    down_stack,
    expand_size,
    maybe_spectral_norm,
    plan_resolution,
    stage_channels,
)
from synthmed.nn.conditional import (
    ClassHead,
    LabelEmbedding,
    ProjectionHead,
    concat_label,
    discriminator_outputs,
)


class SNGANGenerator(nn.Module):
    """The SN-GAN generator (paper 000, Fig. S2); also the α-SN-GAN generator.

    Layout for ``n`` stages with channels ``c_0 > ... > c_{n-1}`` (256, 128, 64, 32 at 64^3):

    * projection: 1^d conv without bias ``latent_dim -> c_0 * prod(start_shape)`` applied to the
      latent vector as a 1^d image, reshaped to (c_0, *start_shape); BatchNorm; LeakyReLU
      (1000 -> 16,384 channels, 16,384,000 weights at 64^3);
    * ``n - 1`` :class:`ShuffleConv` blocks ``c_i -> c_{i+1}`` (3^d conv, no bias, pixel shuffle
      x2), each followed by BatchNorm and LeakyReLU;
    * a last ShuffleConv ``c_{n-1} -> out_channels`` and Tanh.

    Args:
        spatial_dims: 2 or 3.
        size: output image size (int or one per dimension), e.g. 64 or (64, 64, 64).
        latent_dim: length of the latent vector z (1000 in paper 000).
        base_channels: channels of the finest hidden stage.
        max_channels: cap on channels per stage.
        out_channels: image channels.
        negative_slope: LeakyReLU slope.
        icnr: ICNR-initialise the pixel-shuffle convs.
        num_classes: > 0: conditional generator ``G(z, code)``, the label embedding concatenated to z
            (paper 000, conditional models).
        label_embedding_dim: size of that embedding (0: the one-hot/multi-hot code itself).

    Shape:
        z: (B, latent_dim), code: (B, num_classes) -> (B, out_channels, *size), values in [-1, 1].
    """

    def __init__(
        self,
        spatial_dims: int,
        size: int | Sequence[int],
        latent_dim: int = 1000,
        base_channels: int = 32,
        max_channels: int = 256,
        out_channels: int = 1,
        negative_slope: float = 0.2,
        icnr: bool = True,
        num_classes: int = 0,
        label_embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_resolution(self.size, spatial_dims)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.label_embed = LabelEmbedding(num_classes, label_embedding_dim) if num_classes else None
        in_dim = latent_dim + (self.label_embed.out_dim if self.label_embed is not None else 0)
        self.out_channels = out_channels
        self.channels = stage_channels(self.n_stages, base_channels, max_channels)

        n_start = 1
        for s in self.start_shape:
            n_start *= s
        self.project = conv(spatial_dims, in_dim, self.channels[0] * n_start, 1, bias=False)
        self.project_act = nn.Sequential(
            batch_norm(spatial_dims, self.channels[0]), nn.LeakyReLU(negative_slope)
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(self.channels[:-1], self.channels[1:], strict=True):
            blocks += [
                ShuffleConv(spatial_dims, c_in, c_out, icnr=icnr),
                batch_norm(spatial_dims, c_out),
                nn.LeakyReLU(negative_slope),
            ]
        blocks += [ShuffleConv(spatial_dims, self.channels[-1], out_channels, icnr=icnr), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: Tensor, code: Tensor | None = None) -> Tensor:
        """Map latent vectors (B, latent_dim) [and label codes (B, K)] to images (B, out_channels, *size)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        z = concat_label(z, code, self.label_embed)
        h = self.project(z.reshape(z.shape[0], z.shape[1], *([1] * self.spatial_dims)))
        h = self.project_act(h.reshape(z.shape[0], self.channels[0], *self.start_shape))
        return self.blocks(h)


class SNGANDiscriminator(nn.Module):
    """The SN-GAN discriminator (paper 000, Fig. S3); also the α-SN-GAN discriminator.

    ``n`` spectrally normalised 4^d convolutions, stride 2, padding 1, no bias, channels
    ``in -> 32 -> 64 -> 128 -> 256`` at 64^3 (capped at ``max_channels``), each followed by
    LeakyReLU(0.2); then a spectrally normalised conv with kernel ``start_shape`` (4^3 at 64^3)
    to one logit.  2,770,944 weights at 64^3.  The final conv is normalised too, so the whole
    network is 1-Lipschitz w.r.t. the reshaped weight matrices (Miyato et al. 2018).

    Args:
        spatial_dims: 2 or 3.
        size: input image size (int or one per dimension).
        in_channels: image channels.
        base_channels: channels after the first conv.
        max_channels: cap on channels per stage.
        negative_slope: LeakyReLU slope.
        spectral_norm: apply spectral normalisation to every conv.
        num_classes: K for a conditional discriminator (``conditioning``).
        conditioning: ``ac`` adds a class head (forward returns ``(logits, class_logits)``),
            ``projection`` adds ``y^T V phi(x)`` to the logit (forward takes the label code);
            anything else: unconditional.
        outputs: logits of the head (1; K for the frozen classifier of conditioning method (b),
            "the same structure as the discriminator", paper 000).

    Shape:
        x: (B, in_channels, *size) [, code (B, K)] -> (B,) raw logits (no sigmoid), (B, outputs) when
        ``outputs > 1``.

    Attributes:
        feature_channels: channels C of :meth:`features`' output, for auxiliary/projection heads.
        start_shape: spatial shape of :meth:`features`' output.
    """

    def __init__(
        self,
        spatial_dims: int,
        size: int | Sequence[int],
        in_channels: int = 1,
        base_channels: int = 32,
        max_channels: int = 256,
        negative_slope: float = 0.2,
        spectral_norm: bool = True,
        num_classes: int = 0,
        conditioning: str = "none",
        outputs: int = 1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_resolution(self.size, spatial_dims)
        self.in_channels = in_channels
        self.outputs = outputs
        channels = stage_channels(self.n_stages, base_channels, max_channels)[::-1]
        self.body = nn.Sequential(*down_stack(spatial_dims, in_channels, channels, negative_slope=negative_slope,
                                              spectral_norm=spectral_norm))
        self.feature_channels = channels[-1]
        head = conv(spatial_dims, self.feature_channels, outputs, self.start_shape, bias=False)
        self.head = maybe_spectral_norm(head, spectral_norm)
        self.conditioning = conditioning if num_classes else "none"
        self.class_head = (ClassHead(spatial_dims, self.feature_channels, num_classes, self.start_shape, spectral_norm)
                           if self.conditioning == "ac" else None)
        self.projection = (ProjectionHead(self.feature_channels, num_classes, spectral_norm)
                           if self.conditioning == "projection" else None)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden map: (B, in_channels, *size) -> (B, feature_channels, *start_shape)."""
        check_image_shape(x, self.in_channels, self.size)
        return self.body(x)

    def forward(self, x: Tensor, code: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Raw logits (B,) [(B, outputs)]; with ``ac`` also class logits (B, K)."""
        h = self.features(x)
        return discriminator_outputs(self.head(h).reshape(x.shape[0], -1), h, code, self.outputs, self.projection,
                                     self.class_head)
