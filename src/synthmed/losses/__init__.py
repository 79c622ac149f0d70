"""synthmed.losses: adversarial, reconstruction and VAE losses (importing fills ``LOSSES``)."""

from synthmed.losses.adversarial import (
    AdversarialLoss,
    HingeLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    gradient_penalty,
)
from synthmed.losses.reconstruction import l1, l2
from synthmed.losses.vae import (
    feature_perceptual_loss,
    gaussian_kl,
    kl_margin_hinge,
    reparameterise,
    scaled_squared_error,
)

__all__ = [
    "AdversarialLoss",
    "HingeLoss",
    "NonSaturatingLoss",
    "WassersteinLoss",
    "feature_perceptual_loss",
    "gaussian_kl",
    "gradient_penalty",
    "kl_margin_hinge",
    "l1",
    "l2",
    "reparameterise",
    "scaled_squared_error",
]
