"""Differentiable augmentation for GAN discriminators in 1D, 2D and 3D.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training")
augments every discriminator input, real and generated, with transformations that are
differentiable w.r.t. the image so the generator is trained through them.  Paper 000
("DiffAugment") adapts it to 3D MR images with translation, masking (cutout) and an intensity
range bias; here every operation works for any number of spatial dimensions.

Differences from Zhao et al.'s reference code, on purpose:

* "intensity" is their "color" policy without saturation (single-channel images): brightness
  shift U(-0.5, 0.5) and contrast factor U(0.5, 1.5) around each sample's mean.
* the cutout box always lies fully inside the image, so the expected masked fraction is
  ``cutout_ratio**d`` (their box centre is uniform and the box is clipped at the border).
* the operations run in the fixed order intensity -> translation -> cutout (their default
  order), whatever the order in ``policy``, so padded and cut-out voxels are exactly ``fill``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from synthmed.registry import AUGMENTS

#: Known operations, in the order they are applied.
OPERATIONS = ("intensity", "translation", "cutout")


def _check_image(x: Tensor) -> None:
    if x.ndim < 3:
        raise ValueError(f"expected a (B, C, *spatial) tensor with >= 1 spatial dim, got {tuple(x.shape)}")


def _axis_view(x: Tensor, axis: int, values: Tensor) -> Tensor:
    """Reshape per-sample, per-position ``values`` (B, n) to broadcast along spatial ``axis``."""
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[2 + axis] = x.shape[2 + axis]
    return values.reshape(shape)


def translate(x: Tensor, shifts: Tensor, fill: float = 0.0) -> Tensor:
    """Shift each sample by whole voxels, filling uncovered voxels with ``fill``.

    Implemented by index gathering along each spatial axis (differentiable w.r.t. ``x``).

    Args:
        x: (B, C, *S) with d spatial dimensions.
        shifts: (B, d) integer shifts; a positive shift moves content towards higher indices,
            i.e. ``out[..., i] = x[..., i - shift]``.
        fill: value of voxels shifted in from outside.

    Returns:
        (B, C, *S).
    """
    _check_image(x)
    spatial = x.shape[2:]
    if tuple(shifts.shape) != (x.shape[0], len(spatial)):
        raise ValueError(f"shifts must have shape ({x.shape[0]}, {len(spatial)}), got {tuple(shifts.shape)}")
    shifts = shifts.to(device=x.device, dtype=torch.long)
    out = x
    valid: Tensor | None = None
    for axis, n in enumerate(spatial):
        src = torch.arange(n, device=x.device)[None, :] - shifts[:, axis : axis + 1]  # (B, n)
        inside = _axis_view(x, axis, (src >= 0) & (src < n))
        index = _axis_view(x, axis, src.clamp(0, n - 1)).expand(x.shape)
        out = torch.gather(out, 2 + axis, index)
        valid = inside if valid is None else valid & inside
    assert valid is not None
    return torch.where(valid, out, fill)


def cutout(x: Tensor, starts: Tensor, box: Sequence[int], fill: float = 0.0) -> Tensor:
    """Set one box per sample to ``fill`` (DeVries & Taylor 2017; differentiable w.r.t. ``x``).

    Args:
        x: (B, C, *S) with d spatial dimensions.
        starts: (B, d) integer corner of each sample's box.
        box: the box edge per spatial dimension (d ints).
        fill: the value inside the box.

    Returns:
        (B, C, *S).
    """
    _check_image(x)
    spatial = x.shape[2:]
    if len(box) != len(spatial) or tuple(starts.shape) != (x.shape[0], len(spatial)):
        raise ValueError(f"box {tuple(box)} / starts {tuple(starts.shape)} do not fit {tuple(x.shape)}")
    starts = starts.to(device=x.device, dtype=torch.long)
    mask: Tensor | None = None
    for axis, n in enumerate(spatial):
        pos = torch.arange(n, device=x.device)[None, :]
        lo = starts[:, axis : axis + 1]
        inside = _axis_view(x, axis, (pos >= lo) & (pos < lo + box[axis]))
        mask = inside if mask is None else mask & inside
    assert mask is not None
    return torch.where(mask, fill, x)


def adjust_intensity(x: Tensor, brightness: Tensor, contrast: Tensor) -> Tensor:
    """Per-sample brightness shift then contrast scaling around the sample mean.

    ``y = x + b``; ``out = (y - mean(y)) * c + mean(y)`` with the mean over all channels and
    voxels of each sample (Zhao et al. 2020's brightness and contrast).

    Args:
        x: (B, C, *S).
        brightness: (B,) additive shifts b.
        contrast: (B,) contrast factors c.

    Returns:
        (B, C, *S).
    """
    _check_image(x)
    view = (x.shape[0],) + (1,) * (x.ndim - 1)
    y = x + brightness.to(x).reshape(view)
    mean = y.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (y - mean) * contrast.to(x).reshape(view) + mean


def _parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = sorted(set(names) - set(OPERATIONS))
    if unknown:
        raise ValueError(
            f"unknown DiffAugment operation(s) {', '.join(map(repr, unknown))}; "
            f"expected any of: {', '.join(OPERATIONS)}"
        )
    return tuple(op for op in OPERATIONS if op in names)


def _check_ratio(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"DiffAugment {name} must be in [0, 1], got {value}")
    return float(value)


def _rng_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


@AUGMENTS.register(
    "diffaugment", help="DiffAugment (Zhao et al. 2020): translation, cutout, intensity; 1D-3D."
)
class DiffAugment:
    """Differentiable augmentation of discriminator inputs (Zhao et al. 2020; paper 000).

    Apply the same instance to real and generated images before the discriminator, in both the
    discriminator and the generator step; gradients flow through to the generator.  Every sample
    draws its own parameters from torch's global RNG or from ``generator``, so seeded runs are
    reproducible.

    Args:
        policy: operations to apply, any of ``"translation"``, ``"cutout"``, ``"intensity"`` (a
            comma-separated string also works); empty means identity.  They always run in the
            order intensity -> translation -> cutout.
        translation_ratio: maximal shift per spatial dimension as a fraction of its size; shifts
            are integers in ``[-round(ratio * n), round(ratio * n)]``.
        cutout_ratio: edge of the cutout box per dimension as a fraction of the size.
        fill: value of voxels shifted in by translation and inside the cutout box (0 is the
            middle of the [-1, 1] intensity range, as in Zhao et al.; -1 is background).
        p: probability that each operation is applied to a sample, drawn independently per sample
            and operation (Karras et al. 2020's ``p``; 1 = always, DiffAugment's behaviour, which
            draws no extra random numbers).  :class:`synthmed.augment.ada.AdaptiveAugment` adjusts it
            during training.

    Raises:
        ValueError: for unknown operations or ratios outside [0, 1] (``synthmed.config`` turns
            it into a ConfigError naming the ``augment`` section).
    """

    def __init__(
        self,
        policy: str | Sequence[str] = ("translation", "cutout", "intensity"),
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        fill: float = 0.0,
        p: float = 1.0,
    ) -> None:
        self.policy = _parse_policy(policy)
        self.p = _check_ratio("p", p)
        self.translation_ratio = _check_ratio("translation_ratio", translation_ratio)
        self.cutout_ratio = _check_ratio("cutout_ratio", cutout_ratio)
        self.fill = float(fill)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch: (B, C, *S) -> (B, C, *S), any number of spatial dimensions >= 1."""
        _check_image(x)
        p = float(self.p)
        for op in self.policy:
            if p <= 0.0:
                break
            out = getattr(self, f"_random_{op}")(x, generator)
            if p < 1.0:
                keep = torch.rand(x.shape[0], generator=generator, device=_rng_device(x, generator)) < p
                out = torch.where(keep.to(x.device).reshape((-1,) + (1,) * (x.ndim - 1)), out, x)
            x = out
        return x

    def _random_intensity(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        device = _rng_device(x, generator)
        brightness = torch.rand(x.shape[0], generator=generator, device=device) - 0.5
        contrast = torch.rand(x.shape[0], generator=generator, device=device) + 0.5
        return adjust_intensity(x, brightness, contrast)

    def _random_translation(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        device = _rng_device(x, generator)
        shifts = []
        for n in x.shape[2:]:
            limit = int(n * self.translation_ratio + 0.5)
            shifts.append(torch.randint(-limit, limit + 1, (x.shape[0],), generator=generator, device=device))
        return translate(x, torch.stack(shifts, dim=1), self.fill)

    def _random_cutout(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        device = _rng_device(x, generator)
        box = [min(n, int(n * self.cutout_ratio + 0.5)) for n in x.shape[2:]]
        starts = [
            torch.randint(0, n - size + 1, (x.shape[0],), generator=generator, device=device)
            for n, size in zip(x.shape[2:], box, strict=True)
        ]
        return cutout(x, torch.stack(starts, dim=1), box, self.fill)

    def __repr__(self) -> str:
        return (
            f"DiffAugment(policy={list(self.policy)}, translation_ratio={self.translation_ratio}, "
            f"cutout_ratio={self.cutout_ratio}, fill={self.fill}, p={self.p})"
        )
