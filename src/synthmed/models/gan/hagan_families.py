"""HA-GAN (paper 001) and alpha-HA-GAN (paper 000) families.

The networks live in ``hagan.py`` (geometry in ``hagan_geometry.py``), the losses and update order in
:mod:`synthmed.train.hagan_steps`.  Networks of a family: ``G`` (G^A, G^L, G^H), ``D`` (D^H, D^L),
``EH`` and ``EG`` (the hierarchical encoder), and for alpha-HA-GAN the code discriminator ``CD``.
Images of any size divisible by ``low_factor`` (4) are supported; 64^3, 128^3 and 256^3 differ only
in the prepared data's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import ConditionalFamily, ConditionalParams
from synthmed.models.gan.encoder import CodeDiscriminator
from synthmed.models.gan.hagan import (
    HierarchicalDiscriminator,
    HierarchicalGenerator,
    build_encoders,
    encode_hierarchical,
)
from synthmed.registry import MODELS


@dataclass
class HAGANParams(ConditionalParams):
    """HA-GAN parameters.  Defaults: paper 001, Sec. III-E and supplementary Tables I-VII.

    Geometry: ``low_factor`` full / low resolution (4: 64^3 at 256^3, 16^3 at 64^3);
    ``subvolume_depth`` full-resolution slices per training sub-volume (0: size / 8, i.e. 32 x 256^2 at
    256^3 and 8 x 64^2 at 64^3).  ``subvolume_halo`` slices of A given to G^H as context around a
    training sub-volume and ``slice_norm`` (slice-wise GroupNorm in G^H) make the training path equal
    the inference path on every sub-volume; ``slice_norm=False, subvolume_halo=0`` is the paper's G^H.
    ``inference_chunk``: slices of A per G^H pass when generating full volumes (0: all at once; the
    result is the same with ``slice_norm``, only the memory differs).

    Losses: ``adversarial_loss`` (non-saturating, Eqs. 4-5); ``discriminator_output`` ``separate``
    sums the GAN losses of D^H and D^L (paper 001 Eq. 8), ``average`` trains on (D^H + D^L) / 2
    (paper 000, Fig. S6); ``reconstruction_weight_high`` / ``_global`` are lambda_1 / lambda_2 of
    Eq. 8 (5 and 5).

    Learning rates: G uses ``train.lr`` (1e-4 in ``hagan.yaml``); ``lr_e`` the encoders, ``lr_d`` the
    discriminators (None: ``train.lr``); Sec. III-E: 1e-4 / 1e-4 / 4e-4.

    Conditional HA-GAN (paper 001 Sec. IV-C, Eq. 9) through the common conditioning interface
    (:mod:`synthmed.models.gan.conditioning`): ``conditioning: ac`` (what ``auto`` means with
    ``num_classes`` > 0) concatenates the one-hot (or multi-hot, ``multi_label``) class code to z and adds
    auxiliary-classifier heads to D^H and D^L, weighted by ``class_weight``; ``per-class`` trains one
    unconditional HA-GAN per class.  ``label_embedding_dim`` must stay 0 (the code itself, as the paper).
    """

    #: size of z (paper 001 Sec. III-E: 1024)
    latent_dim: int = 1024
    #: channels of the finest stage of every network, doubled per coarser stage up to ``max_channels``
    base_channels: int = 32
    #: channels of the coarsest stages (paper 001 supplementary Tables I-VIII: 512)
    max_channels: int = 512
    #: full / low resolution of the hierarchy (paper 001: 4, i.e. 64^3 at 256^3, 16^3 at 64^3)
    low_factor: int = 4
    #: full-resolution slices per training sub-volume (0: size / 8, paper 001's 32 x 256^2 at 256^3)
    subvolume_depth: int = 0
    #: slices of the shared features given to G^H as context around a training sub-volume (0: paper 001's G^H)
    subvolume_halo: int = 1
    #: slice-wise GroupNorm in G^H, so training on sub-volumes equals inference on the whole volume (false: paper 001)
    slice_norm: bool = True
    #: groups of the GroupNorm layers
    norm_groups: int = 8
    #: slices of the shared features per G^H pass when generating full volumes (0: all at once; memory only)
    inference_chunk: int = 16
    #: slope of the LeakyReLUs
    negative_slope: float = 0.2
    #: ``nonsaturating`` (paper 001 Eqs. 4-5) or ``hinge``
    adversarial_loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    #: ``separate``: sum of the GAN losses of D^H and D^L (paper 001 Eq. 8); ``average``: one loss on
    #: (D^H + D^L) / 2 (paper 000 Fig. S6)
    discriminator_output: Literal["separate", "average"] = "separate"
    #: lambda_1 of paper 001 Eq. 8: weight of the sub-volume reconstruction by the encoder E^H
    reconstruction_weight_high: float = 5.0
    #: lambda_2 of paper 001 Eq. 8: weight of the low-resolution reconstruction through E^G
    reconstruction_weight_global: float = 5.0
    #: learning rate of the encoders (paper 001 Sec. III-E: 1e-4; null: ``train.lr``)
    lr_e: float | None = 1.0e-4
    #: learning rate of the discriminators (paper 001 Sec. III-E: 4e-4; null: ``train.lr``)
    lr_d: float | None = 4.0e-4
    num_classes: int = 0
    class_weight: float = 1.0


@dataclass
class AlphaHAGANParams(HAGANParams):
    """alpha-HA-GAN parameters: HA-GAN plus the alpha-GAN encoder losses and the code discriminator
    (paper 000, "alpha-HA-GAN", Eqs. 1-4, Fig. S6).

    Paper 000 trains every GAN with latent size 1000 and Adam 2e-4 (0.5, 0.999) for all networks
    (``lr_e = lr_d = None``: ``train.lr``), averages D^H and D^L into one discriminator (Fig. S6) and
    uses the non-saturating loss for the hierarchical models.  ``reconstruction_weight_global`` is the
    lambda of Eq. 2, not stated in paper 000; we take lambda_2 = 5 of paper 001, whose Eq. 7 holds the
    same two L1 terms.  Eq. 1 has no weight (``reconstruction_weight_high = 1``).  ``code_hidden_dim``:
    width of the code discriminator (paper 000, Fig. S5).
    """

    latent_dim: int = 1000
    discriminator_output: Literal["separate", "average"] = "average"
    reconstruction_weight_high: float = 1.0
    lr_e: float | None = None
    lr_d: float | None = None
    #: width of the code discriminator's hidden layers (paper 000 Fig. S5)
    code_hidden_dim: int = 2048


def _check(params: HAGANParams) -> None:
    from synthmed.errors import ConfigError

    for key in ("latent_dim", "base_channels", "max_channels", "norm_groups"):
        if getattr(params, key) < 1:
            raise ConfigError(f"config key 'model.{key}': expected a positive integer, got {getattr(params, key)}")
    for key in ("subvolume_depth", "subvolume_halo", "inference_chunk", "num_classes"):
        if getattr(params, key) < 0:
            raise ConfigError(f"config key 'model.{key}': expected a non-negative integer, got {getattr(params, key)}")
    for key in ("lr_e", "lr_d"):
        if getattr(params, key) is not None and not getattr(params, key) > 0:
            raise ConfigError(f"config key 'model.{key}': expected a positive number or null, got {getattr(params, key)}")


@MODELS.register("hagan")
class HAGAN(ConditionalFamily, ModelFamily):
    """HA-GAN: hierarchical amortized 3D GAN with encoder, memory-efficient up to 256^3 (paper 001)."""

    Params = HAGANParams
    default_conditioning = "ac"  # paper 001 Eq. 9
    conditioning_methods = ("none", "per-class", "ac")
    step = "hagan"
    has_encoder = True
    encoder_key = "EG"

    def build(self, params: HAGANParams, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        from synthmed.errors import ConfigError

        _check(params)
        self.check_conditioning(params)
        if params.label_embedding_dim:
            raise ConfigError("config key 'model.label_embedding_dim': HA-GAN concatenates the class code itself "
                              f"(paper 001 Sec. IV-C); expected 0, got {params.label_embedding_dim}")
        k = self.generator_classes(params)
        geo = {"low_factor": params.low_factor, "subvolume_depth": params.subvolume_depth}
        chans = {"base_channels": params.base_channels, "max_channels": params.max_channels}
        try:
            g = HierarchicalGenerator(spatial_dims, shape, params.latent_dim, **chans, **geo,
                                      halo=params.subvolume_halo, slice_norm=params.slice_norm,
                                      groups=params.norm_groups, num_classes=k,
                                      inference_chunk=params.inference_chunk)
        except ValueError as e:
            raise ConfigError(f"model {type(self).__name__}: {e}") from None
        d = HierarchicalDiscriminator(spatial_dims, shape, **chans, **geo, negative_slope=params.negative_slope,
                                      num_classes=k)
        eh, eg = build_encoders(spatial_dims, shape, params.latent_dim, **chans, **geo, groups=params.norm_groups)
        return {"G": g, "D": d, "EH": eh, "EG": eg}

    def generate(self, nets: dict[str, nn.Module], z: torch.Tensor, labels: torch.Tensor | None = None,
                 chunk: int | None = None) -> torch.Tensor:
        """Full-resolution images G^H(G^A(z)) (B, 1, *size) (paper 001, Sec. III-B "Inference").

        Args:
            labels: (B,) classes or a (B, K) 0/1 matrix (multi-label) for a conditional model (default:
                cycling through the classes).
            chunk: slices of A per G^H pass (default: the networks' ``inference_chunk``).
        """
        g = nets[self.generator_key]
        if getattr(g, "num_classes", 0) and labels is None:
            labels = torch.arange(z.shape[0], device=z.device) % g.num_classes
        return g.full(z, labels, chunk=chunk)

    def encode(self, nets: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Ẑ = E^G(concat_v E^H(S^H(x; T_v))) over the non-overlapping sub-volumes (paper 001, Fig. 2)."""
        return encode_hierarchical(nets["EH"], nets["EG"], x, nets[self.generator_key].plan)

    @torch.no_grad()
    def reconstruct_images(self, nets: dict[str, nn.Module], x: np.ndarray,
                           batch_size: int | None = None) -> np.ndarray:
        """Full-resolution reconstructions G^H(G^A(Ẑ(x))) as float32 NumPy, in eval mode."""
        keys = (self.generator_key, "EH", "EG")
        modes = {k: nets[k].training for k in keys}
        device = next(nets[self.generator_key].parameters()).device
        for k in keys:
            nets[k].eval()
        try:
            step = batch_size or max(len(x), 1)
            out = []
            for s in range(0, len(x), step):
                xb = torch.as_tensor(np.asarray(x[s:s + step]), dtype=torch.float32, device=device)
                out.append(self.generate(nets, self.encode(nets, xb)).float().clamp(-1, 1).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, *np.shape(x)[1:]), np.float32)
        finally:
            for k in keys:
                nets[k].train(modes[k])


@MODELS.register("alpha_hagan")
class AlphaHAGAN(HAGAN):
    """alpha-HA-GAN: HA-GAN + code discriminator and alpha-GAN encoder losses (paper 000, Fig. S6)."""

    Params = AlphaHAGANParams
    step = "alpha_hagan"

    def build(self, params: AlphaHAGANParams, spatial_dims: int,  # type: ignore[override]
              shape: tuple[int, ...]) -> dict[str, nn.Module]:
        nets = super().build(params, spatial_dims, shape)
        nets["CD"] = CodeDiscriminator(params.latent_dim, hidden_dim=params.code_hidden_dim,
                                       negative_slope=params.negative_slope)
        return nets
