"""Generative model families, one architecture per file, registered in ``MODELS``."""

from synthmed.models import gan, vae  # noqa: F401  (register the GAN and VAE families)
from synthmed.models.base import ModelFamily, get_family

__all__ = ["ModelFamily", "get_family"]
