"""Reusable building blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from synthmed.nn.factories import (
    PixelShuffleND,
    batch_norm,
    check_spatial_dims,
    conv,
    icnr_,
    maybe_spectral_norm,
)


class ShuffleConv(nn.Module):
    """Sub-pixel convolution upsampling: conv to ``out * r**d`` channels, then pixel shuffle.

    The "ShuffleConv" blocks of the SN-GAN generator (paper 000, Fig. S2; Shi et al. 2016), with
    ICNR initialisation (Aitken et al. 2017) so the block starts as conv + nearest-neighbour
    upsampling and produces no checkerboard artefacts.  A 3x3x3 block 256 -> 128 has
    256 * 128 * 8 * 27 = 7,077,888 weights.

    Args:
        spatial_dims: 2 or 3 (1 also works).
        in_channels: input channels C.
        out_channels: output channels C'.
        scale: upsampling factor r.
        kernel_size: odd conv kernel edge; padding keeps the spatial size before shuffling.
        bias: whether the conv has a bias (the paper's generator has none).
        icnr: use ICNR initialisation (otherwise PyTorch's default conv init).

    Shape:
        (B, C, *S) -> (B, C', *(r * S)).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale: int = 2,
        kernel_size: int = 3,
        bias: bool = False,
        icnr: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.scale = scale
        block = scale**spatial_dims
        self.conv = conv(
            spatial_dims, in_channels, out_channels * block, kernel_size, padding=kernel_size // 2, bias=bias
        )
        self.shuffle = PixelShuffleND(scale)
        if icnr:
            self.reset_icnr()

    def reset_icnr(self) -> None:
        """(Re-)apply ICNR to the conv weight; a bias is made equal within each r^d block."""
        icnr_(self.conv.weight, self.scale, self.spatial_dims)
        if self.conv.bias is not None:
            block = self.scale**self.spatial_dims
            with torch.no_grad():
                self.conv.bias.copy_(self.conv.bias[::block].repeat_interleave(block))

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


def down_stack(spatial_dims: int, in_channels: int, channels: Sequence[int], *, negative_slope: float = 0.2,
               batch_norm_after_first: bool = False, bias: bool = False,
               spectral_norm: bool = False) -> list[nn.Module]:
    """Stride-2 4^d convolutions (padding 1), each halving the grid, with LeakyReLU.

    The shared down-sampling path of the SN-GAN discriminator (paper 000 Fig. S3: spectral norm, no
    bias, no normalisation) and the alpha-SN-GAN encoder (Fig. S4: bias, BatchNorm after every conv
    but the first).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: output channels of each conv, finest first.
        negative_slope: LeakyReLU slope.
        batch_norm_after_first: BatchNorm after every conv except the first.
        bias: convs with bias.
        spectral_norm: spectrally normalise every conv.

    Returns:
        The layers, for an ``nn.Sequential``.
    """
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip([in_channels, *channels[:-1]], channels, strict=True)):
        layers.append(maybe_spectral_norm(conv(spatial_dims, c_in, c_out, 4, stride=2, padding=1, bias=bias),
                                          spectral_norm))
        if batch_norm_after_first and i > 0:
            layers.append(batch_norm(spatial_dims, c_out))
        layers.append(nn.LeakyReLU(negative_slope))
    return layers


def check_image_shape(x: Tensor, channels: int, size: Sequence[int]) -> None:
    """ValueError unless ``x`` is (B, channels, *size)."""
    if tuple(x.shape[1:]) != (channels, *size):
        raise ValueError(f"expected input of shape (B, {channels}, {', '.join(map(str, size))}), "
                         f"got {tuple(x.shape)}")
