"""HA-GAN networks: hierarchical generator, discriminators and encoders (paper 001, Sec. III; supp. Tables I-VII).

Geometry (:class:`HierarchyPlan`): a full-resolution image of size S is generated through the
intermediate feature maps ``A = G^A(z)`` at the low resolution ``S / low_factor`` (64^3 at 256^3,
Sec. III-E; 16^3 at 64^3, paper 000).  G^L turns A into the low-resolution image (Eq. 2); G^H lifts a
slab of A to the full resolution (Eq. 3) during training and all of A at inference.  A training slab
("sub-volume") has ``S / 8`` full-resolution slices along the first spatial axis (32 x 256 x 256 at
256^3, 8 x 64 x 64 at 64^3), i.e. ``S / (8 low_factor)`` slices of A; its start r is drawn uniformly on
the grid of A (:class:`SubVolume`), so the sub-volume selectors S^L (on A and X^L) and S^H (on the
image) pick exactly the same fraction of the volume (the note after Eq. 5).

All channel counts derive from ``base_channels`` (32) and ``max_channels`` (512); with the defaults at
256^3 the networks are those of the supplementary tables: G^A 512-512-256-128-64, G^L 32-16-1, G^H
32-1, E^H 32-32-64, E^G 32-64-128-256-latent, D^L 32-64-128-256-1, D^H 16-...-512-128 then dense
64-32-1 (79.8 M parameters in all, Table VII: 79.7 M).  Other sizes use the same rules.

Two deliberate differences from the paper's G^H, both switchable (``slice_norm=False``, ``halo=0``
restore Table III): G^H normalises every slice on its own (:class:`SliceGroupNorm`) and, in training,
sees ``halo`` slices of A on each side of the slab as context, cropped away again.  G^H is then local
along the slice axis, so the training path on a slab equals the same slab of the inference path
G^H(G^A(z)) exactly, and full volumes can be generated slab by slab in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.models.gan.hagan_geometry import (
    HierarchyPlan,
    SubVolume,
    halvings,
    partition,
    plan_hierarchy,
)
from synthmed.nn import check_image_shape, conv, down_stack, maybe_spectral_norm, stage_channels
from synthmed.nn.slicenorm import SliceGroupNorm, group_norm


def _conv_norm_act(spatial_dims: int, c_in: int, c_out: int, groups: int) -> list[nn.Module]:
    return [conv(spatial_dims, c_in, c_out, 3, padding=1, bias=True), group_norm(c_out, groups), nn.ReLU()]


class SharedGenerator(nn.Module):
    """G^A (supp. Table I): dense layer to (c_0, *start), then 3^d conv + GroupNorm + ReLU stages with
    nearest-neighbour x2 upsampling in between, up to A = (a_channels, *low).

    Args:
        plan: the geometry.
        latent_dim: length of z.
        channels: channels of the ``plan.n_up + 1`` conv stages, coarsest first (the last is A's).
        num_classes: > 0 concatenates a one-hot class code to z (conditional HA-GAN, paper 001 Sec. IV-C).
        groups: GroupNorm groups.

    Shape:
        z: (B, latent_dim), labels: (B,) int -> A: (B, channels[-1], *plan.low).
    """

    def __init__(self, plan: HierarchyPlan, latent_dim: int, channels: Sequence[int], num_classes: int = 0,
                 groups: int = 8) -> None:
        super().__init__()
        if len(channels) != plan.n_up + 1:
            raise ValueError(f"G^A needs {plan.n_up + 1} channel entries, got {list(channels)}")
        self.plan, self.latent_dim, self.num_classes = plan, latent_dim, num_classes
        self.channels = list(channels)
        self.fc = nn.Linear(latent_dim + num_classes, channels[0] * math.prod(plan.start))
        layers: list[nn.Module] = []
        c_prev = channels[0]
        for i, c in enumerate(channels):
            if i > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += _conv_norm_act(plan.spatial_dims, c_prev, c, groups)
            c_prev = c
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if self.num_classes:
            if labels is None:
                raise ValueError(f"this generator is conditional ({self.num_classes} classes): pass labels")
            code = labels.to(z.dtype) if labels.ndim == 2 else F.one_hot(labels.long(), self.num_classes).to(z.dtype)
            z = torch.cat([z, code], 1)  # one-hot, or the multi-hot findings of multi-label data
        h = self.fc(z).reshape(z.shape[0], self.channels[0], *self.plan.start)
        return self.body(h)


class LowResGenerator(nn.Module):
    """G^L (supp. Table II): A -> X^L with 3^d convs a -> a/2 -> a/4 -> 1, GroupNorm + ReLU, Tanh."""

    def __init__(self, spatial_dims: int, a_channels: int, groups: int = 8) -> None:
        super().__init__()
        c1, c2 = max(1, a_channels // 2), max(1, a_channels // 4)
        self.body = nn.Sequential(*_conv_norm_act(spatial_dims, a_channels, c1, groups),
                                  *_conv_norm_act(spatial_dims, c1, c2, groups),
                                  conv(spatial_dims, c2, 1, 3, padding=1, bias=True), nn.Tanh())

    def forward(self, a: Tensor) -> Tensor:
        return self.body(a)


class HighResGenerator(nn.Module):
    """G^H (supp. Table III): ``log2(factor)`` stages of x2 nearest upsampling + 3^d conv, channels
    a -> a/2 -> ... -> 1, normalisation + ReLU between stages and Tanh at the end.

    With ``slice_norm`` every operation is local along the first spatial axis, so a slab can be
    computed from a slab of A plus :attr:`context` slices on each side, and equals the same slab of the
    full output; the context is cropped stage by stage as soon as it is no longer needed.

    Args:
        spatial_dims: 2 or 3.
        a_channels: channels of A.
        stages: upsampling stages (log2 of full / low resolution).
        slice_norm: :class:`SliceGroupNorm` (default) instead of GroupNorm over the whole (sub-)volume.
        groups: normalisation groups.
    """

    def __init__(self, spatial_dims: int, a_channels: int, stages: int, slice_norm: bool = True,
                 groups: int = 8) -> None:
        super().__init__()
        self.slice_local = slice_norm
        outs = [max(1, a_channels >> (i + 1)) for i in range(stages - 1)] + [1]
        blocks, c_prev = [], a_channels
        for i, c in enumerate(outs):
            layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"),
                                       conv(spatial_dims, c_prev, c, 3, padding=1, bias=True)]
            if i < stages - 1:
                layers += [SliceGroupNorm(c, groups) if slice_norm else group_norm(c, groups), nn.ReLU()]
            else:
                layers.append(nn.Tanh())
            blocks.append(nn.Sequential(*layers))
            c_prev = c
        self.stages = nn.ModuleList(blocks)
        # keep[i]: context slices still needed after stage i (each later 3^d conv needs one more).
        keep = [0] * stages
        for i in range(stages - 2, -1, -1):
            keep[i] = math.ceil((keep[i + 1] + 1) / 2)
        self.keep = keep
        #: slices of A needed on each side of a slab for an exact result.
        self.context = math.ceil((keep[0] + 1) / 2)

    def forward(self, a: Tensor, context: tuple[int, int] = (0, 0)) -> Tensor:
        """(B, a_channels, lo + n + hi, ...) -> (B, 1, n * factor, ...), where ``context = (lo, hi)``
        slices on each side are context only (cropped from the output)."""
        lo, hi = context
        h = a
        for stage, keep in zip(self.stages, self.keep, strict=True):
            h = stage(h)
            lo, hi = 2 * lo, 2 * hi
            cut_lo, cut_hi = max(0, lo - keep), max(0, hi - keep)
            if cut_lo or cut_hi:
                h = h[:, :, cut_lo:h.shape[2] - cut_hi]
            lo, hi = lo - cut_lo, hi - cut_hi
        return h


class SubVolumeEncoder(nn.Module):
    """E^H (supp. Table IV): a full-resolution sub-volume -> its feature maps on A's grid.

    ``log2(factor)`` 4^d stride-2 convs with channels ending at ``a_channels`` (32 -> 64 at 256^3), a
    3^d conv after the first, each with GroupNorm + ReLU.

    Shape:
        (B, 1, depth * factor, *S[1:]) -> (B, a_channels, depth, *S[1:] / factor).
    """

    def __init__(self, spatial_dims: int, a_channels: int, stages: int, groups: int = 8) -> None:
        super().__init__()
        chans = [max(1, a_channels >> (stages - 1 - i)) for i in range(stages)]
        layers: list[nn.Module] = []
        c_prev = 1
        for i, c in enumerate(chans):
            layers += [conv(spatial_dims, c_prev, c, 4, stride=2, padding=1, bias=True), group_norm(c, groups),
                       nn.ReLU()]
            if i == 0:
                layers += _conv_norm_act(spatial_dims, c, c, groups)
            c_prev = c
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class GlobalEncoder(nn.Module):
    """E^G (supp. Table V): the concatenated sub-volume features Â (A's shape) -> latent code Ẑ.

    ``plan.n_up`` 4^d stride-2 convs (32-64-128-256 at 256^3) with GroupNorm + ReLU, then a conv with
    kernel ``plan.start`` to ``latent_dim``.

    Shape:
        (B, a_channels, *plan.low) -> (B, latent_dim).
    """

    def __init__(self, plan: HierarchyPlan, a_channels: int, latent_dim: int, top_channels: int,
                 groups: int = 8) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n = plan.n_up
        chans = [max(1, top_channels >> (n - 1 - i)) for i in range(n)]
        layers: list[nn.Module] = []
        c_prev = a_channels
        for c in chans:
            layers += [conv(plan.spatial_dims, c_prev, c, 4, stride=2, padding=1, bias=True), group_norm(c, groups),
                       nn.ReLU()]
            c_prev = c
        layers.append(conv(plan.spatial_dims, c_prev, latent_dim, plan.start, bias=True))
        self.body = nn.Sequential(*layers)

    def forward(self, a: Tensor) -> Tensor:
        return self.body(a).reshape(a.shape[0], self.latent_dim)


class LowResDiscriminator(nn.Module):
    """D^L (supp. Table VI): spectrally normalised 4^d stride-2 convs (32-64-128-256 at 64^3) with
    LeakyReLU, then a conv with kernel ``plan.start`` to one logit, and to ``num_classes`` class logits
    when conditional (the auxiliary classifier of paper 001 Eq. 9).

    Shape:
        (B, 1, *plan.low) -> logits (B,), class logits (B, num_classes) or None.
    """

    def __init__(self, plan: HierarchyPlan, top_channels: int, negative_slope: float = 0.2,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.low = plan.low
        n = plan.n_up
        chans = [max(1, top_channels >> (n - 1 - i)) for i in range(n)]
        self.body = nn.Sequential(*(down_stack(plan.spatial_dims, 1, chans, negative_slope=negative_slope, bias=True,
                                               spectral_norm=True) if chans else [nn.Identity()]))
        c_last = chans[-1] if chans else 1
        self.head = maybe_spectral_norm(conv(plan.spatial_dims, c_last, 1, plan.start, bias=True))
        self.class_head = (maybe_spectral_norm(conv(plan.spatial_dims, c_last, num_classes, plan.start, bias=True))
                           if num_classes else None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        check_image_shape(x, 1, self.low)
        h = self.body(x)
        cls = self.class_head(h).reshape(x.shape[0], -1) if self.class_head is not None else None
        return self.head(h).reshape(x.shape[0]), cls


def _slab_stages(shape: Sequence[int], spatial_dims: int) -> tuple[list[tuple[tuple[int, ...], ...]], tuple[int, ...]]:
    """Per-stage (kernel, stride, padding) of D^H and the final shape (supp. Table VII generalised).

    In-plane axes are halved (4, 2, 1) down to 4; the slice axis is halved down to 1, with kernel 4
    while it has >= 8 slices and kernel 2 (no padding) below; an axis already done gets (1, 1, 0).
    """
    depth, inplane = shape[0], tuple(shape[1:])
    ip_final, n_ip = halvings(inplane, spatial_dims - 1) if inplane else ((), 0)
    n_d, d = 0, depth
    while d > 1 and d % 2 == 0:
        d, n_d = d // 2, n_d + 1
    stages, d = [], depth
    for i in range(max(n_ip, n_d)):
        if i < n_d:
            k_d = (4, 2, 1) if d >= 8 else (2, 2, 0)
            d //= 2
        else:
            k_d = (1, 1, 0)
        k_ip = (4, 2, 1) if i < n_ip else (1, 1, 0)
        stages.append(tuple(zip(k_d, *([k_ip] * len(inplane)), strict=True)))
    return stages, (d, *ip_final)


class SubVolumeDiscriminator(nn.Module):
    """D^H (supp. Table VII): a full-resolution sub-volume and its location r -> logit.

    Spectrally normalised convs with LeakyReLU (16-32-64-128-256-512 channels at 32 x 256 x 256, see
    :func:`_slab_stages`), a conv over the remaining (1, 4, 4) map to ``top/4`` channels, the location
    concatenated, then dense layers ``top/8`` -> ``top/16`` -> 1; conditional models add a dense class
    head on the last hidden layer (paper 001, Eq. 9).

    Shape:
        x: (B, 1, *plan.subvolume_shape), position: (B,) or float in [0, 1] -> logits (B,), class
        logits (B, num_classes) or None.
    """

    def __init__(self, plan: HierarchyPlan, top_channels: int, negative_slope: float = 0.2,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.shape = plan.subvolume_shape
        dims = plan.spatial_dims
        stages, final = _slab_stages(self.shape, dims)
        n = len(stages)
        chans = [max(1, top_channels >> (n - 1 - i)) for i in range(n)]
        layers: list[nn.Module] = []
        c_prev = 1
        for (k, s, p), c in zip(stages, chans, strict=True):
            layers += [maybe_spectral_norm(conv(dims, c_prev, c, k, stride=s, padding=p, bias=True)),
                       nn.LeakyReLU(negative_slope)]
            c_prev = c
        c_head, h1, h2 = (max(1, top_channels // f) for f in (4, 8, 16))
        layers += [maybe_spectral_norm(conv(dims, c_prev, c_head, final, bias=True)), nn.LeakyReLU(negative_slope)]
        self.body = nn.Sequential(*layers)
        self.dense = nn.Sequential(maybe_spectral_norm(nn.Linear(c_head + 1, h1)), nn.LeakyReLU(negative_slope),
                                   maybe_spectral_norm(nn.Linear(h1, h2)), nn.LeakyReLU(negative_slope))
        self.head = maybe_spectral_norm(nn.Linear(h2, 1))
        self.class_head = maybe_spectral_norm(nn.Linear(h2, num_classes)) if num_classes else None

    def forward(self, x: Tensor, position: Tensor | float) -> tuple[Tensor, Tensor | None]:
        check_image_shape(x, 1, self.shape)
        h = self.body(x).reshape(x.shape[0], -1)
        pos = torch.as_tensor(position, dtype=h.dtype, device=h.device).reshape(-1, 1).expand(x.shape[0], 1)
        h = self.dense(torch.cat([h, pos], 1))
        cls = self.class_head(h) if self.class_head is not None else None
        return self.head(h).reshape(x.shape[0]), cls


class DiscriminatorOutput(NamedTuple):
    """Logits of D^H and D^L (B,) and, when conditional, their class logits (B, num_classes)."""

    high: Tensor
    low: Tensor
    high_class: Tensor | None
    low_class: Tensor | None


def _channel_plan(base_channels: int, max_channels: int) -> dict[str, int]:
    """The channel anchors of every HA-GAN network from ``base_channels`` (32) and ``max_channels`` (512)."""
    return {"a": min(max_channels, 2 * base_channels), "g_top": min(max_channels, 16 * base_channels),
            "e_top": min(max_channels, 8 * base_channels), "dl_top": min(max_channels, 8 * base_channels),
            "dh_top": min(max_channels, 16 * base_channels)}


class HierarchicalGenerator(nn.Module):
    """G = (G^A, G^L, G^H) of paper 001 (Eqs. 2-3 in training, G^H(G^A(z)) at inference).

    Args:
        spatial_dims: 2 or 3.
        size: full-resolution image size.
        latent_dim: length of z (1024 in paper 001).
        base_channels, max_channels: channel anchors (see the module docstring).
        low_factor, subvolume_depth: geometry, see :func:`plan_hierarchy`.
        halo: slices of A given to G^H as context around a training slab (see module docstring).
        slice_norm: slice-wise normalisation in G^H.
        groups: GroupNorm groups (8 as in the paper's code).
        num_classes: > 0 for the conditional generator G^A(z; c).
        inference_chunk: default ``chunk`` of :meth:`full`.
    """

    def __init__(self, spatial_dims: int, size: int | Sequence[int], latent_dim: int = 1024, base_channels: int = 32,
                 max_channels: int = 512, low_factor: int = 4, subvolume_depth: int = 0, halo: int = 1,
                 slice_norm: bool = True, groups: int = 8, num_classes: int = 0, inference_chunk: int = 0) -> None:
        super().__init__()
        self.plan = plan = plan_hierarchy(spatial_dims, size, low_factor, subvolume_depth)
        ch = _channel_plan(base_channels, max_channels)
        self.latent_dim, self.num_classes, self.halo = latent_dim, num_classes, halo
        self.inference_chunk = inference_chunk
        self.shared = SharedGenerator(plan, latent_dim, stage_channels(plan.n_up + 1, ch["a"], ch["g_top"]),
                                      num_classes, groups)
        self.low = LowResGenerator(spatial_dims, ch["a"], groups)
        self.high = HighResGenerator(spatial_dims, ch["a"], plan.high_stages, slice_norm, groups)

    def forward(self, z: Tensor, sub: SubVolume, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Training path: (X̂^L (B, 1, *low), X̂^H_r (B, 1, *subvolume)) = (G^L(A), G^H(S^L(A; r)))."""
        a = self.shared(z, labels)
        return self.low(a), self.high_subvolume(a, sub)

    def high_subvolume(self, a: Tensor, sub: SubVolume, halo: int | None = None) -> Tensor:
        """G^H on the slab ``sub`` of A, with up to ``halo`` (default: the training halo) context slices."""
        halo = self.halo if halo is None else halo
        lo = max(0, sub.start - halo)
        hi = min(a.shape[2], sub.start + sub.depth + halo)
        return self.high(a[:, :, lo:hi], (sub.start - lo, hi - sub.start - sub.depth))

    def full(self, z: Tensor, labels: Tensor | None = None, chunk: int | None = None) -> Tensor:
        """Inference path G^H(G^A(z)): (B, 1, *size).  ``chunk`` > 0 runs G^H on slabs of that many slices
        of A with exact context (same result, bounded memory; ignored without ``slice_norm``); None uses
        ``inference_chunk``, 0 the whole volume at once."""
        return self.high_full(self.shared(z, labels), self.inference_chunk if chunk is None else chunk)

    def compile_parts(self, **kwargs: object) -> None:
        """``torch.compile`` G^A, G^L and G^H in place (the sub-volume argument of :meth:`forward` changes
        every iteration, so the composite itself is not compiled)."""
        for m in (self.shared, self.low, self.high):
            m.compile(**kwargs)

    def high_full(self, a: Tensor, chunk: int = 0) -> Tensor:
        n = a.shape[2]
        if chunk <= 0 or chunk >= n or not self.high.slice_local:
            return self.high(a)
        subs = [SubVolume(s, min(chunk, n - s), self.plan.factor, n) for s in range(0, n, chunk)]
        return torch.cat([self.high_subvolume(a, s, self.high.context) for s in subs], 2)


class HierarchicalDiscriminator(nn.Module):
    """D = (D^H, D^L) of paper 001: forward(sub-volume, low-resolution image, location) -> both outputs."""

    def __init__(self, spatial_dims: int, size: int | Sequence[int], base_channels: int = 32,
                 max_channels: int = 512, low_factor: int = 4, subvolume_depth: int = 0,
                 negative_slope: float = 0.2, num_classes: int = 0) -> None:
        super().__init__()
        self.plan = plan = plan_hierarchy(spatial_dims, size, low_factor, subvolume_depth)
        ch = _channel_plan(base_channels, max_channels)
        self.high = SubVolumeDiscriminator(plan, ch["dh_top"], negative_slope, num_classes)
        self.low = LowResDiscriminator(plan, ch["dl_top"], negative_slope, num_classes)

    def compile_parts(self, **kwargs: object) -> None:
        """``torch.compile`` D^H and D^L in place."""
        for m in (self.high, self.low):
            m.compile(**kwargs)

    def forward(self, x_sub: Tensor, x_low: Tensor, position: Tensor | float) -> DiscriminatorOutput:
        high, high_cls = self.high(x_sub, position)
        low, low_cls = self.low(x_low)
        return DiscriminatorOutput(high, low, high_cls, low_cls)


def build_encoders(spatial_dims: int, size: int | Sequence[int], latent_dim: int = 1024, base_channels: int = 32,
                   max_channels: int = 512, low_factor: int = 4, subvolume_depth: int = 0,
                   groups: int = 8) -> tuple[SubVolumeEncoder, GlobalEncoder]:
    """(E^H, E^G) for the same geometry as the generator."""
    plan = plan_hierarchy(spatial_dims, size, low_factor, subvolume_depth)
    ch = _channel_plan(base_channels, max_channels)
    return (SubVolumeEncoder(spatial_dims, ch["a"], plan.high_stages, groups),
            GlobalEncoder(plan, ch["a"], latent_dim, ch["e_top"], groups))


def encode_subvolumes(eh: nn.Module, x: Tensor, plan: HierarchyPlan) -> Tensor:
    """Â = concat_v E^H(S^H(x; T_v)) over the non-overlapping sub-volumes: (B, 1, *size) -> (B, a, *low)."""
    check_image_shape(x, 1, plan.size)
    return torch.cat([eh(sub.select_high(x)) for sub in partition(plan)], 2)


def encode_hierarchical(eh: nn.Module, eg: nn.Module, x: Tensor, plan: HierarchyPlan) -> Tensor:
    """Ẑ = E^G(concat_v E^H(S^H(x; T_v))) (paper 001, Sec. III-C "Inference", Fig. 2): (B, 1, *size) -> (B, latent)."""
    return eg(encode_subvolumes(eh, x, plan))
