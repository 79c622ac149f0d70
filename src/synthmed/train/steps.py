"""One ``Step`` per model family: it owns the losses and the order of optimiser updates.

The generic loop (``loop.py``) only feeds real batches and reads back detached losses, as in
stylegan2-ada's ``Loss.accumulate_gradients``.  Families name their step in ``ModelFamily.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import synthmed.losses  # noqa: F401  (fills LOSSES)
from synthmed.config import RunConfig
from synthmed.models.base import ModelFamily
from synthmed.registry import LOSSES, Registry
from synthmed.train.precision import autocast, make_scaler

STEPS: Registry[Any] = Registry("training step")

Augment = Callable[[torch.Tensor], torch.Tensor]


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


class Step:
    """Base class: optimisers, loss scaling, and the update helper.

    Args:
        family: the model family.
        cfg: the resolved run config.
        nets: the networks, possibly wrapped in DDP (used for updates that must be synchronised).
        device: where the batches live.
        augment: differentiable augmentation for every discriminator input, or None.
    """

    #: networks that get an optimiser.
    trained: tuple[str, ...] = ()

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module],
                 device: torch.device, augment: Augment | None = None) -> None:
        self.family, self.cfg, self.nets, self.device = family, cfg, nets, device
        self.raw = {k: _unwrap(m) for k, m in nets.items()}
        self.params = cfg.model.params
        self.augment = augment or (lambda x: x)
        tc = cfg.train
        fused = device.type == "cuda"
        self.opt = {k: torch.optim.Adam(self.raw[k].parameters(), lr=tc.lr, betas=tc.betas, fused=fused)
                    for k in self.trained}
        self.scaler = make_scaler(device, tc.precision)
        self.precision = tc.precision
        # Families without a discriminator (the VAEs) have no adversarial loss to configure.
        adv = getattr(self.params, "adversarial_loss", None)
        self.adv = LOSSES.get(adv)() if adv is not None else None

    def amp(self) -> Any:
        return autocast(self.device, self.precision)

    def update(self, loss: torch.Tensor, keys: tuple[str, ...]) -> None:
        """Backward ``loss`` and step the optimisers of ``keys`` (their grads are zeroed first)."""
        for k in keys:
            self.opt[k].zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for k in keys:
            self.scaler.step(self.opt[k])
        self.scaler.update()

    def prepare(self, images: torch.Tensor, progress: bool = False) -> None:
        """Called by the loop once per process before the first iteration (after any resume) with all
        training images (N, 1, *spatial) on the CPU; for steps that need something fitted on them
        first (the DFC-VAE's in-domain feature network).  Nothing by default."""

    def latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.family.latent_dim(self.params), device=self.device)

    def __call__(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training iteration on ``real`` (B, 1, *spatial); returns detached scalar losses."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"opt": {k: o.state_dict() for k, o in self.opt.items()}, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, o in self.opt.items():
            o.load_state_dict(state["opt"][k])
        self.scaler.load_state_dict(state["scaler"])


@STEPS.register("gan")
class GANStep(Step):
    """Plain GAN update (SN-GAN, paper 000): one D step, then one G step on the same fakes.

    Losses: ``L_D = loss.d(D(aug x), D(aug G(z)))``, ``L_G = loss.g(D(aug G(z)))``.
    """

    trained = ("G", "D")

    def __call__(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.latent(real.shape[0])
        with self.amp():
            fake = self.nets["G"](z)
            d_real = self.nets["D"](self.augment(real))
            d_fake = self.nets["D"](self.augment(fake.detach()))
            loss_d = self.adv.d_loss(d_real, d_fake)
        self.update(loss_d, ("D",))
        with self.amp():
            # The un-wrapped D: its gradients here are discarded, so no DDP all-reduce is needed.
            loss_g = self.adv.g_loss(self.raw["D"](self.augment(fake)))
        self.update(loss_g, ("G",))
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                "d_real": d_real.detach().float().mean(), "d_fake": d_fake.detach().float().mean()}


@STEPS.register("alpha_gan")
class AlphaGANStep(Step):
    """alpha-GAN update (paper 000 Eqs. 2-4 without the hierarchical split; Rosca et al. 2017).

    1. Encoder + generator: ``L_EG = lambda * |G(E(x)) - x|_1 + loss.g(D(G(E(x)))) + loss.g(D(G(z_r)))
       + loss.g(CD(E(x)))`` (Eq. 2).
    2. Discriminator: real counted twice against both fakes (Eq. 3).
    3. Code discriminator with the discriminator's loss: z_r real, E(x) fake (Eq. 4).
    """

    trained = ("G", "D", "E", "CD")

    def _reconstruction(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LOSSES.get(self.params.reconstruction_loss)(pred, target)

    def __call__(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        n, (g, d, e, cd) = real.shape[0], (self.nets[k] for k in ("G", "D", "E", "CD"))
        z_r = self.latent(n)
        with self.amp():
            z_e = e(real)
            x_e, x_r = g(z_e), g(z_r)
            rec = self._reconstruction(x_e.float(), real.float())
            adv = self.adv.g_loss(self.raw["D"](self.augment(x_e))) + self.adv.g_loss(self.raw["D"](self.augment(x_r)))
            code = self.adv.g_loss(self.raw["CD"](z_e))
            loss_eg = self.params.reconstruction_weight * rec + adv + code
        self.update(loss_eg, ("E", "G"))
        with self.amp():
            d_real = d(self.augment(real))
            d_fake_e = d(self.augment(x_e.detach()))
            d_fake_r = d(self.augment(x_r.detach()))
            loss_d = self.adv.d_loss(d_real, d_fake_e) + self.adv.d_loss(d_real, d_fake_r)
        self.update(loss_d, ("D",))
        with self.amp():
            loss_cd = self.adv.d_loss(cd(z_r), cd(z_e.detach()))
        self.update(loss_cd, ("CD",))
        return {"loss_eg": loss_eg.detach(), "loss_rec": rec.detach(), "loss_g_adv": adv.detach(),
                "loss_code": code.detach(), "loss_d": loss_d.detach(), "loss_cd": loss_cd.detach(),
                "d_real": d_real.detach().float().mean(), "d_fake": d_fake_r.detach().float().mean()}


def make_step(family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
              augment: Augment | None) -> Step:
    """The family's step, with optimisers for its trained networks."""
    return STEPS.get(family.step)(family, cfg, nets, device, augment)


# The VAE and HA-GAN steps register themselves into STEPS (imported last: they subclass Step).
import synthmed.train.hagan_steps  # noqa: E402, F401
import synthmed.train.vae_steps  # noqa: E402, F401
