"""Reconstruction losses, registered in :data:`synthmed.registry.LOSSES`.

The α-SN-GAN trains encoder and generator with an L1 reconstruction term between real images
and their reconstructions G(E(x)) (paper 000, "α-SN-GAN"; Rosca et al. 2017); α-HA-GAN uses L1
for its high-resolution encoder.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from synthmed.registry import LOSSES


def _check_shapes(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")


@LOSSES.register("l1", help="Mean absolute error (L1) reconstruction loss.")
def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements.

    Args:
        pred: reconstruction, any shape, e.g. (B, C, *S).
        target: reference of the same shape (no broadcasting).

    Returns:
        A scalar tensor.
    """
    _check_shapes(pred, target)
    return F.l1_loss(pred, target)


@LOSSES.register("l2", help="Mean squared error (L2) reconstruction loss.")
def l2(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements.

    Args:
        pred: reconstruction, any shape, e.g. (B, C, *S).
        target: reference of the same shape (no broadcasting).

    Returns:
        A scalar tensor.
    """
    _check_shapes(pred, target)
    return F.mse_loss(pred, target)
