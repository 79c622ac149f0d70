"""GAN families (SN-GAN, alpha-SN-GAN, HA-GAN, alpha-HA-GAN; DCGAN, PGGAN, cpD-GAN, StyleGAN-lite)."""

from synthmed.models.gan import (
    families,  # noqa: F401  (registers the families)
    hagan_families,  # noqa: F401  (registers HA-GAN and alpha-HA-GAN)
    zoo_families,  # noqa: F401  (registers DCGAN, PGGAN, cpD-GAN, StyleGAN-lite)
)
