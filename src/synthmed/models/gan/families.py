"""SN-GAN and alpha-SN-GAN (paper 000, "SN-GAN" and "alpha-SN-GAN", Figs. S2-S5).

The networks live in ``sngan.py`` and ``encoder.py``; this file only says which networks a
family has, with which parameters, and which training step drives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import ConditionalFamily, ConditionalParams, FrozenClassifier
from synthmed.models.gan.encoder import AlphaEncoder, CodeDiscriminator
from synthmed.models.gan.sngan import SNGANDiscriminator, SNGANGenerator
from synthmed.registry import MODELS


@dataclass
class SNGANParams(ConditionalParams):
    """SN-GAN parameters.  Defaults: paper 000 (latent 1000, Fig. S2 channels 256..32 at 64^3,
    LeakyReLU, spectral norm in D, hinge loss, ICNR-initialised pixel shuffle).

    Conditioning (``conditioning``, ``num_classes``, ...): see :mod:`synthmed.models.gan.conditioning`;
    ``auto`` with classes is paper 000's winner, the frozen auxiliary classifier (b).
    """

    #: size of the latent vector z (paper 000: 1000)
    latent_dim: int = 1000
    #: channels of the finest stage; doubled per coarser stage up to ``max_channels`` (paper 000 Fig. S2:
    #: 256, 128, 64, 32 at 64^3)
    base_channels: int = 32
    #: channels of the coarsest stages
    max_channels: int = 256
    #: slope of the LeakyReLUs in G, D, E and CD
    negative_slope: float = 0.2
    #: checkerboard-free ICNR initialisation of the pixel-shuffle convolutions (Aitken et al. 2017)
    icnr: bool = True
    #: ``hinge`` (paper 000), ``nonsaturating`` or ``wgan``
    adversarial_loss: Literal["hinge", "nonsaturating", "wgan"] = "hinge"


@dataclass
class AlphaSNGANParams(SNGANParams):
    """alpha-SN-GAN adds the encoder (Fig. S4) and code discriminator (Fig. S5).

    ``reconstruction_weight`` is lambda of paper 000 Eq. 2; the paper does not state its value
    for alpha-SN-GAN, so we take 10 from the alpha-WGAN it adapts (Kwon et al. 2019, ref. 14).
    """

    #: the reconstruction term of paper 000 Eq. 2: ``l1`` (paper 000) or ``l2``
    reconstruction_loss: Literal["l1", "l2"] = "l1"
    #: lambda of paper 000 Eq. 2 (not stated there; 10 from the alpha-WGAN of Kwon et al. 2019)
    reconstruction_weight: float = 10.0
    #: width of the code discriminator's hidden layers (paper 000 Fig. S5)
    code_hidden_dim: int = 2048


@MODELS.register("sngan")
class SNGAN(ConditionalFamily, ModelFamily):
    """SN-GAN: DCGAN-style generator with ICNR pixel shuffle, spectral-norm D, hinge loss (paper 000)."""

    Params = SNGANParams
    step = "gan"

    def build(self, params: SNGANParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        self.check_conditioning(params)
        method, k = self.conditioning(params), self.generator_classes(params)
        g = SNGANGenerator(spatial_dims, shape, latent_dim=params.latent_dim, base_channels=params.base_channels,
                           max_channels=params.max_channels, negative_slope=params.negative_slope, icnr=params.icnr,
                           num_classes=k, label_embedding_dim=params.label_embedding_dim)
        d = SNGANDiscriminator(spatial_dims, shape, base_channels=params.base_channels,
                               max_channels=params.max_channels, negative_slope=params.negative_slope,
                               num_classes=k, conditioning=method)
        nets: dict[str, nn.Module] = {"G": g, "D": d}
        if method == "frozen-classifier":
            nets["C"] = FrozenClassifier(SNGANDiscriminator(
                spatial_dims, shape, base_channels=params.base_channels, max_channels=params.max_channels,
                negative_slope=params.negative_slope, outputs=k))
        return nets


@MODELS.register("alpha_sngan")
class AlphaSNGAN(SNGAN):
    """alpha-SN-GAN: SN-GAN + encoder, L1 reconstruction and code discriminator (paper 000)."""

    Params = AlphaSNGANParams
    step = "alpha_gan"
    has_encoder = True  # E (Fig. S4): reconstructions G(E(x)) for paper 002's reconstruction metrics

    def build(self, params: AlphaSNGANParams, spatial_dims: int,  # type: ignore[override]
              shape: tuple[int, ...]) -> dict[str, nn.Module]:
        nets = super().build(params, spatial_dims, shape)
        nets["E"] = AlphaEncoder(spatial_dims, shape, latent_dim=params.latent_dim,
                                 base_channels=params.base_channels, max_channels=params.max_channels,
                                 negative_slope=params.negative_slope)
        nets["CD"] = CodeDiscriminator(params.latent_dim, hidden_dim=params.code_hidden_dim,
                                       negative_slope=params.negative_slope)
        return nets
