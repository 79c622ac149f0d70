"""A dimension-generic residual block (He et al. 2016), as used by the IntroVAE encoder and decoder.

IntroVAE (Huang et al. 2018; paper 002, Sec. 3.2, "Introspective Variational Autoencoder") builds
its networks from PGGAN-like stages "with the additional use of residual blocks, where each layer
feeds into the next layer and directly into the layer 2-3 depths further".
"""

from __future__ import annotations

from torch import Tensor, nn

from synthmed.nn.factories import batch_norm, check_spatial_dims, conv


class ResidualBlock(nn.Module):
    """Two 3^d convolutions with BatchNorm and a skip connection.

    ``out = LeakyReLU(BN(conv(LeakyReLU(BN(conv(x))))) + skip(x))`` where ``skip`` is the identity
    when the channels agree and a 1^d convolution otherwise.  The spatial size is unchanged
    (resampling is done outside the block: average pooling / nearest-neighbour upsampling).

    Args:
        spatial_dims: 2 or 3 (1 also works).
        in_channels: input channels C.
        out_channels: output channels C'.
        negative_slope: LeakyReLU slope.

    Shape:
        (B, C, *S) -> (B, C', *S).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.body = nn.Sequential(
            conv(spatial_dims, in_channels, out_channels, 3, padding=1, bias=False),
            batch_norm(spatial_dims, out_channels),
            nn.LeakyReLU(negative_slope),
            conv(spatial_dims, out_channels, out_channels, 3, padding=1, bias=False),
            batch_norm(spatial_dims, out_channels),
        )
        self.skip: nn.Module = (nn.Identity() if in_channels == out_channels
                                else conv(spatial_dims, in_channels, out_channels, 1, bias=False))
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))
