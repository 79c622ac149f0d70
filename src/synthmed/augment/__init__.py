"""synthmed.augment: differentiable augmentations (importing fills ``AUGMENTS``)."""

from synthmed.augment.diffaugment import DiffAugment, adjust_intensity, cutout, translate

__all__ = ["DiffAugment", "adjust_intensity", "cutout", "translate"]
