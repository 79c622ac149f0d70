"""Label conditioning blocks shared by every conditional GAN (2D and 3D).

* :class:`LabelEmbedding` turns a label code (one-hot for single-label, multi-hot for multi-label
  data) into the vector concatenated to the latent (paper 000, "Architectures for conditional image
  synthetization": "we introduce the class information by concatenating an embedding of the label to
  the latent space for all conditional models").
* :class:`ProjectionHead`: the projection discriminator (Miyato & Koyama 2018; paper 000; cpD-GAN of
  paper 004 S.2.2): ``logit = psi(phi(x)) + y^T V phi(x)`` with ``phi`` the globally sum-pooled last
  features.  With a multi-hot ``y`` the inner products of all present findings are summed.
* :class:`ClassHead`: auxiliary-classifier head (AC-GAN, Odena et al. 2017; paper 001 Eq. 9): a
  convolution over the whole last feature map (kernel = its spatial shape) to one logit per class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from synthmed.nn.factories import conv, maybe_spectral_norm


class LabelEmbedding(nn.Module):
    """Label code (B, K) -> embedding (B, E).

    ``embedding_dim = 0`` uses the code itself (E = K): the first generator layer that receives
    ``[z; e]`` is linear, so a learned embedding in front of it is the same function class.  With
    ``embedding_dim > 0`` a bias-free linear map ``K -> E`` (an ``nn.Embedding`` for one-hot codes).
    """

    def __init__(self, num_classes: int, embedding_dim: int = 0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.out_dim = embedding_dim or num_classes
        self.proj = nn.Linear(num_classes, embedding_dim, bias=False) if embedding_dim else None

    def forward(self, code: Tensor) -> Tensor:
        if code.ndim != 2 or code.shape[1] != self.num_classes:
            raise ValueError(f"expected a label code of shape (B, {self.num_classes}), got {tuple(code.shape)}")
        return code if self.proj is None else self.proj(code)


def concat_label(z: Tensor, code: Tensor | None, embed: LabelEmbedding | None) -> Tensor:
    """``[z; embed(code)]`` for a conditional generator, ``z`` for an unconditional one.

    Raises:
        ValueError: if a conditional generator gets no code.
    """
    if embed is None:
        return z
    if code is None:
        raise ValueError(f"this generator is conditional ({embed.num_classes} classes): pass a label code")
    return torch.cat([z, embed(code.to(z.dtype))], 1)


def discriminator_outputs(out: Tensor, h: Tensor, code: Tensor | None, outputs: int,
                          projection: Callable[[Tensor, Tensor], Tensor] | None,
                          class_head: Callable[[Tensor], Tensor] | None) -> Tensor | tuple[Tensor, Tensor]:
    """A conditional discriminator's outputs from its unconditional logits ``out`` (B, outputs) and
    features ``h``: (B,) when ``outputs`` is 1, plus the projection term ``projection(h, code)``
    (Miyato & Koyama 2018), and with an auxiliary classifier also ``class_head(h)`` (B, K)."""
    out = out[:, 0] if outputs == 1 else out
    if projection is not None:
        if code is None:
            raise ValueError("a projection discriminator needs the label code of its input")
        out = out + projection(h, code)
    if class_head is not None:
        return out, class_head(h)
    return out


class ProjectionHead(nn.Module):
    """Projection term ``y^T V phi(x)`` of Miyato & Koyama (2018), ``phi`` = global sum pooling.

    Args:
        num_features: channels C of the last feature map.
        num_classes: K.
        spectral_norm: spectrally normalise V (as the rest of an SN discriminator).

    Shape:
        h: (B, C, *S), code: (B, K) -> (B,).
    """

    def __init__(self, num_features: int, num_classes: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.embed = maybe_spectral_norm(nn.Linear(num_classes, num_features, bias=False), spectral_norm)

    def forward(self, h: Tensor, code: Tensor) -> Tensor:
        phi = h.flatten(2).sum(2)
        return (self.embed(code.to(phi.dtype)) * phi).sum(1)


class ClassHead(nn.Module):
    """Auxiliary-classifier head: a conv with kernel = the feature map's shape to K logits.

    Shape:
        h: (B, C, *shape) -> (B, K).
    """

    def __init__(self, spatial_dims: int, num_features: int, num_classes: int, shape: Sequence[int],
                 spectral_norm: bool = True) -> None:
        super().__init__()
        self.conv = maybe_spectral_norm(conv(spatial_dims, num_features, num_classes, tuple(shape), bias=True),
                                        spectral_norm)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h).flatten(1)
