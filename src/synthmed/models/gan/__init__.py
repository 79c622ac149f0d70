"""GAN families (SN-GAN, alpha-SN-GAN)."""

from synthmed.models.gan import families  # noqa: F401  (registers the families)
