"""synthmed.losses: adversarial and reconstruction losses (importing fills ``LOSSES``)."""

from synthmed.losses.adversarial import (
    AdversarialLoss,
    HingeLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    gradient_penalty,
)
from synthmed.losses.reconstruction import l1, l2

__all__ = [
    "AdversarialLoss",
    "HingeLoss",
    "NonSaturatingLoss",
    "WassersteinLoss",
    "gradient_penalty",
    "l1",
    "l2",
]
