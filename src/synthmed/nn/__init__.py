"""synthmed.nn: dimension-generic layers and the size-to-stages arithmetic shared by all networks."""

from synthmed.nn.blocks import ShuffleConv, check_image_shape, down_stack
from synthmed.nn.factories import (
    PixelShuffleND,
    batch_norm,
    check_spatial_dims,
    conv,
    icnr_,
    maybe_spectral_norm,
    pixel_shuffle_nd,
    pixel_unshuffle_nd,
)
from synthmed.nn.resolution import expand_size, plan_resolution, stage_channels

__all__ = [
    "PixelShuffleND",
    "ShuffleConv",
    "batch_norm",
    "check_image_shape",
    "check_spatial_dims",
    "conv",
    "down_stack",
    "expand_size",
    "icnr_",
    "maybe_spectral_norm",
    "pixel_shuffle_nd",
    "pixel_unshuffle_nd",
    "plan_resolution",
    "stage_channels",
]
