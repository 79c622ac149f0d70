"""One conditioning interface for every GAN family, 2D and 3D (paper 000, "Architectures for
conditional image synthetization"; paper 001 Eq. 9; paper 004 S.2.1-S.2.2).

Config keys (``model.*``, in every GAN family's parameters):

* ``conditioning``: ``none``; ``per-class`` (a): one unconditional GAN per class, i.e. one run per class
  with ``train.label=CLASS``; ``frozen-classifier`` (b): a classifier with the discriminator's
  architecture, trained on the real images before the GAN and frozen, adds ``class_weight x``
  cross-entropy of its prediction on G(z, y) to the generator loss (paper 000's winner);
  ``ac`` (c): an auxiliary-classifier head on the discriminator, cross-entropy on real and fake images
  for D and on fakes for G (AC-GAN, Odena et al. 2017; paper 001 Eq. 9; prog-GAN of paper 004);
  ``projection`` (d): projection discriminator (Miyato & Koyama 2018; cpD-GAN of paper 004);
  ``auto`` (default): ``none`` when ``num_classes`` is 0, else the family's paper method
  (:attr:`ConditionalFamily.default_conditioning`).
* ``num_classes``: K; 0 with a conditional method takes K from the prepared dataset at training time
  (the resolved value is written to the run's ``config.yaml``).
* ``multi_label``: labels are a (N, K) 0/1 matrix of findings (paper 004, several findings at once);
  class losses are then per-finding binary cross-entropies instead of a softmax cross-entropy.
* ``class_weight``: weight of the class terms; ``label_embedding_dim``: size of the label embedding
  concatenated to z (0: the one-hot/multi-hot code itself); ``classifier_iterations``: training
  iterations of the frozen classifier (b).

Every conditional generator takes ``G(z, code)`` with ``code`` the (B, K) float label code
(:func:`label_code`); discriminators take ``D(x, code)`` and return logits (B,), or
``(logits, class_logits)`` for ``ac``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.errors import ConfigError

Conditioning = Literal["auto", "none", "per-class", "frozen-classifier", "ac", "projection"]
METHODS = ("none", "per-class", "frozen-classifier", "ac", "projection")
#: methods whose networks take labels (``per-class`` trains unconditional networks on one class).
CONDITIONAL = ("frozen-classifier", "ac", "projection", "cvae")  # cvae: the VAEs only (models/vae/families.py)


@dataclass
class ConditionalParams:
    """The conditioning keys shared by every GAN family's parameters (see the module docstring)."""

    #: ``none``, ``per-class`` (one run per class, ``train.label``; paper 000), ``frozen-classifier`` (a
    #: classifier trained on real images first, then frozen; paper 000's winner), ``ac`` (auxiliary-classifier
    #: head on D; paper 001 Eq. 9), ``projection`` (projection discriminator; paper 004 S.2.2), or ``auto``: the
    #: family's paper method when ``num_classes`` > 0, else ``none``
    conditioning: Conditioning = "auto"
    #: number of classes K; 0 with a conditional method takes K from the prepared dataset at training time
    num_classes: int = 0
    #: labels are a 0/1 matrix of several findings per image (paper 004); per-finding binary cross-entropies
    multi_label: bool = False
    #: weight of the class terms (frozen classifier, auxiliary classifier) in the losses
    class_weight: float = 1.0
    #: size of a learned label embedding concatenated to z (0: the one-hot or multi-hot code itself, paper 000)
    label_embedding_dim: int = 0
    #: training iterations of the frozen classifier on the real training images before the GAN starts
    classifier_iterations: int = 500


