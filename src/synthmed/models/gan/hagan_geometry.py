"""Geometry of HA-GAN: resolutions, sub-volume selection and the partition into sub-volumes.

Paper 001, Sec. III-B/C: the generator works on the intermediate feature maps A at a low resolution
(64^3 for 256^3 images, Sec. III-E; 16^3 for 64^3 images in paper 000) and lifts a slab of A
("sub-volume", 32 x 256^2 at 256^3; 8 x 64^2 at 64^3) to the full resolution during training.  The
slab's first slice r is drawn uniformly on the grid of A, so the low-resolution selector S^L and the
full-resolution selector S^H always pick the same fraction of the volume (the note after Eq. 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from synthmed.nn import check_spatial_dims, expand_size, plan_resolution


def halvings(shape: Sequence[int], spatial_dims: int, min_start: int = 4) -> tuple[tuple[int, ...], int]:
    """:func:`plan_resolution`, but 0 stages (not an error) when ``shape`` cannot be halved."""
    try:
        return plan_resolution(tuple(shape), spatial_dims, min_start)
    except ValueError:
        return tuple(shape), 0


@dataclass(frozen=True)
class HierarchyPlan:
    """Resolutions of one HA-GAN.

    Attributes:
        spatial_dims: 2 or 3.
        size: full-resolution image shape, e.g. (256, 256, 256).
        factor: full / low resolution (4: G^H has log2(4) = 2 upsampling stages).
        low: low-resolution shape of A and X^L, e.g. (64, 64, 64).
        start: shape of G^A's first feature map (4^d), reached from ``low`` in ``n_up`` halvings.
        n_up: upsampling stages of G^A (= stride-2 stages of E^G and D^L).
        depth_low: slices of A in a training sub-volume (8 at 256^3).
    """

    spatial_dims: int
    size: tuple[int, ...]
    factor: int
    low: tuple[int, ...]
    start: tuple[int, ...]
    n_up: int
    depth_low: int

    @property
    def depth_high(self) -> int:
        """Full-resolution slices of a sub-volume (32 at 256^3)."""
        return self.depth_low * self.factor

    @property
    def n_positions(self) -> int:
        """Number of possible starts r (on the grid of A)."""
        return self.low[0] - self.depth_low + 1

    @property
    def high_stages(self) -> int:
        return int(math.log2(self.factor))

    @property
    def subvolume_shape(self) -> tuple[int, ...]:
        """Spatial shape of a full-resolution sub-volume, e.g. (32, 256, 256)."""
        return (self.depth_high, *self.size[1:])


def plan_hierarchy(spatial_dims: int, size: int | Sequence[int], low_factor: int = 4,
                   subvolume_depth: int = 0) -> HierarchyPlan:
    """The :class:`HierarchyPlan` for images of ``size``.

    Args:
        spatial_dims: 2 or 3.
        size: full-resolution size (int or one per dimension); every entry divisible by ``low_factor``.
        low_factor: full / low resolution, a power of two >= 2 (4 in papers 000 and 001).
        subvolume_depth: full-resolution slices per training sub-volume, a multiple of ``low_factor``;
            0 picks ``size[0] / 8`` rounded down to a multiple of ``low_factor`` (at least one slice of A).

    Raises:
        ValueError: naming the offending value.
    """
    dims = check_spatial_dims(spatial_dims)
    shape = expand_size(size, dims)
    if low_factor < 2 or low_factor & (low_factor - 1):
        raise ValueError(f"low_factor must be a power of two >= 2, got {low_factor}")
    if any(s % low_factor for s in shape):
        raise ValueError(f"image size {shape} must be divisible by low_factor {low_factor} in every dimension")
    low = tuple(s // low_factor for s in shape)
    start, n_up = halvings(low, dims)
    if subvolume_depth == 0:
        subvolume_depth = max(low_factor, shape[0] // 8 // low_factor * low_factor)
    if subvolume_depth % low_factor or not 0 < subvolume_depth <= shape[0]:
        raise ValueError(f"subvolume_depth must be a positive multiple of low_factor {low_factor} and at most "
                         f"{shape[0]} (the image's first dimension), got {subvolume_depth}")
    return HierarchyPlan(dims, shape, low_factor, low, start, n_up, subvolume_depth // low_factor)


@dataclass(frozen=True)
class SubVolume:
    """A slab of slices along the first spatial axis, on the low- and full-resolution grids at once.

    Slices ``[start, start + depth)`` of A and X^L (S^L in paper 001) and the synchronised slices
    ``[start * factor, (start + depth) * factor)`` of the full-resolution image (S^H).

    Attributes:
        start: first slice on the low-resolution grid (r in paper 001, in units of A's slices).
        depth: slices on the low-resolution grid.
        factor: full / low resolution.
        n_slices: slices of A, so that :attr:`position` can be normalised.
    """

    start: int
    depth: int
    factor: int
    n_slices: int

    @property
    def high_start(self) -> int:
        return self.start * self.factor

    @property
    def high_depth(self) -> int:
        return self.depth * self.factor

    @property
    def position(self) -> float:
        """r normalised to [0, 1] (0: first possible slab, 1: last), the location D^H receives."""
        span = self.n_slices - self.depth
        return self.start / span if span > 0 else 0.0

    def select_low(self, a: Tensor) -> Tensor:
        """S^L: (B, C, n_slices, ...) -> (B, C, depth, ...)."""
        return a.narrow(2, self.start, self.depth)

    def select_high(self, x: Tensor) -> Tensor:
        """S^H: (B, C, n_slices * factor, ...) -> (B, C, depth * factor, ...)."""
        return x.narrow(2, self.high_start, self.high_depth)


def random_subvolume(plan: HierarchyPlan, generator: torch.Generator | None = None) -> SubVolume:
    """r ~ U{0, ..., n_positions - 1} (paper 001, Sec. III-B: every start equally likely)."""
    start = int(torch.randint(plan.n_positions, (1,), generator=generator).item())
    return SubVolume(start, plan.depth_low, plan.factor, plan.low[0])


def partition(plan: HierarchyPlan, depth_low: int | None = None) -> list[SubVolume]:
    """The non-overlapping sub-volumes T_1..T_V covering the image (paper 001, Sec. III-C); the last
    one is shorter when the slices do not divide evenly."""
    d = depth_low or plan.depth_low
    n = plan.low[0]
    return [SubVolume(s, min(d, n - s), plan.factor, n) for s in range(0, n, d)]


def downsample(x: Tensor, factor: int) -> Tensor:
    """X^L from X^H: average over ``factor``^d blocks (B, C, *S) -> (B, C, *(S / factor))."""
    return F.interpolate(x, size=tuple(s // factor for s in x.shape[2:]), mode="area")
