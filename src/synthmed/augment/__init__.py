"""synthmed.augment."""
