"""α-SN-GAN encoder and code discriminator (paper 000, Figs. S4 and S5).

The encoder maps real images to latent codes used to reconstruct them with the generator
(α-GAN, Rosca et al. 2017; α-WGAN-GP, Kwon et al. 2019); the code discriminator separates
sampled latent codes ("real") from encoded ones ("fake") and is trained with the same loss as
the image discriminator (paper 000, "α-SN-GAN").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from synthmed.nn import (
    check_image_shape,
    check_spatial_dims,
    conv,
    down_stack,
    expand_size,
    maybe_spectral_norm,
    plan_resolution,
    stage_channels,
)


class AlphaEncoder(nn.Module):
    """The α-SN-GAN image encoder (paper 000, Fig. S4).

    ``n`` 4^d convolutions, stride 2, padding 1, with bias, channels ``in -> 32 -> 64 -> 128 ->
    256`` at 64^3 (capped at ``max_channels``); the first is followed by LeakyReLU, the others by
    BatchNorm and LeakyReLU; a last conv with kernel ``start_shape`` and bias maps to
    ``latent_dim``.  19,140,936 parameters at 64^3 with the defaults.

    Args:
        spatial_dims: 2 or 3.
        size: input image size (int or one per dimension).
        in_channels: image channels.
        latent_dim: length of the output code (the generator's ``latent_dim``).
        base_channels: channels after the first conv.
        max_channels: cap on channels per stage.
        negative_slope: LeakyReLU slope.

    Shape:
        x: (B, in_channels, *size) -> (B, latent_dim).
    """

    def __init__(
        self,
        spatial_dims: int,
        size: int | Sequence[int],
        in_channels: int = 1,
        latent_dim: int = 1000,
        base_channels: int = 32,
        max_channels: int = 256,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.size = expand_size(size, spatial_dims)
        self.start_shape, self.n_stages = plan_resolution(self.size, spatial_dims)
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        channels = stage_channels(self.n_stages, base_channels, max_channels)[::-1]
        layers = down_stack(spatial_dims, in_channels, channels, negative_slope=negative_slope,
                            batch_norm_after_first=True, bias=True)
        layers.append(conv(spatial_dims, channels[-1], latent_dim, self.start_shape, bias=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Encode images (B, in_channels, *size) to codes (B, latent_dim)."""
        check_image_shape(x, self.in_channels, self.size)
        return self.body(x).reshape(x.shape[0], self.latent_dim)


class CodeDiscriminator(nn.Module):
    """The α-SN-GAN code discriminator (paper 000, Fig. S5).

    Spectrally normalised linear layers without bias: ``latent_dim -> hidden_dim`` then
    ``n_hidden - 1`` times ``hidden_dim -> hidden_dim``, each followed by LeakyReLU, then
    ``hidden_dim -> 1``.  With the defaults (1000, 2048, 2 hidden layers): 2,048,000 + 4,194,304
    + 2,048 = 6,244,352 weights.

    Args:
        latent_dim: code length.
        hidden_dim: width of the hidden layers.
        n_hidden: number of hidden layers (>= 1).
        negative_slope: LeakyReLU slope.
        spectral_norm: apply spectral normalisation to every linear layer.

    Shape:
        z: (B, latent_dim) -> (B,) raw logits; sampled codes count as real, encoded as fake.
    """

    def __init__(
        self,
        latent_dim: int = 1000,
        hidden_dim: int = 2048,
        n_hidden: int = 2,
        negative_slope: float = 0.2,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if n_hidden < 1:
            raise ValueError(f"n_hidden must be >= 1, got {n_hidden}")
        self.latent_dim = latent_dim
        widths = [latent_dim] + [hidden_dim] * n_hidden
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                maybe_spectral_norm(nn.Linear(w_in, w_out, bias=False), spectral_norm),
                nn.LeakyReLU(negative_slope),
            ]
        layers.append(maybe_spectral_norm(nn.Linear(hidden_dim, 1, bias=False), spectral_norm))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Raw logits for codes: (B, latent_dim) -> (B,)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.body(z).reshape(z.shape[0])
