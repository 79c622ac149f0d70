"""WGAN-GP training steps of the 2D/3D GAN zoo, registered in ``STEPS``.

* ``wgan_gp`` (cpD-GAN, paper 004 S.2.2; StyleGAN-lite, paper 002 Eqs. 11-12): one critic update, then
  one generator update (n_critic = 1, paper 004).  Critic loss ``E[D(G(z))] - E[D(x)] + lambda_GP
  E[(|grad D(x_hat)| - 1)^2] + eps_drift E[D(x)^2]`` (Gulrajani et al. 2017; prog-GAN's drift term,
  Karras et al. 2018), generator loss ``-E[D(G(z))]``, plus the class terms of the conditioning method
  (:class:`synthmed.train.steps.ConditionalStep`).  ``label_flip``: every ``label_flip_every``-th critic
  update swaps the real and synthetic terms (paper 003: "Once in three times, we flip the real /
  synthetic labels of the discriminator for robustness").

  Lazy regularisation (``model.gp_every`` = k; Karras et al. 2020, "Analyzing and improving the image
  quality of StyleGAN", Sec. 3.1 and Appendix B): the gradient penalty is computed on the critic updates
  0, k, 2k, ... only (counted from the run's start, so a resumed run takes it on the same updates) and
  multiplied by k there, so its weight per image seen is unchanged: the reported ``gp`` is
  ``k E[(|grad D(x_hat)| - 1)^2]`` on those updates and 0 on the others, and the critic loss adds
  ``lambda_GP x gp``.  k = 1 (the default and the papers' setting) is the penalty on every update.  The
  penalty joins the main critic loss of its update rather than a separate optimiser step, so Adam's
  hyperparameters need not be rescaled (StyleGAN2's ``c = k / (k + 1)`` corrects for the extra steps of
  its separate regularisation pass, which this has not).  The penalty's double backward through D is the
  most expensive part of a WGAN-GP iteration on a CPU (``docs/training_small_data.md``).

  During the generator update D's weights do not require gradients (as StyleGAN2-ADA's training phases):
  only G's gradients are taken, the same values without the discarded weight gradients of D.
* ``progressive_wgan_gp`` (PGGAN, papers 003 and 004 S.2.1): the same, with the level and fade-in weight
  of both networks set from the number of real images shown so far
  (:func:`synthmed.models.gan.pggan.progressive_schedule`) and the real images blended as the
  discriminator sees them during fade-in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from synthmed.losses.adversarial import gradient_penalty
from synthmed.models.gan.pggan import progressive_schedule
from synthmed.train.steps import STEPS, ConditionalStep, frozen


@STEPS.register("wgan_gp")
class WGANGPStep(ConditionalStep):
    """WGAN-GP with drift term and optional label flipping (see the module docstring)."""

    trained = ("G", "D")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.critic_updates = 0

    def real_view(self, real: Tensor) -> Tensor:
        """The real images as the critic sees them (identity; progressive growing blends them)."""
        return real

    def __call__(self, real: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        p = self.params
        y, code = self.labels_of(real, labels)
        real = self.real_view(real)
        z = self.latent(real.shape[0])
        d = self.nets["D"]
        gp_now = self.gp_due()
        self.critic_updates += 1
        flip = bool(p.label_flip) and self.critic_updates % p.label_flip_every == 0
        with self.amp():
            fake = self.gen(self.nets["G"], z, code)
            x_real, x_fake = self.augment(real), self.augment(fake.detach())
            d_real, c_real = self.disc(d, x_real, code)
            d_fake, c_fake = self.disc(d, x_fake, code)
            d_real32, d_fake32 = d_real.float(), d_fake.float()
            wdist = self.adv.d_loss(d_fake32, d_real32) if flip else self.adv.d_loss(d_real32, d_fake32)
            gp = (p.gp_every * gradient_penalty(lambda x: self.disc(d, x, code)[0].float(), x_real, x_fake)
                  if gp_now else torch.zeros((), device=self.device))
            drift = d_real32.pow(2).mean()
            loss_d = wdist + p.gp_weight * gp + p.drift_weight * drift + self.d_class_loss([c_real], [c_fake], y)
        self.update(loss_d, ("D",))
        with self.amp(), frozen(self.raw["D"]):
            g_out, g_cls = self.disc(self.raw["D"], self.augment(fake), code)
            loss_cls = self.g_class_loss([g_cls], [fake], y)
            loss_g = self.adv.g_loss(g_out.float()) + loss_cls
        self.update(loss_g, ("G",))
        out = {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "gp": gp.detach(),
               "d_real": d_real32.detach().mean(), "d_fake": d_fake32.detach().mean()}
        if y is not None:
            out["loss_g_class"] = loss_cls.detach()
        return out

    def gp_due(self) -> bool:
        """Whether the next critic update takes the gradient penalty: every ``model.gp_every``-th update,
        from the first (lazy regularisation); never with ``model.gp_weight`` 0."""
        p = self.params
        return p.gp_weight > 0 and self.critic_updates % p.gp_every == 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "critic_updates": self.critic_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.critic_updates = int(state.get("critic_updates", 0))


@STEPS.register("progressive_wgan_gp")
class ProgressiveWGANGPStep(WGANGPStep):
    """WGAN-GP with progressive growing and fade-in (PGGAN)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images_seen = 0
        dist = torch.distributed
        self.world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def progress(self) -> tuple[int, float]:
        """(level, alpha) for the next iteration; sets both networks' buffers."""
        g = self.raw["G"]
        level, alpha = progressive_schedule(self.images_seen, self.params.phase_images, g.start_level, g.n_levels)
        for k in ("G", "D"):
            self.raw[k].set_progress(level, alpha)
        return level, alpha

    def real_view(self, real: Tensor) -> Tensor:
        return self.raw["D"].fade_real(real)

    def __call__(self, real: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        level, alpha = self.progress()
        out = super().__call__(real, labels)
        self.images_seen += real.shape[0] * self.world_size
        out["level"] = torch.tensor(float(level), device=self.device)
        out["alpha"] = torch.tensor(float(alpha), device=self.device)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "images_seen": self.images_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.images_seen = int(state.get("images_seen", 0))
