"""Training steps of the VAE families (paper 002, Secs. 2.1-2.4 and 3.2), registered into ``STEPS``.

* ``vae``: one joint update of encoder and decoder on ``KL + 0.025 x sum of squared errors`` (Eq. 5).
* ``dfc_vae``: the same with the pixel term replaced by the feature perceptual loss (Eqs. 6-7).
* ``intro_vae``: IntroVAE's two updates, encoder on Eq. 8 then decoder on Eq. 9.

The VAEs have no discriminator input to augment: a configured DiffAugment is not used (logged once).

Conditional runs (``model.conditioning: cvae``; Sohn et al. 2015's conditional VAE) get each batch's
labels from the loop: the label code y (one-hot, or multi-hot with ``multi_label``) goes to the encoder,
q(z | x, y), and is concatenated to z at the decoder, G(z, y) (paper 000's label-concatenated latent).
Reconstructions use the image's own label; IntroVAE's samples G(z_p, y) reuse the batch's labels, and
the encoder's KL terms on them are taken with the same y.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from synthmed.config import RunConfig
from synthmed.errors import CheckpointError, ConfigError
from synthmed.losses.vae import (
    feature_perceptual_loss,
    gaussian_kl,
    kl_margin_hinge,
    reparameterise,
    scaled_squared_error,
)
from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import label_code
from synthmed.train.steps import STEPS, Augment, Step

log = logging.getLogger(__name__)

#: paper 002's weight of the DFC-VAE perceptual loss on (un-normalised) VGG16 feature sums.
PAPER_VGG_PERCEPTUAL_WEIGHT = 2e-9


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` inside the block (gradients still flow through it)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _VAEStepBase(Step):
    trained = ("E", "G")
    accepts_labels = True

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
                 augment: Augment | None = None) -> None:
        super().__init__(family, cfg, nets, device, augment)
        if augment is not None:
            log.info("%s: augment.enabled has no effect (a VAE has no discriminator input to augment)",
                     cfg.model.name)

    def prepare(self, images: torch.Tensor, progress: bool = False, labels: torch.Tensor | None = None) -> None:
        """Nothing to prepare (the labels of a conditional run are not needed before training)."""

    def code(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The (B, K) label code of a conditional (``cvae``) run, None for unconditional networks.

        Raises:
            ValueError: a conditional run without labels, or labels for an unconditional one.
        """
        k = int(getattr(self.raw["G"], "cond_dim", 0))
        if not k:
            if labels is not None:
                raise ValueError(f"{self.cfg.model.name}: labels given, but the networks are unconditional "
                                 "(model.conditioning none or per-class)")
            return None
        if labels is None:
            raise ValueError(f"{self.cfg.model.name}: model.conditioning cvae needs the batch's labels")
        return label_code(labels.to(self.device), k, labels.ndim == 2)

    def pixel_factor(self, real: torch.Tensor) -> float:
        """``reconstruction_pixels / pixels per image`` (1 when ``reconstruction_pixels`` is 0): turns a
        per-image sum of squared errors into ``reconstruction_pixels x MSE``."""
        n = int(getattr(self.params, "reconstruction_pixels", 0))
        return n / real[0].numel() if n else 1.0

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the KL penalty with warm-up and free bits, the plain KL in nats per image).

        ``kl_weight x w_t x sum_j max(free_bits, mean_batch KL_j)`` where ``w_t = min(1, t / kl_warmup)``
        (Bowman et al. 2016) and the free-bits floor per latent dimension (Kingma et al. 2016); both off by
        default, leaving paper 002's Eq. 5 (``kl_weight x KL``).
        """
        p = self.params
        kl = gaussian_kl(mu, logvar)
        free = float(getattr(p, "free_bits", 0.0))
        if free > 0:
            per_dim = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean(0)
            penalty = per_dim.clamp(min=free).sum()
        else:
            penalty = kl
        warm = int(getattr(p, "kl_warmup", 0))
        w = min(1.0, self.iteration / warm) if warm else 1.0
        return p.kl_weight * w * penalty, kl

    def encode_sample(self, real: torch.Tensor, code: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, logvar, z) of real images, z by the reparameterisation trick (paper 002 Sec. 2.1)."""
        mu, logvar = self.nets["E"](real, code)
        return mu, logvar, reparameterise(mu.float(), logvar.float())


