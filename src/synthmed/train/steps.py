"""One ``Step`` per model family: it owns the losses and the order of optimiser updates.

The generic loop (``loop.py``) only feeds real batches and reads back detached losses, as in
stylegan2-ada's ``Loss.accumulate_gradients``.  Families name their step in ``ModelFamily.step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

import synthmed.losses  # noqa: F401  (fills LOSSES)
from synthmed.config import RunConfig
from synthmed.errors import ConfigError
from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import CONDITIONAL, class_loss, label_code, split_output
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
    #: the trained networks that judge images or codes: they learn at ``train.lr_d`` (the rest at ``train.lr_g``)
    discriminators: ClassVar[tuple[str, ...]] = ("D", "CD")
    #: whether the step applies the R1 penalty (``train.r1_gamma``)
    supports_r1: ClassVar[bool] = False
    #: whether the step reports ``d_real_sign`` (needed by adaptive augmentation)
    reports_d_signs: ClassVar[bool] = False
    #: whether ``__call__`` and ``prepare`` take the real images' labels (``labels=``); the loop passes
    #: them only to such steps, so steps written before conditioning keep their signature.
    accepts_labels: ClassVar[bool] = False

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module],
                 device: torch.device, augment: Augment | None = None) -> None:
        self.family, self.cfg, self.nets, self.device = family, cfg, nets, device
        self.raw = {k: _unwrap(m) for k, m in nets.items()}
        self.params = cfg.model.params
        self.augment = augment or (lambda x: x)
        tc = cfg.train
        fused = device.type == "cuda"
        self.opt = {k: torch.optim.Adam(self.raw[k].parameters(), lr=self.lr_of(k), betas=tc.betas, fused=fused)
                    for k in self.trained}
        #: training iterations done (counts calls of the step; saved for lazy regularisation on resume)
        self.iteration = 0
        self.scaler = make_scaler(device, tc.precision)
        self.precision = tc.precision
        # Families without a discriminator (the VAEs) have no adversarial loss to configure.
        adv = getattr(self.params, "adversarial_loss", None)
        self.adv = LOSSES.get(adv)() if adv is not None else None

    def lr_of(self, key: str) -> float:
        """Learning rate of network ``key``: ``train.lr_d`` for discriminators, ``train.lr_g`` for the
        rest, ``train.lr`` where those are 0."""
        tc = self.cfg.train
        own = tc.lr_d if key in self.discriminators else tc.lr_g
        return own or tc.lr

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
        return {"opt": {k: o.state_dict() for k, o in self.opt.items()}, "scaler": self.scaler.state_dict(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, o in self.opt.items():
            o.load_state_dict(state["opt"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state.get("iteration", 0))


@contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """``net``'s parameters do not require gradients inside the block (restored after it, also on error).

    For the generator's update through the discriminator: the gradients reaching G are the same, and D's
    weight gradients, which that update would discard, are not computed (StyleGAN2-ADA's training phases
    set ``requires_grad`` the same way)."""
    params = [q for q in net.parameters() if q.requires_grad]
    for q in params:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q in params:
            q.requires_grad_(True)


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``E_x |grad_x D(x)|^2``: the R1 regulariser without its ``gamma / 2`` (Mescheder et al. 2018, Eq. 9).

    Args:
        logits: D's real logits, computed from ``inputs`` (which must require grad); any shape (B, ...).
        inputs: the real images (B, C, *spatial) the logits were computed from.

    Returns:
        The mean over the batch of the squared gradient norm (float32), differentiable w.r.t. D's weights.
    """
    (grad,) = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


