"""Exponential moving average of the generator's weights (StyleGAN2-ADA's ``G_ema``).

Karras et al. 2020 ("Training Generative Adversarial Networks with Limited Data", App. B.1 and the
``ema_kimg``/``ema_rampup`` options of their training loop) sample from a copy of the generator whose
weights follow ``w_ema <- beta * w_ema + (1 - beta) * w`` after every generator update, with

    beta = 0.5 ** (batch_size / (ema_kimg * 1000))

i.e. a half-life of ``ema_kimg`` thousand images, optionally ramped up at the start of training
(``ema_nimg = min(ema_kimg * 1000, images_seen * ema_rampup)``) so that the average does not carry
the random initial weights for long.  Buffers (BatchNorm running statistics) are copied, not averaged.
On small data the averaged generator gives visibly smoother, less noisy samples than the raw one.

The copy is saved in checkpoints as the network ``G_ema``; previews, FID monitoring and
``synthmed sample`` use it by default when it exists (``synthmed sample --no-ema`` takes the raw
weights).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: checkpoint key of the averaged generator
EMA_KEY = "G_ema"


def ema_beta(batch_size: int, ema_kimg: float, images_seen: int, rampup: float = 0.0) -> float:
    """The decay of one update: ``0.5 ** (batch_size / ema_nimg)`` (StyleGAN2-ADA).

    Args:
        batch_size: images per generator update (all processes together).
        ema_kimg: half-life of the average in thousands of images (> 0).
        images_seen: images the generator has been trained on so far, this update included.
        rampup: > 0 limits the half-life to ``images_seen * rampup`` early in training.
    """
    if ema_kimg <= 0:
        raise ValueError(f"ema_kimg must be > 0, got {ema_kimg}")
    nimg = ema_kimg * 1000.0
    if rampup > 0:
        nimg = min(nimg, images_seen * rampup)
    return 0.5 ** (batch_size / max(nimg, 1e-8))


class GeneratorEMA:
    """An averaged copy of ``module`` (kept on the module's device, never trained).

    Args:
        module: the generator (un-wrapped, not DDP).
        ema_kimg: half-life in thousands of images.
        rampup: see :func:`ema_beta`.
    """

    def __init__(self, module: nn.Module, ema_kimg: float, rampup: float = 0.0) -> None:
        self.ema_kimg, self.rampup = float(ema_kimg), float(rampup)
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, source: nn.Module, batch_size: int, images_seen: int) -> float:
        """Move the average towards ``source``'s weights; copy its buffers.  Returns the beta used."""
        beta = ema_beta(batch_size, self.ema_kimg, images_seen, self.rampup)
        for p_ema, p in zip(self.module.parameters(), source.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.module.buffers(), source.buffers(), strict=True):
            b_ema.copy_(b)
        return beta


def with_ema(nets: dict[str, nn.Module], generator_key: str = "G") -> dict[str, nn.Module]:
    """``nets`` with the generator replaced by its average when the run has one (``G_ema``)."""
    if EMA_KEY not in nets:
        return nets
    out = dict(nets)
    out[generator_key] = nets[EMA_KEY]
    return out