@STEPS.register("vae")
class VAEStep(_VAEStepBase):
    """Vanilla VAE (paper 002, Eq. 5): ``L = kl_weight * KL(q(z|x) || N(0, I)) + L_rec(x, G(z))``.

    ``L_rec`` is 0.025 times the per-image sum of squared errors on [0, 1] intensities (Sec. 3.2's
    "scaled by 0.025 x 128 x 128"); subclasses replace it (:meth:`reconstruction_loss`).
    One Adam update of encoder and decoder together.
    """

    def reconstruction_loss(self, rec: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return scaled_squared_error(rec, real, scale=self.params.reconstruction_scale * self.pixel_factor(real))

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        code = self.code(labels)
        self.iteration += 1
        with self.amp():
            mu, logvar, z = self.encode_sample(real, code)
            rec = self.nets["G"](z, code)
            loss_rec = self.reconstruction_loss(rec, real)
        penalty, kl = self.kl_term(mu, logvar)
        loss = penalty + loss_rec
        self.update(loss, ("E", "G"))
        return {"loss": loss.detach(), "loss_kl": kl.detach(), "loss_rec": loss_rec.detach()}


@STEPS.register("dfc_vae")
class DFCVAEStep(VAEStep):
    """DFC-VAE (paper 002, Sec. 2.3; Hou et al. 2017): ``L = KL + w * sum_l L_rec^l`` (Eqs. 6-7).

    The feature network psi (see :mod:`synthmed.models.vae.perceptual`) is frozen: its weights never
    change, but the gradient of the loss flows through psi(G(z)) into the decoder and, through z, the
    encoder (psi of the originals is computed without gradient).  The default in-domain network is trained in :meth:`prepare`
    on the run's training images and kept in the checkpoint, so a resumed run uses the same psi.
    """

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
                 augment: Augment | None = None) -> None:
        from synthmed.models.vae.perceptual import load_indomain_features, load_vgg16_features

        super().__init__(family, cfg, nets, device, augment)
        p = self.params
        dims, size = self.raw["G"].spatial_dims, self.raw["G"].size
        self.features: Any = None
        self.trained_here = False
        if p.feature_network == "vgg16":
            if not p.feature_weights:
                raise ConfigError("model.feature_weights: feature_network 'vgg16' needs a local VGG16 weights "
                                  "file (ImageNet weights are not downloaded at run time); or use 'indomain'")
            if dims != 2:
                raise ConfigError("model.feature_network 'vgg16' is 2D only; use 'indomain' for 3D data")
            self.features = load_vgg16_features(p.feature_weights).to(device)
        elif p.feature_weights:
            self.features = load_indomain_features(p.feature_weights, p.feature_layers).to(device)
        if p.perceptual_weight is not None:
            self.weight = float(p.perceptual_weight)
        elif p.feature_network == "vgg16":
            self.weight = PAPER_VGG_PERCEPTUAL_WEIGHT
        else:  # the vanilla VAE's weight on the pixel term this loss replaces: 0.025 x H x W
            self.weight = 0.025 * (p.reconstruction_pixels or math.prod(size))
        self.normalise = p.feature_network == "indomain"

    def prepare(self, images: torch.Tensor, progress: bool = False, labels: torch.Tensor | None = None) -> None:
        """Train the in-domain feature network on the training images, unless given or resumed."""
        from synthmed.models.vae.perceptual import train_indomain_features

        if self.features is not None:
            return
        p = self.params
        self.features = train_indomain_features(images.numpy(), p.feature_iterations, self.cfg.train.seed,
                                                self.device, progress, p.feature_layers).to(self.device)
        self.trained_here = True
        log.info("dfc_vae: in-domain feature network trained (%d iterations), sha256 %s", p.feature_iterations,
                 self.features.weights_sha256)

    def reconstruction_loss(self, rec: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("DFCVAEStep.prepare(images) must run before the first iteration")
        with torch.no_grad():
            target = self.features(real)
        return self.weight * feature_perceptual_loss(self.features(rec), target, normalise=self.normalise)

    def state_dict(self) -> dict[str, Any]:
        from synthmed.models.vae.perceptual import indomain_features_state

        state = super().state_dict()
        if self.features is not None:
            state["feature_network"] = (indomain_features_state(self.features) if self.trained_here else
                                        {"weights_sha256": self.features.weights_sha256})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from synthmed.models.vae.perceptual import indomain_features_from_state

        super().load_state_dict(state)
        saved = state.get("feature_network")
        if saved is None:
            return
        if "encoder" in saved:  # trained in this run: restore it exactly
            self.features = indomain_features_from_state(saved).to(self.device)
            self.trained_here = True
        elif self.features is None or self.features.weights_sha256 != saved["weights_sha256"]:
            have = None if self.features is None else self.features.weights_sha256
            raise CheckpointError(f"the DFC-VAE feature network differs from the checkpoint's "
                                  f"(sha256 {saved['weights_sha256']} in the checkpoint, {have} now)")


@STEPS.register("intro_vae")
class IntroVAEStep(_VAEStepBase):
    """IntroVAE (paper 002, Sec. 2.4, Eqs. 8-9; Huang et al. 2018, Alg. 1).

    With ``x_r = G(z)``, ``z ~ q(z|x)``, fakes ``x' = G(z_p)``, ``z_p ~ N(0, I)`` (plus ``x_r`` when
    ``reconstructions_as_fakes``), ``b = kl_weight`` (0.25), ``c = reconstruction_weight`` (0.5):

    1. encoder: ``L_E = b * (KL(E(x)) + sum_fakes [m - KL(E(ng(x')))]^+) + c * L_rec(x, x_r)`` (Eq. 8);
       the fakes are detached, so the encoder acts as the discriminator.
    2. decoder, re-encoding the fakes with the updated encoder (Alg. 1):
       ``L_G = b * sum_fakes KL(E(x')) + c * L_rec(x, G(ng(z)))`` (Eq. 9); the encoder is not updated.

    ``L_rec`` is the per-image sum of squared errors on [0, 1] intensities; KL terms are per image, in nats.
    """

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        p = self.params
        e, g = self.nets["E"], self.nets["G"]
        y = self.code(labels)  # conditional: fakes G(z_p, y) take the batch's labels, and E sees the same y
        z_p = self.latent(real.shape[0])
        with self.amp():
            mu, logvar, z = self.encode_sample(real, y)
            with frozen(self.raw["G"]):  # G's gradients from L_E would be discarded: skip them
                x_r = self.raw["G"](z, y)
            x_p = g(z_p, y)  # its graph is kept for the decoder update
            fakes = [x_p, x_r] if p.reconstructions_as_fakes else [x_p]
            kl_fake = [gaussian_kl(*e(f.detach(), y), reduction="none") for f in fakes]
        self.iteration += 1
        kl_real = gaussian_kl(mu, logvar)
        rec = scaled_squared_error(x_r, real, scale=self.pixel_factor(real))
        hinge = sum(kl_margin_hinge(k, p.margin) for k in kl_fake)
        loss_e = p.kl_weight * (kl_real + hinge) + p.reconstruction_weight * rec
        self.update(loss_e, ("E",))

        with self.amp(), frozen(self.raw["E"]):
            x_r_g = g(z.detach(), y)
            fakes_g = [x_p, x_r_g] if p.reconstructions_as_fakes else [x_p]
            kl_fake_g = sum(gaussian_kl(*self.raw["E"](f, y)) for f in fakes_g)
            rec_g = scaled_squared_error(x_r_g, real, scale=self.pixel_factor(real))
            loss_g = p.kl_weight * kl_fake_g + p.reconstruction_weight * rec_g
        self.update(loss_g, ("G",))
        return {"loss_e": loss_e.detach(), "loss_g": loss_g.detach(), "loss_kl": kl_real.detach(),
                "loss_rec": rec.detach(), "kl_fake": kl_fake[0].detach().mean(), "hinge": hinge.detach()}
