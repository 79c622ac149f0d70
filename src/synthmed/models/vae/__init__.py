"""VAE families (vanilla VAE, DFC-VAE, IntroVAE; paper 002)."""

from synthmed.models.vae import families  # noqa: F401  (registers the families)
