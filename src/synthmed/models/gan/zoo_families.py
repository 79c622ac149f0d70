"""The 2D GAN zoo (also 3D: every network is dimension-generic): DCGAN, PGGAN, cpD-GAN, StyleGAN-lite.

Each family: typed parameters with the papers' defaults, the networks (``dcgan.py``, ``pggan.py``,
``cpdgan.py``, ``stylegan.py``), the conditioning interface of :mod:`synthmed.models.gan.conditioning`
and the name of its training step.  Shipped configs: ``dcgan``, ``pggan``, ``cpdgan``, ``stylegan_lite``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from synthmed.errors import ConfigError
from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import ConditionalFamily, ConditionalParams, FrozenClassifier
from synthmed.models.gan.cpdgan import CPDDiscriminator, CPDGenerator
from synthmed.models.gan.dcgan import DCGANDiscriminator, DCGANGenerator
from synthmed.models.gan.pggan import PGGANDiscriminator, PGGANGenerator
from synthmed.models.gan.stylegan import StyleGenerator
from synthmed.nn import plan_resolution
from synthmed.registry import MODELS


def _positive(params: object, *keys: str) -> None:
    for key in keys:
        v = getattr(params, key)
        if not v > 0:
            raise ConfigError(f"config key 'model.{key}': expected a positive number, got {v}")


def _plan(spatial_dims: int, shape: tuple[int, ...], model: str) -> tuple[tuple[int, ...], int]:
    try:
        return plan_resolution(shape, spatial_dims)
    except ValueError as e:
        raise ConfigError(f"model {model}: {e}") from None


@dataclass
class DCGANParams(ConditionalParams):
    """DCGAN (Radford et al. 2016): latent 100, 1024 -> 128 channels at 64^2 (base 128, cap 1024),
    non-saturating loss; Adam 2e-4, betas (0.5, 0.999), batch 128 (``dcgan.yaml``)."""

    #: size of z (Radford et al. 2016: 100)
    latent_dim: int = 100
    #: channels of the finest stage, doubled per coarser stage up to ``max_channels``
    base_channels: int = 128
    #: channels of the coarsest stage (1024 at 4^2 as DCGAN)
    max_channels: int = 1024
    #: slope of the discriminator's LeakyReLUs
    negative_slope: float = 0.2
    #: ``nonsaturating`` (DCGAN), ``hinge`` or ``wgan``
    adversarial_loss: Literal["nonsaturating", "hinge", "wgan"] = "nonsaturating"


@dataclass
class WGANGPParams(ConditionalParams):
    """Shared by the WGAN-GP families: ``gp_weight`` lambda = 10 (Gulrajani et al. 2017), taken every
    ``gp_every``-th critic update with its value multiplied by ``gp_every`` (lazy regularisation, Karras
    et al. 2020 Sec. 3.1; 1 = every update, as the papers), ``drift_weight`` 0.001 (Karras et al. 2018),
    ``label_flip`` every ``label_flip_every``-th critic update (paper 003: 3), ``minibatch_group`` of the
    minibatch standard deviation (4)."""

    #: size of z (paper 004 S.2: 512)
    latent_dim: int = 512
    #: channels of the finest stage, doubled per coarser stage up to ``max_channels``
    base_channels: int = 128
    #: channels of the coarsest stages (paper 004 S.2: 512)
    max_channels: int = 512
    #: slope of the LeakyReLUs
    negative_slope: float = 0.2
    #: the Wasserstein loss with gradient penalty (the only choice for these families)
    adversarial_loss: Literal["wgan"] = "wgan"
    #: lambda of the gradient penalty (Gulrajani et al. 2017: 10)
    gp_weight: float = 10.0
    #: apply the gradient penalty every ``gp_every``-th critic update, multiplied by ``gp_every`` (lazy
    #: regularisation, Karras et al. 2020 Sec. 3.1; 1 = every update, as the papers)
    gp_every: int = 1
    #: weight of the drift term E[D(x)^2] that keeps critic outputs near 0 (Karras et al. 2018: 0.001)
    drift_weight: float = 0.001
    #: swap real and fake labels every ``label_flip_every``-th critic update (paper 003)
    label_flip: bool = False
    #: period of the label flipping (paper 003: every third critic step)
    label_flip_every: int = 3
    #: group size of the minibatch standard deviation layer (Karras et al. 2018: 4)
    minibatch_group: int = 4


@dataclass
class PGGANParams(WGANGPParams):
    """PGGAN / prog-GAN (paper 004 S.2.1; Karras et al. 2018): z of 512, 512 channels up to 32^2 halved per
    level above (base 128 at 128^2), training from ``start_resolution`` 8, each fade-in and stabilisation
    phase ``phase_images`` = 1.4M real images (paper 004 at 32^2; 1M at 64^2 and 128^2), WGAN-GP, an
    auxiliary-classifier loss for conditioning (``auto`` = ``ac``).  Paper 003: label flipping every third
    critic step (``label_flip: true``), 20,000 steps of batch 4 at lr 2e-4."""

    #: edge length the progressive growing starts from (paper 004 S.2.1: 8)
    start_resolution: int = 8
    #: real images shown per fade-in and per stabilisation phase (paper 004 S.2.1: 1.4M at 32^2)
    phase_images: int = 1_400_000


@dataclass
class CPDGANParams(WGANGPParams):
    """cpD-GAN (paper 004 S.2.2): 512 feature channels, projection conditioning (``auto``), conditional
    pixel norm (Eq. 1), WGAN-GP; paper 004 trains with batch 256 and learning rate 0.005, n_critic 1
    (``cpdgan.yaml``)."""

    #: 512 feature channels at every resolution (paper 004 S.2.2); reduce it for 3D work
    base_channels: int = 512


@dataclass
class StyleGANLiteParams(WGANGPParams):
    """StyleGAN-lite (paper 002 Sec. 3.2): mapping of ``mapping_layers`` = 2 dense layers of width 512
    (``w_dim`` 0 = ``latent_dim``), no progressive growing or style mixing, PGGAN discriminator, Wasserstein
    loss (Eqs. 11-12, with gradient penalty), Adam at a constant 1e-4 (``stylegan_lite.yaml``)."""

    #: width of the intermediate latent w (0: ``latent_dim``)
    w_dim: int = 0
    #: dense layers of the mapping network z -> w (paper 002 Sec. 3.2: 2)
    mapping_layers: int = 2
    #: channels of the finest synthesis stage, doubled per coarser stage up to ``max_channels``
    base_channels: int = 64


class _ZooFamily(ConditionalFamily, ModelFamily):
    def _check(self, params: ConditionalParams) -> tuple[str, int]:
        self.check_conditioning(params)
        _positive(params, "latent_dim", "base_channels", "max_channels")
        for key in ("gp_weight", "drift_weight"):
            if getattr(params, key, 0) < 0:
                raise ConfigError(f"config key 'model.{key}': expected a non-negative number, got {getattr(params, key)}")
        for key in ("gp_every", "label_flip_every", "minibatch_group", "phase_images", "mapping_layers"):
            if hasattr(params, key):
                _positive(params, key)
        return self.conditioning(params), self.generator_classes(params)


@MODELS.register("dcgan")
class DCGAN(_ZooFamily):
    """DCGAN baseline (Radford et al. 2016; paper 003's comparison), 2D and 3D."""

    Params = DCGANParams
    step = "gan"
    default_conditioning = "ac"

    def build(self, params: DCGANParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        method, k = self._check(params)
        _plan(spatial_dims, shape, "dcgan")
        ch = {"base_channels": params.base_channels, "max_channels": params.max_channels}
        nets: dict[str, nn.Module] = {
            "G": DCGANGenerator(spatial_dims, shape, params.latent_dim, **ch, num_classes=k,
                                label_embedding_dim=params.label_embedding_dim),
            "D": DCGANDiscriminator(spatial_dims, shape, **ch, num_classes=k, conditioning=method,
                                    negative_slope=params.negative_slope)}
        if method == "frozen-classifier":
            nets["C"] = FrozenClassifier(DCGANDiscriminator(spatial_dims, shape, **ch, outputs=k))
        return nets


@MODELS.register("pggan")
class PGGAN(_ZooFamily):
    """PGGAN: progressive growing, equalised lr, pixel norm, minibatch std, WGAN-GP, AC loss (papers 003, 004)."""

    Params = PGGANParams
    step = "progressive_wgan_gp"
    default_conditioning = "ac"

    def build(self, params: PGGANParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        method, k = self._check(params)
        _positive(params, "start_resolution")
        start, n_up = _plan(spatial_dims, shape, "pggan")
        level = 0
        while level < n_up and min(start) * 2**level < params.start_resolution:
            level += 1
        ch = {"base_channels": params.base_channels, "max_channels": params.max_channels}
        nets: dict[str, nn.Module] = {
            "G": PGGANGenerator(spatial_dims, shape, params.latent_dim, **ch, num_classes=k,
                                label_embedding_dim=params.label_embedding_dim, start_level=level,
                                negative_slope=params.negative_slope),
            "D": PGGANDiscriminator(spatial_dims, shape, **ch, num_classes=k, conditioning=method, start_level=level,
                                    group_size=params.minibatch_group, negative_slope=params.negative_slope)}
        if method == "frozen-classifier":  # classifies full-resolution images: the last level
            nets["C"] = FrozenClassifier(PGGANDiscriminator(spatial_dims, shape, **ch, outputs=k, start_level=n_up,
                                                            group_size=params.minibatch_group))
        return nets


@MODELS.register("cpdgan")
class CPDGAN(_ZooFamily):
    """cpD-GAN: skip generator, residual projection discriminator, conditional pixel norm, WGAN-GP (paper 004)."""

    Params = CPDGANParams
    step = "wgan_gp"
    default_conditioning = "projection"

    def build(self, params: CPDGANParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        method, k = self._check(params)
        _plan(spatial_dims, shape, "cpdgan")
        ch = {"base_channels": params.base_channels, "max_channels": params.max_channels}
        d_kw = {"group_size": params.minibatch_group, "negative_slope": params.negative_slope}
        nets: dict[str, nn.Module] = {
            "G": CPDGenerator(spatial_dims, shape, params.latent_dim, **ch, num_classes=k,
                              label_embedding_dim=params.label_embedding_dim, negative_slope=params.negative_slope),
            "D": CPDDiscriminator(spatial_dims, shape, **ch, num_classes=k, conditioning=method, **d_kw)}
        if method == "frozen-classifier":
            nets["C"] = FrozenClassifier(CPDDiscriminator(spatial_dims, shape, **ch, outputs=k, **d_kw))
        return nets


@MODELS.register("stylegan_lite")
class StyleGANLite(_ZooFamily):
    """StyleGAN-lite: 2-layer mapping, AdaIN, per-layer noise, no progressive growing (paper 002)."""

    Params = StyleGANLiteParams
    step = "wgan_gp"
    default_conditioning = "ac"

    def build(self, params: StyleGANLiteParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        method, k = self._check(params)
        if params.w_dim < 0:
            raise ConfigError(f"config key 'model.w_dim': expected a non-negative integer, got {params.w_dim}")
        _, n_up = _plan(spatial_dims, shape, "stylegan_lite")
        ch = {"base_channels": params.base_channels, "max_channels": params.max_channels}
        d_kw = {"group_size": params.minibatch_group, "negative_slope": params.negative_slope, "start_level": n_up}
        nets: dict[str, nn.Module] = {
            "G": StyleGenerator(spatial_dims, shape, params.latent_dim, params.w_dim, params.mapping_layers, **ch,
                                num_classes=k, label_embedding_dim=params.label_embedding_dim,
                                negative_slope=params.negative_slope),
            "D": PGGANDiscriminator(spatial_dims, shape, **ch, num_classes=k, conditioning=method, **d_kw)}
        if method == "frozen-classifier":
            nets["C"] = FrozenClassifier(PGGANDiscriminator(spatial_dims, shape, **ch, outputs=k, **d_kw))
        return nets
