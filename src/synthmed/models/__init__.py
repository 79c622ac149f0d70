"""Generative model families, one architecture per file, registered in ``MODELS``."""

from synthmed.models import gan  # noqa: F401  (registers the GAN families)
from synthmed.models.base import ModelFamily, get_family

__all__ = ["ModelFamily", "get_family"]
