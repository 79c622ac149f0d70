"""Classic (non-differentiable) augmentation of real training images, for the "augmented" baseline
of the utility protocol.

Paper 000 ("Evaluation with diagnosis classifier"): "the same augmentation techniques on the real
images as for the DiffAugment step ...: random cropping of half the image size at most, translation
of 1/8 maximum in each direction, and intensity randomization from 0.7 to 1-times the original value.
Each image distortion was applied with a probability of one third."  The operations reuse
DiffAugment's dimension-generic :func:`~synthmed.augment.diffaugment.translate` and
:func:`~synthmed.augment.diffaugment.cutout`:

* crop: one box per image whose edge is a fraction U(0, ``crop_ratio``) of each axis is cut out
  (set to ``fill``, the background), as DiffAugment's cutout with a random size "at most" half;
* translation: whole-voxel shifts up to ``translation_ratio`` of each axis, ``fill`` shifted in;
* intensity: a factor U(``intensity[0]``, ``intensity[1]``) on the [0, 1] intensity, i.e.
  ``x' = (x + 1) * f - 1`` on prepared [-1, 1] images, so the background stays at -1.

Every image draws each decision and parameter independently from the given generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synthmed.augment.diffaugment import cutout, translate


@dataclass
class ClassicAugment:
    """Random crop (cutout), translation and intensity scaling, each with probability ``probability``.

    Args:
        probability: chance that each operation is applied to an image (paper 000: 1/3).
        crop_ratio: maximal box edge as a fraction of each axis (paper 000: 1/2).
        translation_ratio: maximal shift as a fraction of each axis (paper 000: 1/8).
        intensity: range of the intensity factor (paper 000: 0.7 to 1).
        fill: value of cut-out and shifted-in voxels (-1: background of prepared images).
    """

    probability: float = 1 / 3
    crop_ratio: float = 0.5
    translation_ratio: float = 0.125
    intensity: tuple[float, float] = (0.7, 1.0)
    fill: float = -1.0

    def __post_init__(self) -> None:
        for name in ("probability", "crop_ratio", "translation_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo, hi = self.intensity
        if not 0 <= lo <= hi:
            raise ValueError(f"intensity must be a range [low, high] with 0 <= low <= high, got {list(self.intensity)}")

    @torch.no_grad()
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch ``x: (B, C, *S)`` (any number of spatial dims) -> (B, C, *S)."""
        if x.ndim < 3:
            raise ValueError(f"expected (B, C, *spatial), got {tuple(x.shape)}")
        b, spatial = x.shape[0], x.shape[2:]

        def chosen() -> Tensor:
            return torch.rand(b, generator=generator) < self.probability

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator)

        # draw everything first, in a fixed order, so results do not depend on which ops apply
        do_crop, do_shift, do_int = chosen(), chosen(), chosen()
        frac = rand(b) * self.crop_ratio
        corner = rand(b, len(spatial))
        shift_u = rand(b, len(spatial))
        factor = self.intensity[0] + rand(b) * (self.intensity[1] - self.intensity[0])

        out = x.clone()
        if do_int.any():
            f = torch.where(do_int, factor, torch.ones(b)).to(x).reshape(b, *[1] * (x.ndim - 1))
            out = (out + 1) * f - 1
        if do_shift.any():
            limits = torch.tensor([round(n * self.translation_ratio) for n in spatial], dtype=torch.float64)
            shifts = torch.floor(shift_u.double() * (2 * limits + 1)).long() - limits.long()
            shifts = torch.where(do_shift[:, None], shifts, torch.zeros_like(shifts))
            out = translate(out, shifts, self.fill)
        for i in torch.nonzero(do_crop).flatten().tolist():
            box = [max(0, min(n, round(float(frac[i]) * n))) for n in spatial]
            if min(box) == 0:
                continue
            starts = torch.tensor([[int(corner[i, k] * (n - box[k] + 1)) for k, n in enumerate(spatial)]])
            out[i:i + 1] = cutout(out[i:i + 1], starts, box, self.fill)
        return out
