"""How an image size maps onto a stack of stride-2 stages.

Every convolutional network in synthmed is built from one ``size`` parameter: the image is halved
stage by stage down to a small ``start_shape`` (4^3 for the 64^3 networks of paper 000,
Figs. S2-S5), and the generator mirrors the same plan upwards.  This module holds that arithmetic
so the generator, discriminator and encoder always agree.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence


def expand_size(size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """Return ``size`` as one positive integer per spatial dimension.

    Args:
        size: one edge length for a cubic/square image, or one length per spatial dimension.
        spatial_dims: the number of spatial dimensions (1, 2 or 3).

    Returns:
        A tuple of ``spatial_dims`` positive integers.

    Raises:
        ValueError: if ``spatial_dims`` < 1, the length of ``size`` does not match or an entry is
            not a positive integer.
    """
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be >= 1, got {spatial_dims}")
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != spatial_dims:
            raise ValueError(f"size {tuple(size)} has {len(size)} entries, expected {spatial_dims}")
        entries = list(size)
    else:
        entries = [size] * spatial_dims
    dims = []
    for d in entries:
        if isinstance(d, bool) or not hasattr(d, "__index__") or operator.index(d) < 1:
            raise ValueError(f"size entries must be positive integers, got {size!r}")
        dims.append(operator.index(d))
    return tuple(dims)


def plan_resolution(
    size: int | Sequence[int], spatial_dims: int, min_start: int = 4
) -> tuple[tuple[int, ...], int]:
    """Plan the stride-2 stages between an image size and the smallest feature map.

    All dimensions are halved together while every dimension is even and every half is at least
    ``min_start``.  Examples: 64 -> ((4, 4, 4), 4) in 3D as in paper 000 (Figs. S2-S4);
    32 -> 3 stages; 128 -> 5 stages; 28 (2D) -> ((7, 7), 2); 224 (2D) -> ((7, 7), 5).

    Args:
        size: the image size, one int or one int per spatial dimension.
        spatial_dims: the number of spatial dimensions.
        min_start: the smallest allowed edge of the start shape.

    Returns:
        ``(start_shape, n_stages)`` with ``start_shape[i] * 2**n_stages == size[i]``.

    Raises:
        ValueError: if ``size`` cannot be halved even once under these rules.
    """
    if min_start < 1:
        raise ValueError(f"min_start must be >= 1, got {min_start}")
    shape = expand_size(size, spatial_dims)
    n_stages = 0
    while all(d % 2 == 0 and d // 2 >= min_start for d in shape):
        shape = tuple(d // 2 for d in shape)
        n_stages += 1
    if n_stages == 0:
        full = expand_size(size, spatial_dims)
        raise ValueError(
            f"image size {full} cannot be halved to a start shape with every edge >= {min_start}; "
            "use sizes like 32, 64, 128 (or 28, 224 in 2D)"
        )
    return shape, n_stages


def stage_channels(n_stages: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels per stage, coarsest first: stage ``i`` has ``min(max, base * 2**(n-1-i))``.

    For 64^3 (4 stages, base 32, max 256) this is ``[256, 128, 64, 32]`` as in paper 000
    Fig. S2; 128^3 gives ``[256, 256, 128, 64, 32]``.  Discriminators and encoders use the same
    list reversed (finest first).

    Args:
        n_stages: number of stride-2 stages (from :func:`plan_resolution`).
        base_channels: channels at the finest stage.
        max_channels: cap on the channels of any stage.

    Returns:
        A list of ``n_stages`` channel counts.
    """
    if base_channels < 1 or max_channels < 1:
        raise ValueError(f"channels must be positive, got base={base_channels}, max={max_channels}")
    return [min(max_channels, base_channels * 2 ** (n_stages - 1 - i)) for i in range(n_stages)]