class ConditionalStep(Step):
    """Steps of the GAN families: the shared label handling of every conditioning method.

    * ``frozen-classifier`` (b, paper 000): G's loss gets ``class_weight x CE(C(G(z, y)), y)`` from the
      frozen classifier ``C``, pre-trained on the real images in :meth:`prepare`;
    * ``ac`` (c, paper 001 Eq. 9; paper 004 S.2.1): D's loss gets ``class_weight x (CE(D_c(x), y) +
      CE(D_c(G(z, y)), y))``, G's loss ``class_weight x CE(D_c(G(z, y)), y)``;
    * ``projection`` (d): the label enters D's logit, no extra term.

    CE is the softmax cross-entropy, or the mean per-finding binary cross-entropy for multi-label data.
    """

    accepts_labels = True

    def __init__(self, family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
                 augment: Augment | None = None) -> None:
        super().__init__(family, cfg, nets, device, augment)
        cond = getattr(family, "conditioning", None)
        self.method = cond(self.params) if cond is not None else "none"
        self.num_classes = int(getattr(self.params, "num_classes", 0))
        self.multi_label = bool(getattr(self.params, "multi_label", False))
        self.class_weight = float(getattr(self.params, "class_weight", 1.0))
        self.conditional = self.method in CONDITIONAL
        if self.method == "frozen-classifier" and "C" in self.raw:
            self.raw["C"].requires_grad_(False)
            self.raw["C"].eval()  # inference mode: no spectral-norm power iterations either

    def r1_inputs(self, real: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(the real batch for D, whether R1 is taken this update): with ``train.r1_gamma > 0``, every
        ``train.r1_every``-th call the batch is a leaf that requires grad, so D's gradient w.r.t. the
        (un-augmented) images can be taken from the same forward pass."""
        tc = self.cfg.train
        now = tc.r1_gamma > 0 and self.iteration % tc.r1_every == 0
        return (real.detach().requires_grad_(True), True) if now else (real, False)

    def r1_term(self, d_real: torch.Tensor, real_in: torch.Tensor, now: bool) -> torch.Tensor:
        """``r1_every x gamma / 2 x E|grad D|^2`` when ``now`` (lazy regularisation, Karras et al. 2020), else 0."""
        if not now:
            return torch.zeros((), device=self.device)
        tc = self.cfg.train
        return tc.r1_every * 0.5 * tc.r1_gamma * r1_penalty(d_real, real_in)

    def labels_of(self, real: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor | None,
                                                                                 torch.Tensor | None]:
        """(labels on the device, their float code (B, K)); (None, None) for unconditional models."""
        if not self.conditional:
            return None, None
        if labels is None:
            raise ConfigError(f"model.conditioning={self.method!r} trains a conditional GAN, which needs the class "
                              "of every real image; the prepared dataset has no labels")
        labels = labels.to(real.device)
        try:
            code = label_code(labels, self.num_classes, self.multi_label)
        except ValueError as e:
            raise ConfigError(f"model.num_classes={self.num_classes}: {e}") from None
        return labels, code

    def gen(self, g: nn.Module, z: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
        return g(z) if code is None else g(z, code)

    def disc(self, d: nn.Module, x: torch.Tensor, code: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, class logits or None); the label code reaches only a projection discriminator."""
        return split_output(d(x, code) if self.method == "projection" else d(x))

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return class_loss(logits, y, self.multi_label)

    def d_class_loss(self, real_cls: list[torch.Tensor | None], fake_cls: list[torch.Tensor | None],
                     y: torch.Tensor | None) -> torch.Tensor:
        """``class_weight x`` the AC terms of D on real and fake images (0 unless ``ac``)."""
        if y is None or self.method != "ac":
            return torch.zeros((), device=self.device)
        terms = [self._ce(c, y) for c in (*real_cls, *fake_cls) if c is not None]
        return self.class_weight * sum(terms, torch.zeros((), device=self.device))

    def g_class_loss(self, fake_cls: list[torch.Tensor | None], fakes: list[torch.Tensor],
                     y: torch.Tensor | None) -> torch.Tensor:
        """``class_weight x`` the class term of G: D's class head (``ac``) or the frozen classifier (b)."""
        zero = torch.zeros((), device=self.device)
        if y is None:
            return zero
        if self.method == "ac":
            return self.class_weight * sum((self._ce(c, y) for c in fake_cls if c is not None), zero)
        if self.method == "frozen-classifier":
            return self.class_weight * sum((self._ce(self.raw["C"](x), y) for x in fakes), zero)
        return zero

    def prepare(self, images: torch.Tensor, progress: bool = False, labels: torch.Tensor | None = None) -> None:
        """Conditioning method (b): train the classifier ``C`` on the real images, then freeze it.

        Adam with the run's ``train.lr``/``train.betas``, ``model.classifier_iterations`` batches of
        ``train.batch_size`` from a generator seeded with ``train.seed`` (no global RNG is used, so the
        GAN's own random stream is the same with every method).  Skipped when ``C`` was already trained
        (a resumed run: its weights come from the checkpoint).
        """
        if self.method != "frozen-classifier" or "C" not in self.raw:
            return
        c = self.raw["C"]
        if int(c.trained):
            return
        if labels is None:
            raise ConfigError("model.conditioning='frozen-classifier' trains its classifier on labelled real images; "
                              "the prepared dataset has no labels")
        train_frozen_classifier(c, images, labels, self.cfg, self.num_classes, self.multi_label, self.device, progress)


def train_frozen_classifier(c: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: RunConfig,
                            num_classes: int, multi_label: bool, device: torch.device, progress: bool) -> float:
    """Fit ``C`` (a :class:`FrozenClassifier`) on (images, labels), freeze it; returns the final training accuracy."""
    from synthmed.progress import progress as progress_bar

    tc, p = cfg.train, cfg.model.params
    gen = torch.Generator().manual_seed(tc.seed + 104_729)
    c.train().requires_grad_(True)
    opt = torch.optim.Adam(c.parameters(), lr=tc.lr, betas=tc.betas)
    n = len(images)
    for _ in progress_bar(range(p.classifier_iterations), disable=not progress, desc="frozen classifier", unit="it"):
        idx = torch.randint(0, n, (min(tc.batch_size, n),), generator=gen)
        x, y = images[idx].to(device), labels[idx].to(device)
        loss = class_loss(c(x).reshape(len(idx), num_classes), y, multi_label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    c.eval().requires_grad_(False)
    with torch.no_grad():
        logits = torch.cat([c(images[s:s + 32].to(device)).reshape(-1, num_classes) for s in range(0, n, 32)]).cpu()
    acc = ((logits > 0).float() == labels.float()).float().mean() if multi_label else (
        (logits.argmax(1) == labels).float().mean())
    c.trained.fill_(1)
    return float(acc)


@STEPS.register("gan")
class GANStep(ConditionalStep):
    """Plain GAN update (SN-GAN, paper 000): one D step, then one G step on the same fakes.

    Losses: ``L_D = loss.d(D(aug x), D(aug G(z)))``, ``L_G = loss.g(D(aug G(z)))``; conditional
    models generate the fakes with the real batch's labels and add the class terms of
    :class:`ConditionalStep`.
    """

    trained = ("G", "D")
    supports_r1 = reports_d_signs = True

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        y, code = self.labels_of(real, labels)
        z = self.latent(real.shape[0])
        real_in, r1_now = self.r1_inputs(real)
        self.iteration += 1
        with self.amp():
            fake = self.gen(self.nets["G"], z, code)
            d_real, c_real = self.disc(self.nets["D"], self.augment(real_in), code)
            d_fake, c_fake = self.disc(self.nets["D"], self.augment(fake.detach()), code)
            loss_d = self.adv.d_loss(d_real, d_fake) + self.d_class_loss([c_real], [c_fake], y)
        r1 = self.r1_term(d_real, real_in, r1_now)
        self.update(loss_d + r1, ("D",))
        with self.amp():
            # The un-wrapped D: its gradients here are discarded, so no DDP all-reduce is needed.
            g_out, g_cls = self.disc(self.raw["D"], self.augment(fake), code)
            loss_cls = self.g_class_loss([g_cls], [fake], y)
            loss_g = self.adv.g_loss(g_out) + loss_cls
        self.update(loss_g, ("G",))
        out = {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
               **d_stats(d_real, d_fake)}
        if self.cfg.train.r1_gamma > 0:
            out["r1"] = r1.detach()
        if y is not None:
            out["loss_g_class"] = loss_cls.detach()
        return out


def d_stats(d_real: torch.Tensor, d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every GAN step reports of its discriminator: mean logits, ``d_real_sign`` = E[sign D(real)]
    (ADA's overfitting heuristic r_t) and ``d_acc``, the fraction of real and fake images D puts on
    the right side of 0 (the guard "discriminator wins outright" watches it)."""
    r, f = d_real.detach().float(), d_fake.detach().float()
    acc = torch.cat([(r > 0).flatten(), (f < 0).flatten()]).float().mean()
    return {"d_real": r.mean(), "d_fake": f.mean(), "d_real_sign": r.sign().mean(), "d_acc": acc}


@STEPS.register("alpha_gan")
class AlphaGANStep(ConditionalStep):
    """alpha-GAN update (paper 000 Eqs. 2-4 without the hierarchical split; Rosca et al. 2017).

    1. Encoder + generator: ``L_EG = lambda * |G(E(x)) - x|_1 + loss.g(D(G(E(x)))) + loss.g(D(G(z_r)))
       + loss.g(CD(E(x)))`` (Eq. 2).
    2. Discriminator: real counted twice against both fakes (Eq. 3).
    3. Code discriminator with the discriminator's loss: z_r real, E(x) fake (Eq. 4).

    Conditional: G(E(x), y) and G(z_r, y) with the real batch's labels y; the class terms of
    :class:`ConditionalStep` are added to steps 1 and 2 (the real images' class term counted twice, as
    the real term of Eq. 3).
    """

    trained = ("G", "D", "E", "CD")
    supports_r1 = reports_d_signs = True

    def _reconstruction(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LOSSES.get(self.params.reconstruction_loss)(pred, target)

    def __call__(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n, (g, d, e, cd) = real.shape[0], (self.nets[k] for k in ("G", "D", "E", "CD"))
        y, lc = self.labels_of(real, labels)
        z_r = self.latent(n)
        with self.amp():
            z_e = e(real)
            x_e, x_r = self.gen(g, z_e, lc), self.gen(g, z_r, lc)
            rec = self._reconstruction(x_e.float(), real.float())
            (g_e, c_e), (g_r, c_r) = (self.disc(self.raw["D"], self.augment(x), lc) for x in (x_e, x_r))
            cls = self.g_class_loss([c_e, c_r], [x_e, x_r], y)
            adv = self.adv.g_loss(g_e) + self.adv.g_loss(g_r) + cls
            code = self.adv.g_loss(self.raw["CD"](z_e))
            loss_eg = self.params.reconstruction_weight * rec + adv + code
        self.update(loss_eg, ("E", "G"))
        real_in, r1_now = self.r1_inputs(real)
        self.iteration += 1
        with self.amp():
            d_real, cl_real = self.disc(d, self.augment(real_in), lc)
            d_fake_e, cl_e = self.disc(d, self.augment(x_e.detach()), lc)
            d_fake_r, cl_r = self.disc(d, self.augment(x_r.detach()), lc)
            loss_d = self.adv.d_loss(d_real, d_fake_e) + self.adv.d_loss(d_real, d_fake_r)
            loss_d = loss_d + self.d_class_loss([cl_real, cl_real], [cl_e, cl_r], y)
        r1 = self.r1_term(d_real, real_in, r1_now)
        self.update(loss_d + r1, ("D",))
        with self.amp():
            loss_cd = self.adv.d_loss(cd(z_r), cd(z_e.detach()))
        self.update(loss_cd, ("CD",))
        out = {"loss_eg": loss_eg.detach(), "loss_rec": rec.detach(), "loss_g_adv": adv.detach(),
               "loss_code": code.detach(), "loss_d": loss_d.detach(), "loss_cd": loss_cd.detach(),
               **d_stats(d_real, d_fake_r)}
        if self.cfg.train.r1_gamma > 0:
            out["r1"] = r1.detach()
        if y is not None:
            out["loss_g_class"] = cls.detach()
        return out


def make_step(family: ModelFamily, cfg: RunConfig, nets: dict[str, nn.Module], device: torch.device,
              augment: Augment | None) -> Step:
    """The family's step, with optimisers for its trained networks."""
    return STEPS.get(family.step)(family, cfg, nets, device, augment)


# The VAE, HA-GAN and WGAN-GP steps register themselves into STEPS (imported last: they subclass Step).
import synthmed.train.hagan_steps  # noqa: E402, F401
import synthmed.train.vae_steps  # noqa: E402, F401
import synthmed.train.wgan_steps  # noqa: E402, F401