class ConditionalFamily:
    """Mixin of the GAN families: which conditioning methods a family supports and its paper default."""

    #: the method ``conditioning: auto`` means when ``num_classes > 0``.
    default_conditioning: ClassVar[str] = "frozen-classifier"
    #: the methods this family implements.
    conditioning_methods: ClassVar[tuple[str, ...]] = METHODS

    def conditioning(self, params: Any) -> str:
        """The resolved method of ``params`` (``auto`` resolved), checked against the family."""
        method = getattr(params, "conditioning", "none")
        if method == "auto":
            method = self.default_conditioning if getattr(params, "num_classes", 0) else "none"
        if method not in self.conditioning_methods:
            raise ConfigError(f"config key 'model.conditioning': model {type(self).__name__} supports "
                              f"{', '.join(self.conditioning_methods)}; got {method!r}")
        return method

    def is_conditional(self, params: Any) -> bool:
        """Whether the networks take labels (``per-class`` runs are unconditional networks)."""
        return self.conditioning(params) in CONDITIONAL

    def check_conditioning(self, params: Any, need_classes: bool = True) -> None:
        """ConfigError for inconsistent conditioning keys (at config load with ``need_classes=False``:
        the number of classes may still come from the data)."""
        method = self.conditioning(params)
        if params.num_classes < 0:
            raise ConfigError(f"config key 'model.num_classes': expected a non-negative integer, got {params.num_classes}")
        if need_classes and method in CONDITIONAL and params.num_classes < 1:
            raise ConfigError(f"config key 'model.num_classes': conditioning {method!r} needs the number of classes "
                              "(training fills it in from the prepared dataset)")
        if getattr(params, "label_embedding_dim", 0) < 0:
            raise ConfigError("config key 'model.label_embedding_dim': expected a non-negative integer, got "
                              f"{params.label_embedding_dim}")
        if getattr(params, "classifier_iterations", 1) < 1:
            raise ConfigError("config key 'model.classifier_iterations': expected a positive integer, got "
                              f"{params.classifier_iterations}")
        if method == "per-class" and getattr(params, "multi_label", False):
            raise ConfigError("config key 'model.conditioning': per-class needs single-label data (one GAN per "
                              "class); with model.multi_label use ac, projection or frozen-classifier")

    def generator_classes(self, params: Any) -> int:
        """K for the generator's label input (0: unconditional)."""
        return int(params.num_classes) if self.is_conditional(params) else 0

    def generate(self, nets: dict[str, nn.Module], z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images G(z[, code]) (B, 1, *spatial); ``labels`` are (B,) class indices or a (B, K) 0/1 matrix.

        A conditional model without labels cycles through the classes (sample ``i`` gets class
        ``i mod K``); :func:`synthmed.generate.sample.sample` always passes them explicitly.
        """
        g = nets[self.generator_key]  # type: ignore[attr-defined]
        k = int(getattr(g, "num_classes", 0))
        if not k:
            return g(z)
        if labels is None:
            labels = torch.arange(z.shape[0], device=z.device) % k
        return g(z, label_code(labels.to(z.device), k, labels.ndim == 2))

    @torch.no_grad()
    def generate_images(self, nets: dict[str, nn.Module], z: Tensor, labels: Tensor | None = None) -> np.ndarray:
        """As :meth:`ModelFamily.generate_images` (eval mode, [-1, 1] float32 NumPy), with labels."""
        gen = nets[self.generator_key]  # type: ignore[attr-defined]
        was = gen.training
        gen.eval()
        try:
            return self.generate(nets, z, labels).float().clamp(-1, 1).cpu().numpy()
        finally:
            gen.train(was)


def label_code(labels: Tensor, num_classes: int, multi_label: bool) -> Tensor:
    """The float (B, K) code of labels: one-hot of (B,) class indices, or a (B, K) 0/1 matrix as is.

    Raises:
        ValueError: labels of the wrong shape or out of range.
    """
    if multi_label:
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise ValueError(f"multi-label conditioning expects a (B, {num_classes}) 0/1 label matrix, "
                             f"got shape {tuple(labels.shape)}")
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError("multi-label conditioning expects labels that are 0 or 1")
        return labels.float()
    if labels.ndim != 1:
        raise ValueError(f"single-label conditioning expects (B,) class indices, got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes}), got {labels.tolist()}")
    return F.one_hot(labels.long(), num_classes).float()


def class_loss(logits: Tensor, labels: Tensor, multi_label: bool) -> Tensor:
    """Softmax cross-entropy against class indices, or mean per-finding binary cross-entropy."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def split_output(out: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
    """(logits, class logits or None) of a discriminator output."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


class FrozenClassifier(nn.Module):
    """Conditioning method (b): a classifier trained on the real images before the GAN, then frozen.

    Wraps a network with the discriminator's architecture and K outputs (paper 000: "a 3D-CNN classifier
    using the same structure as the discriminator ... trained in advance to overfit on the real data
    set ... During the GAN training it is only used in inference mode"); the buffer ``trained`` marks
    that the pre-training has been done (so a resumed run does not train it again).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("trained", torch.zeros((), dtype=torch.uint8))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
