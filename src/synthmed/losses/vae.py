"""VAE losses (paper 002, Secs. 2.1-2.4 and 3.2), registered in :data:`synthmed.registry.LOSSES`.

* ``gaussian_kl``: the KL term of Eq. 5, ``D_KL[N(mu, diag(exp(logvar))) || N(0, I)]``, summed over
  latent dimensions (so it is in nats per image, the unit of IntroVAE's margin m = 110).
* ``scaled_squared_error``: the pixel-wise squared error of Eq. 5, summed over pixels and scaled; the
  vanilla VAE uses ``0.025 x H x W x MSE`` = ``0.025 x sum of squared errors`` (Sec. 3.2), IntroVAE the
  plain sum weighted 0.5.  Errors are measured on intensities mapped to [0, 1], the range paper 002
  trains and evaluates in (Sec. 3.1, 3.3), so its weights keep their meaning for our [-1, 1] images.
* ``feature_perceptual_loss``: the DFC-VAE feature loss of Eqs. 6-7.
* ``kl_margin_hinge``: IntroVAE's ``[m - L_KL(E(x'))]^+`` of Eq. 8.

All take batches and return a scalar (the mean over the batch) unless ``reduction="none"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from synthmed.registry import LOSSES

Reduction = Literal["mean", "none"]


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


@LOSSES.register("gaussian_kl", help="KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims (VAE, Eq. 5).")
def gaussian_kl(mu: Tensor, logvar: Tensor, reduction: Reduction = "mean") -> Tensor:
    """KL divergence of a diagonal Gaussian from the standard normal prior (paper 002, Eqs. 3 and 5).

    ``D_KL = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` per sample (Kingma & Welling 2014,
    App. B), summed over the latent dimensions.  Zero exactly when ``mu = 0`` and ``logvar = 0``.

    Args:
        mu: posterior means (B, latent_dim).
        logvar: posterior log-variances (B, latent_dim).
        reduction: ``"mean"`` over the batch (a scalar) or ``"none"`` (B,).

    Returns:
        The KL in nats, computed in float32 at least.
    """
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must both be (B, latent_dim)")
    mu, logvar = mu.float(), logvar.float()
    per_sample = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    return _reduce(per_sample, reduction)


@LOSSES.register("scaled_squared_error",
                 help="scale x per-image sum of squared errors on [0, 1] intensities (VAE, Eq. 5).")
def scaled_squared_error(pred: Tensor, target: Tensor, scale: float = 0.025,
                         value_range: tuple[float, float] = (-1.0, 1.0), reduction: Reduction = "mean") -> Tensor:
    """``scale x sum_pixels (pred - target)^2`` per image, intensities mapped to [0, 1] (paper 002 Eq. 5).

    Paper 002 scales the vanilla VAE's pixel-wise squared error "by 0.025 x 128 x 128" (Sec. 3.2),
    i.e. 0.025 times the sum over the 128 x 128 pixels of the per-pixel mean; this is the same
    number for any image size (``0.025 x H x W x MSE``, or ``D x H x W`` in 3D).

    Args:
        pred: reconstructions (B, C, *spatial).
        target: originals, same shape.
        scale: the factor on the per-image sum (0.025 for the vanilla VAE; 1 for IntroVAE, whose
            weight 0.5 is applied by the caller).
        value_range: intensity range of the inputs, mapped linearly onto [0, 1].
        reduction: ``"mean"`` over the batch or ``"none"`` (B,).

    Returns:
        The scaled squared error, float32 at least.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    span = float(value_range[1] - value_range[0])
    if not span > 0:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    diff = (pred.float() - target.float()) / span
    per_sample = scale * diff.pow(2).flatten(1).sum(dim=1)
    return _reduce(per_sample, reduction)


@LOSSES.register("feature_perceptual", help="DFC-VAE feature perceptual loss, sum over layers (paper 002 Eqs. 6-7).")
def feature_perceptual_loss(pred_features: Sequence[Tensor], target_features: Sequence[Tensor],
                            normalise: bool = True, reduction: Reduction = "mean") -> Tensor:
    """Feature perceptual loss of the DFC-VAE (Hou et al. 2017; paper 002, Eqs. 6-7).

    ``L_rec = sum_l L_rec^l`` with ``L_rec^l = 1/(2 C_l H_l W_l) sum_{c,h,w} (psi_l(x) - psi_l(x'))^2``
    (Eq. 7, also for 3D feature maps).  With ``normalise=False`` the per-layer sums are not divided
    by ``2 C_l H_l W_l``: that is the only reading under which paper 002's weight of 2e-9 (on
    ImageNet VGG16 features) is not negligible next to the KL term.

    Args:
        pred_features: the feature maps psi_l(x') of the reconstructions, each (B, C_l, *S_l).
        target_features: psi_l(x) of the originals, same shapes (usually computed without grad).
        normalise: divide layer l by ``2 C_l prod(S_l)`` as in Eq. 7.
        reduction: ``"mean"`` over the batch or ``"none"`` (B,).

    Returns:
        The loss summed over layers, float32 at least.
    """
    if len(pred_features) != len(target_features) or not pred_features:
        raise ValueError(f"need the same non-zero number of feature maps, got {len(pred_features)} "
                         f"and {len(target_features)}")
    total: Tensor | None = None
    for a, b in zip(pred_features, target_features, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"feature maps {tuple(a.shape)} and {tuple(b.shape)} differ")
        sq = (a.float() - b.float()).pow(2).flatten(1).sum(dim=1)
        if normalise:
            sq = sq / (2.0 * a[0].numel())
        total = sq if total is None else total + sq
    assert total is not None
    return _reduce(total, reduction)


@LOSSES.register("kl_margin_hinge", help="IntroVAE hinge [m - KL]^+ on encoded fakes (paper 002 Eq. 8).")
def kl_margin_hinge(kl: Tensor, margin: float = 110.0, reduction: Reduction = "mean") -> Tensor:
    """``[m - L_KL(E(x'))]^+`` of IntroVAE's encoder loss (paper 002 Eq. 8; Huang et al. 2018).

    The encoder, acting as discriminator, pushes the KL of generated images up to the margin ``m``
    and no further: the term and its gradient are zero once a fake's KL is at least ``m``.

    Args:
        kl: per-sample KL divergences of encoded fakes (B,).
        margin: m (110 for 128 x 128 images in paper 002 and IntroVAE).
        reduction: ``"mean"`` over the batch or ``"none"`` (B,).

    Returns:
        The hinge.
    """
    return _reduce(F.relu(margin - kl.float()), reduction)


def reparameterise(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``z = mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, I)`` (the reparameterisation trick, paper 002 Sec. 2.1)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)
