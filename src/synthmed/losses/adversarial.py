"""Adversarial losses on raw discriminator logits, registered in :data:`synthmed.registry.LOSSES`.

* ``hinge`` (Lim & Ye 2017; Miyato et al. 2018): SN-GAN and α-SN-GAN in paper 000, including
  the α-SN-GAN code discriminator ("trained with the same loss function as the regular
  discriminator").
* ``nonsaturating`` (Goodfellow et al. 2014): the standard GAN loss, used by HA-GAN and
  α-HA-GAN in paper 000 because the hinge loss was unstable there.
* ``wgan`` (Arjovsky et al. 2017): the critic loss; pair it with :func:`gradient_penalty`
  (Gulrajani et al. 2017) for WGAN-GP.

Every loss takes logits of any shape (usually (B,)) and returns a scalar mean over the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from synthmed.registry import LOSSES


class AdversarialLoss(ABC):
    """A discriminator/generator loss pair on raw logits (higher logit = "more real")."""

    #: the name the loss is registered under.
    name: str = ""

    @abstractmethod
    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Discriminator loss (scalar) from logits on real (B,) and fake (B,) inputs."""

    @abstractmethod
    def g_loss(self, fake_logits: Tensor) -> Tensor:
        """Generator loss (scalar) from the discriminator's logits on fakes (B,)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@LOSSES.register("hinge", help="Hinge loss (Miyato et al. 2018); SN-GAN and α-SN-GAN in paper 000.")
class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018).

    ``d_loss = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` and ``g_loss = -E[D(G(z))]``.  The
    discriminator loss (and its gradient) is zero once real logits are >= 1 and fake logits are
    <= -1.
    """

    name = "hinge"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


@LOSSES.register("nonsaturating", help="Standard GAN loss with logits (Goodfellow et al. 2014); HA-GAN.")
class NonSaturatingLoss(AdversarialLoss):
    """The standard (non-saturating) GAN loss on logits (Goodfellow et al. 2014).

    ``d_loss = BCE(D(x), 1) + BCE(D(G(z)), 0) = E[softplus(-D(x))] + E[softplus(D(G(z)))]`` and
    ``g_loss = BCE(D(G(z)), 1) = E[softplus(-D(G(z)))]``, computed with ``softplus`` so large
    logits neither overflow nor lose their gradient.
    """

    name = "nonsaturating"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()


@LOSSES.register("wgan", help="Wasserstein critic loss (Arjovsky et al. 2017); add gradient_penalty for GP.")
class WassersteinLoss(AdversarialLoss):
    """Wasserstein critic loss (Arjovsky et al. 2017).

    ``d_loss = E[D(G(z))] - E[D(x)]`` and ``g_loss = -E[D(G(z))]``.  The Lipschitz constraint is
    not part of this loss: add ``lambda * gradient_penalty(D, real, fake)`` (lambda = 10 in
    Gulrajani et al. 2017) or use a spectrally normalised critic.
    """

    name = "wgan"

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


def gradient_penalty(
    discriminator: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP gradient penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` (Gulrajani et al. 2017).

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per sample.  The graph
    is kept (``create_graph=True``) so the penalty can be back-propagated into the critic; the
    inputs are detached, so no gradient reaches the generator.  Not multiplied by lambda.

    Args:
        discriminator: maps (B, C, *S) to logits (B,) (or (B, 1)); wrap conditional critics in a
            lambda that binds the labels.
        real: real images (B, C, *S).
        fake: generated images, same shape.
        generator: optional RNG for eps (else torch's global RNG).

    Returns:
        A scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} shapes differ")
    rng_device = generator.device if generator is not None else real.device
    eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(eps_shape, generator=generator, device=rng_device, dtype=real.dtype).to(real.device)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = discriminator(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
