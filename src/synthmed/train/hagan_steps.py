"""Training steps of HA-GAN (paper 001, Eqs. 2-9) and alpha-HA-GAN (paper 000, Eqs. 1-4), registered in ``STEPS``.

One start slice r per batch (paper 001, Sec. III-E: "r is randomly selected on the batch level") is
drawn uniformly on the low-resolution grid, so the real sub-volume S^H(X; r), the generated one
G^H(S^L(A; r)) and the location given to D^H always agree.  The real low-resolution image X^L is
the full image averaged over ``low_factor``^d blocks.  Each network has its own Adam optimiser and
learning rate (Sec. III-E: G 1e-4, E 1e-4, D 4e-4); every update steps only its own networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.config import RunConfig
from synthmed.errors import ConfigError
from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import class_loss, label_code
from synthmed.models.gan.hagan import DiscriminatorOutput, encode_subvolumes
from synthmed.models.gan.hagan_geometry import SubVolume, downsample, random_subvolume
from synthmed.train.steps import STEPS, Augment, Step, d_stats


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` do not require gradients inside the block (graphs built there get no
    weight gradients for them: "we only update E^H while keeping all other parameters fixed")."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _split(out: DiscriminatorOutput, n: int) -> list[DiscriminatorOutput]:
    """Split a discriminator output over a concatenated batch into chunks of ``n`` samples."""
    parts = [t.split(n) if t is not None else None for t in out]
    k = len(parts[0])
    return [DiscriminatorOutput(*(p[i] if p is not None else None for p in parts)) for i in range(k)]


class HierarchicalStep(Step):
    """Shared machinery of the HA-GAN steps: learning rates, sub-volumes, D outputs, encoder updates."""

    trained: tuple[str, ...] = ("G", "D", "EH", "EG")
    accepts_labels = True
    reports_d_signs = True

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
                 augment: Augment | None = None) -> None:
        super().__init__(family, cfg, nets, device, augment)
        p, lr = self.params, self.lr_of
        lrs = {"G": lr("G"), "EH": p.lr_e or lr("EH"), "EG": p.lr_e or lr("EG"), "D": p.lr_d or lr("D"),
               "CD": p.lr_d or lr("CD")}
        for k, opt in self.opt.items():
            for group in opt.param_groups:
                group["lr"] = lrs[k]
        self.plan = self.raw["G"].plan
        self.conditional = family.is_conditional(self.params)
        self.multi_label = bool(self.params.multi_label)

    def prepare(self, images: Tensor, progress: bool = False, labels: Tensor | None = None) -> None:
        """Nothing to fit before training (the AC heads train with the GAN)."""

    # -- inputs ---------------------------------------------------------------------------------
    def _views(self, real: Tensor) -> tuple[SubVolume, Tensor, Tensor, Tensor]:
        """(r, S^H(X; r), X^L, location of r for each sample)."""
        sub = random_subvolume(self.plan)
        pos = torch.full((real.shape[0],), sub.position, device=real.device)
        return sub, sub.select_high(real), downsample(real, self.plan.factor), pos

    def _labels(self, real: Tensor, labels: Tensor | None) -> Tensor | None:
        """Class indices (B,) or, multi-label, the (B, K) 0/1 float matrix; None when unconditional."""
        if not self.conditional:
            return None
        if labels is None:
            raise ConfigError(f"model.num_classes={self.params.num_classes} trains a conditional HA-GAN, which needs "
                              "the class of every real image; the prepared dataset has no labels")
        try:
            label_code(labels, self.params.num_classes, self.multi_label)  # checks shape and range
        except ValueError as e:
            raise ConfigError(f"model.num_classes={self.params.num_classes}: {e}") from None
        return labels.to(real.device).float() if self.multi_label else labels.to(real.device).long()

    def _discriminate(self, d: nn.Module, x_sub: Tensor, x_low: Tensor, pos: Tensor) -> DiscriminatorOutput:
        return d(self.augment(x_sub), self.augment(x_low), pos)

    # -- losses ---------------------------------------------------------------------------------
    def _logits(self, out: DiscriminatorOutput) -> list[Tensor]:
        """Paper 001 Eq. 8 sums the GAN losses of D^H and D^L; paper 000 averages their logits."""
        if self.params.discriminator_output == "average":
            return [(out.high + out.low) / 2]
        return [out.high, out.low]

    def _d_loss(self, real: DiscriminatorOutput, fake: DiscriminatorOutput) -> Tensor:
        return sum((self.adv.d_loss(r.float(), f.float()) for r, f in
                    zip(self._logits(real), self._logits(fake), strict=True)), torch.zeros((), device=self.device))

    def _g_loss(self, fake: DiscriminatorOutput) -> Tensor:
        return sum((self.adv.g_loss(f.float()) for f in self._logits(fake)), torch.zeros((), device=self.device))

    def _class_loss(self, out: DiscriminatorOutput, labels: Tensor | None) -> Tensor:
        """Auxiliary-classifier term of paper 001 Eq. 9 (cross-entropy; 0 for unconditional models)."""
        if labels is None or out.high_class is None or out.low_class is None:
            return torch.zeros((), device=self.device)
        if self.params.discriminator_output == "average":
            return class_loss((out.high_class + out.low_class) / 2, labels, self.multi_label)
        return (class_loss(out.high_class, labels, self.multi_label)
                + class_loss(out.low_class, labels, self.multi_label))

    @staticmethod
    def _l1(pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred.float(), target.float())

    # -- encoder updates ------------------------------------------------------------------------
    def _update_high_encoder(self, x_sub: Tensor) -> Tensor:
        """Paper 001 Eq. 6 (paper 000 Eq. 1): ``|S^H(X; r) - G^H(E^H(S^H(X; r)))|_1``, updating E^H only."""
        with frozen(self.raw["G"]), self.amp():
            rec = self.raw["G"].high(self.nets["EH"](x_sub))
            loss = self.params.reconstruction_weight_high * self._l1(rec, x_sub)
        self.update(loss, ("EH",))
        return loss.detach()

    def _encoded_features(self, real: Tensor) -> Tensor:
        """Â = concat_v E^H(S^H(X; T_v)), without gradients (each encoder is trained by its own loss)."""
        with torch.no_grad(), self.amp():
            return encode_subvolumes(self.raw["EH"], real, self.plan)

@STEPS.register("hagan")
class HAGANStep(HierarchicalStep):
    """HA-GAN (paper 001, Eq. 8): D, then G on the same fakes, then E^H (Eq. 6), then E^G (Eq. 7).

    * D: ``L^H_GAN + L^L_GAN`` (Eqs. 4-5) on the real sub-volume / X^L against G(z, r), plus the
      auxiliary-classifier term of Eq. 9 on real and fake images when conditional;
    * G (G^A, G^L, G^H together): the generator side of Eqs. 4-5 (+ Eq. 9 on the fakes);
    * E^H: ``lambda_1 |S^H(X; r) - G^H(E^H(S^H(X; r)))|_1`` (Eq. 6);
    * E^G: ``lambda_2 (|X^L - G^L(G^A(Ẑ))|_1 + |S^H(X; r) - G^H(S^L(G^A(Ẑ); r))|_1)`` (Eq. 7) with
      Ẑ = E^G(concat_v E^H(S^H(X; T_v))).
    """

    def __call__(self, real: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        n = real.shape[0]
        c = self._labels(real, labels)
        sub, x_sub, x_low, pos = self._views(real)
        z = self.latent(n)
        cw = self.params.class_weight
        with self.amp():
            fake_low, fake_sub = self.nets["G"](z, sub, c)
            out = self._discriminate(self.nets["D"], torch.cat([x_sub, fake_sub.detach()]),
                                     torch.cat([x_low, fake_low.detach()]), torch.cat([pos, pos]))
            d_real, d_fake = _split(out, n)
            loss_d = self._d_loss(d_real, d_fake) + cw * (self._class_loss(d_real, c) + self._class_loss(d_fake, c))
        self.update(loss_d, ("D",))
        with self.amp():
            # The un-wrapped D: its gradients here are discarded, so no DDP all-reduce is needed.
            g_out = self._discriminate(self.raw["D"], fake_sub, fake_low, pos)
            loss_g = self._g_loss(g_out) + cw * self._class_loss(g_out, c)
        self.update(loss_g, ("G",))
        loss_eh = self._update_high_encoder(x_sub)
        a_hat = self._encoded_features(real)
        with frozen(self.raw["G"]), self.amp():
            rec_low, rec_sub = self.raw["G"](self.nets["EG"](a_hat), sub, c)
            loss_eg = self.params.reconstruction_weight_global * (self._l1(rec_low, x_low) + self._l1(rec_sub, x_sub))
        self.update(loss_eg, ("EG",))
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_eh": loss_eh, "loss_eg": loss_eg.detach(),
                **d_stats((d_real.high + d_real.low) / 2, (d_fake.high + d_fake.low) / 2)}


@STEPS.register("alpha_hagan")
class AlphaHAGANStep(HierarchicalStep):
    """alpha-HA-GAN (paper 000, Eqs. 1-4 and Fig. S6): E^H, then E^G + G, then D, then the code discriminator.

    1. E^H: ``|G^H(E^H(X^H)) - X^H|_1`` (Eq. 1, as paper 001 Eq. 6).
    2. E^G and G together (Eq. 2): ``lambda (|X̂_e^H - X^H|_1 + |X̂_e^L - X^L|_1)`` + the generator loss
       of D on G(z_e, r) and on G(z_r, r) + the generator loss of CD on z_e, where z_e = E^G(Â) and
       z_r ~ N(0, I).
    3. D (Eq. 3): the real pair counted twice, against both fakes.
    4. CD (Eq. 4): z_r real, z_e fake, with the discriminator's loss.
    """

    trained = ("G", "D", "EH", "EG", "CD")

    def __call__(self, real: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        n = real.shape[0]
        c = self._labels(real, labels)
        c2 = torch.cat([c, c]) if c is not None else None
        cw = self.params.class_weight
        sub, x_sub, x_low, pos = self._views(real)
        loss_eh = self._update_high_encoder(x_sub)
        a_hat = self._encoded_features(real)
        z_r = self.latent(n)
        with self.amp():
            z_e = self.nets["EG"](a_hat)
            # G has no batch statistics (GroupNorm), so both codes go through one forward pass.
            both_low, both_sub = self.nets["G"](torch.cat([z_e, z_r]), sub, c2)
            (xe_low, xr_low), (xe_sub, xr_sub) = both_low.split(n), both_sub.split(n)
            rec = self._l1(xe_sub, x_sub) + self._l1(xe_low, x_low)
            g_e, g_r = _split(self._discriminate(self.raw["D"], both_sub, both_low, torch.cat([pos, pos])), n)
            adv = self._g_loss(g_e) + self._g_loss(g_r) + cw * (self._class_loss(g_e, c) + self._class_loss(g_r, c))
            code = self.adv.g_loss(self.raw["CD"](z_e).float())
            loss_eg = self.params.reconstruction_weight_global * rec + adv + code
        self.update(loss_eg, ("EG", "G"))
        with self.amp():
            out = self._discriminate(self.nets["D"], torch.cat([x_sub, xe_sub.detach(), xr_sub.detach()]),
                                     torch.cat([x_low, xe_low.detach(), xr_low.detach()]), torch.cat([pos, pos, pos]))
            d_real, d_e, d_r = _split(out, n)
            loss_d = self._d_loss(d_real, d_e) + self._d_loss(d_real, d_r)
            loss_d = loss_d + cw * (2 * self._class_loss(d_real, c) + self._class_loss(d_e, c) + self._class_loss(d_r, c))
        self.update(loss_d, ("D",))
        with self.amp():
            cd_real, cd_fake = self.nets["CD"](torch.cat([z_r, z_e.detach()])).float().split(n)
            loss_cd = self.adv.d_loss(cd_real, cd_fake)
        self.update(loss_cd, ("CD",))
        return {"loss_eh": loss_eh, "loss_eg": loss_eg.detach(), "loss_rec": rec.detach(), "loss_g_adv": adv.detach(),
                "loss_code": code.detach(), "loss_d": loss_d.detach(), "loss_cd": loss_cd.detach(),
                **d_stats((d_real.high + d_real.low) / 2, (d_r.high + d_r.low) / 2)}
