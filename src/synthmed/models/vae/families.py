"""Vanilla VAE, DFC-VAE and IntroVAE (paper 002, Secs. 2.1, 2.3, 2.4 and 3.2).

Conditioning (``model.conditioning``, the keys of :class:`synthmed.models.gan.conditioning.ConditionalParams`):
``none``; ``per-class`` (one unconditional VAE per class, ``train.label=CLASS``); ``cvae``: a conditional
VAE (Sohn et al. 2015, "Learning Structured Output Representation using Deep Conditional Generative
Models"): the label code y (one-hot, or the 0/1 findings of ``multi_label``) is concatenated to z at
the decoder's input, G(z, y), the generator-side interface of the GANs (paper 000: the label
"concatenated to the latent"), and to the flattened encoder features before the mean / log-variance
heads, q(z | x, y).  ``auto``: ``none`` without ``num_classes``, else ``cvae``.  ``class_weight`` and
``classifier_iterations`` have no effect on the VAEs; ``label_embedding_dim`` must be 0 (the code
itself is concatenated).

The networks live in ``networks.py`` (vanilla / DFC) and ``intro.py`` (IntroVAE); the losses and
update order in :mod:`synthmed.train.vae_steps`.  Every VAE has an encoder ``E`` (images -> posterior
mean and log-variance) and a decoder ``G`` (latent -> image), so sampling, previews and FID checks
use ``G`` exactly as for the GANs, and reconstructions are ``G(mu(x))``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.models.base import ModelFamily
from synthmed.models.gan.conditioning import ConditionalFamily, ConditionalParams, label_code
from synthmed.models.vae.intro import IntroDecoder, IntroEncoder
from synthmed.models.vae.networks import GaussianEncoder, UpsamplingDecoder
from synthmed.registry import MODELS

#: integer parameters that must be >= 1 (when set).
_POSITIVE = ("latent_dim", "base_channels", "max_channels", "max_stages", "feature_iterations", "feature_layers")


#: ``model.conditioning`` of the VAEs: ``cvae`` is the conditional VAE of Sohn et al. 2015.
VAEConditioning = Literal["auto", "none", "per-class", "cvae"]
VAE_METHODS = ("none", "per-class", "cvae")


def _validate(params: object) -> None:
    """ConfigError naming the key when a size is < 1 or a weight or margin is negative."""
    if getattr(params, "label_embedding_dim", 0):
        raise ConfigError("config key 'model.label_embedding_dim': the VAEs concatenate the one-hot/multi-hot "
                          f"label code itself (Sohn et al. 2015); expected 0, got {params.label_embedding_dim}")
    for f in fields(params):  # type: ignore[arg-type]
        v = getattr(params, f.name)
        if f.name in _POSITIVE and v is not None and v < 1:
            raise ConfigError(f"config key 'model.{f.name}': expected a positive integer, got {v}")
        if f.name in ("reconstruction_pixels", "kl_warmup") and v < 0:
            raise ConfigError(f"config key 'model.{f.name}': expected a non-negative integer (0 = off), got {v}")
        if isinstance(v, float) and not v >= 0:
            raise ConfigError(f"config key 'model.{f.name}': expected a non-negative number, got {v}")


@dataclass
class VAEParams(ConditionalParams):
    """Vanilla VAE parameters.  Defaults: paper 002, Sec. 3.2 (latent 200; 4 stride-2 4x4 convs
    with 32..256 channels as Hou et al. 2017; squared error scaled by 0.025 x H x W).

    ``kl_weight`` multiplies the KL term of Eq. 5 (1 in the paper); ``reconstruction_scale`` is the
    0.025 of "scaled by 0.025 x 128 x 128", applied to the per-image sum of squared errors on [0, 1]
    intensities.
    """

    #: ``none``, ``per-class`` (one run per class, ``train.label``), ``cvae`` (a conditional VAE, Sohn et al.
    #: 2015: the label enters the encoder and is concatenated to z at the decoder), or ``auto`` (``cvae`` when
    #: ``num_classes`` > 0)
    conditioning: VAEConditioning = "auto"  # type: ignore[assignment]
    #: size of the latent (paper 002 Sec. 3.2: 200)
    latent_dim: int = 200
    #: channels of the first encoder stage, doubled per stage up to ``max_channels`` (Hou et al. 2017: 32..256)
    base_channels: int = 32
    #: channels of the deepest stage
    max_channels: int = 256
    #: stride-2 stages at most (paper 002: 4; fewer when the image cannot be halved that often)
    max_stages: int = 4
    #: slope of the LeakyReLUs
    negative_slope: float = 0.2
    #: weight of the KL term of paper 002 Eq. 5 (1 in the paper)
    kl_weight: float = 1.0
    #: the 0.025 of "squared error scaled by 0.025 x H x W" (paper 002 Eq. 5), on [0, 1] intensities
    reconstruction_scale: float = 0.025
    #: > 0: weigh the squared error as if the image had this many pixels (``scale x N x MSE``), so the
    #: balance of reconstruction and KL is paper 002's at any image size (16384 = its 128 x 128); 0 = the
    #: image's own pixel count, Eq. 5 exactly as printed (at 28 x 28 the KL then wins: posterior collapse)
    reconstruction_pixels: int = 0
    #: KL warm-up (Bowman et al. 2016): the KL weight grows linearly from 0 over this many iterations (0 = off)
    kl_warmup: int = 0
    #: free bits (Kingma et al. 2016): nats per latent dimension below which the KL is not penalised,
    #: max(free_bits, batch-mean KL_j) summed over dimensions j (0 = off, Eq. 5 exactly)
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)


@dataclass
class DFCVAEParams(ConditionalParams):
    """DFC-VAE parameters.  Networks as the vanilla VAE (paper 002, Sec. 3.2); the pixel term of Eq. 5
    is replaced by the feature perceptual loss of Eqs. 6-7 on three ReLU layers of ``feature_network``.

    ``feature_network``: ``indomain`` (default; the in-domain autoencoder's encoder, trained for
    ``feature_iterations`` steps on the run's training images when ``feature_weights`` is empty, or
    loaded from that checkpoint) or ``vgg16`` (needs ``feature_weights``, a local VGG16 file).

    ``perceptual_weight``: None picks the default of the feature network.  ``vgg16``: 2e-9 on the
    un-normalised sum of squared feature differences (paper 002's weight, which only makes sense on
    such sums of ImageNet-scale VGG activations).  ``indomain``: Eq. 7 as printed (per-layer mean
    over 2 C H W) weighted ``0.025 x number of pixels``, the weight the vanilla VAE gives the pixel
    term that the perceptual term replaces (Sec. 2.3), since 2e-9 would leave only the KL term.

    Paper 002 most likely used Keras' VGG16 (``include_top=False``), whose Caffe-style inputs are
    0-255 intensities: its activations are far larger than those of the torchvision-format weights
    that ``synthmed.features.vgg`` loads (ImageNet-normalised [0, 1] inputs), so with such a file 2e-9
    may leave the perceptual term negligible next to KL; set ``perceptual_weight`` explicitly then.

    ``feature_layers``: how many activation layers of the in-domain network (VGG16 always uses
    relu1_1, relu2_1 and relu3_1).
    """

    #: as the vanilla VAE's: ``none``, ``per-class``, ``cvae`` (Sohn et al. 2015) or ``auto``
    conditioning: VAEConditioning = "auto"  # type: ignore[assignment]
    #: size of the latent (paper 002 Sec. 3.2: 200)
    latent_dim: int = 200
    #: channels of the first encoder stage, doubled per stage up to ``max_channels``
    base_channels: int = 32
    #: channels of the deepest stage
    max_channels: int = 256
    #: stride-2 stages at most (paper 002: 4)
    max_stages: int = 4
    #: slope of the LeakyReLUs
    negative_slope: float = 0.2
    #: weight of the KL term (paper 002 Eq. 5: 1)
    kl_weight: float = 1.0
    #: network of the perceptual loss (paper 002 Eqs. 6-7): ``indomain`` (the in-domain autoencoder's encoder,
    #: trained on the run's images) or ``vgg16`` (a local VGG16 weights file in ``feature_weights``)
    feature_network: Literal["indomain", "vgg16"] = "indomain"
    #: weights file of the feature network (empty with ``indomain``: train one at the start of the run)
    feature_weights: str = ""
    #: training iterations of the in-domain feature network when ``feature_weights`` is empty
    feature_iterations: int = 500
    #: activation layers of the in-domain network used (VGG16 always uses relu1_1, relu2_1, relu3_1)
    feature_layers: int = 3
    #: weight of the perceptual term (null: the feature network's default, 2e-9 for ``vgg16`` as paper 002,
    #: 0.025 x pixels for ``indomain``)
    perceptual_weight: float | None = None
    #: as the vanilla VAE's: the in-domain perceptual weight is ``0.025 x reconstruction_pixels`` (0 = the image's pixels)
    reconstruction_pixels: int = 0
    #: KL warm-up iterations, as the vanilla VAE's (0 = off)
    kl_warmup: int = 0
    #: free bits per latent dimension, as the vanilla VAE's (0 = off)
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)


@dataclass
class IntroVAEParams(ConditionalParams):
    """IntroVAE parameters.  Defaults: paper 002, Sec. 3.2 (m = 110, latent 256, KL terms of Eqs. 8-9
    weighted 0.25, reconstruction 0.5; residual PGGAN-like networks).

    ``reconstruction_weight`` multiplies the per-image sum of squared errors on [0, 1] intensities
    (IntroVAE's L_AE, whose scale the margin m is tuned to).  ``reconstructions_as_fakes`` adds
    E(G(E(x))) to the fakes of Eqs. 8-9, as the original IntroVAE (Huang et al. 2018, Alg. 1) does;
    paper 002's Eqs. 8-9 use only samples x' = G(z), the default.
    """

    #: as the vanilla VAE's: ``none``, ``per-class``, ``cvae`` (the KL terms use the same label) or ``auto``
    conditioning: VAEConditioning = "auto"  # type: ignore[assignment]
    #: size of the latent (paper 002 Sec. 3.2: 256)
    latent_dim: int = 256
    #: channels of the finest residual stage, doubled per stage up to ``max_channels``
    base_channels: int = 32
    #: channels of the deepest stages
    max_channels: int = 256
    #: stages at most (null: halve down to a 4-7 voxel grid)
    max_stages: int | None = None
    #: slope of the LeakyReLUs
    negative_slope: float = 0.2
    #: the KL margin m of paper 002 Eqs. 8-9 (110)
    margin: float = 110.0
    #: weight of the KL terms of paper 002 Eqs. 8-9 (0.25)
    kl_weight: float = 0.25
    #: weight of the per-image sum of squared errors (paper 002 Eqs. 8-9: 0.5)
    reconstruction_weight: float = 0.5
    #: also use E(G(E(x))) as fakes, as the original IntroVAE (Huang et al. 2018, Alg. 1); paper 002 does not
    reconstructions_as_fakes: bool = False
    #: > 0: the squared error is weighed as if the image had this many pixels (IntroVAE's margin m = 110
    #: and weights were tuned at 128 x 128 = 16384); 0 = the image's own pixels, as printed
    reconstruction_pixels: int = 0

    def __post_init__(self) -> None:
        _validate(self)


class _VAEFamily(ConditionalFamily, ModelFamily):
    """Shared by the VAEs: encoder ``E`` -> (mu, logvar), decoder ``G``; ``encode`` is the posterior mean.

    Conditional (``cvae``) networks take the (B, K) label code as a second input, ``E(x, y)`` and
    ``G(z, y)`` (Sohn et al. 2015); ``labels`` below are (B,) class indices or a (B, K) 0/1 matrix.
    """

    generator_key = "G"
    encoder_key = "E"
    has_encoder = True
    gaussian_posterior = True
    default_conditioning: ClassVar[str] = "cvae"
    conditioning_methods: ClassVar[tuple[str, ...]] = VAE_METHODS

    def network_kwargs(self, params: Any) -> dict[str, Any]:
        """Keyword arguments shared by encoder and decoder, ``cond_dim`` = K for ``cvae``."""
        self.check_conditioning(params)
        return dict(latent_dim=params.latent_dim, base_channels=params.base_channels,
                    max_channels=params.max_channels, max_stages=params.max_stages,
                    negative_slope=params.negative_slope, cond_dim=self.generator_classes(params))

    @staticmethod
    def _code(net: nn.Module, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """The label code a network built with ``cond_dim`` K takes (None for unconditional networks);
        missing labels cycle through the classes (sample ``i`` gets class ``i mod K``)."""
        k = int(getattr(net, "cond_dim", 0))
        if not k:
            return None
        if labels is None:
            labels = torch.arange(n, device=device) % k
        labels = labels.to(device)
        return label_code(labels, k, labels.ndim == 2)

    def encode(self, nets: dict[str, nn.Module], x: torch.Tensor,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean mu(x[, y]) (B, latent_dim): deterministic reconstructions ``G(mu(x))``."""
        enc = nets[self.encoder_key]
        mu, _ = enc(x, self._code(enc, labels, x.shape[0], x.device))
        return mu

    def encode_sample(self, nets: dict[str, nn.Module], x: torch.Tensor, eps: torch.Tensor,
                      labels: torch.Tensor | None = None) -> torch.Tensor:
        """``z = mu + eps * exp(logvar / 2)``, a draw from q(z|x[, y]) (the decoder's training input)."""
        enc = nets[self.encoder_key]
        mu, logvar = enc(x, self._code(enc, labels, x.shape[0], x.device))
        return mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)

    def generate(self, nets: dict[str, nn.Module], z: torch.Tensor,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images G(z[, y]) (B, 1, *spatial): the label code concatenated to z (paper 000; Sohn et al. 2015)."""
        g = nets[self.generator_key]
        code = self._code(g, labels, z.shape[0], z.device)
        return g(z) if code is None else g(z, code)

    @torch.no_grad()
    def reconstruct_images(self, nets: dict[str, nn.Module], x: np.ndarray, batch_size: int | None = None,
                           sample_seed: int | None = None, labels: Any = None) -> np.ndarray:
        """As :meth:`ModelFamily.reconstruct_images`; a conditional VAE encodes and decodes each image
        with its own label (``labels``: (N,) class indices or an (N, K) 0/1 matrix; None cycles the classes).
        """
        if not int(getattr(nets[self.generator_key], "cond_dim", 0)):
            return super().reconstruct_images(nets, x, batch_size, sample_seed)
        enc, gen = nets[self.encoder_key], nets[self.generator_key]
        modes = (enc.training, gen.training)
        device = next(gen.parameters()).device
        lab = None if labels is None else torch.as_tensor(np.asarray(labels))
        enc.eval()
        gen.eval()
        try:
            step = batch_size or max(len(x), 1)
            out = []
            for s in range(0, len(x), step):
                batch = torch.from_numpy(np.array(x[s:s + step], dtype=np.float32)).to(device)
                y = (torch.arange(s, s + len(batch)) % int(gen.cond_dim)) if lab is None else lab[s:s + len(batch)]
                y = y.to(device)
                if sample_seed is None:
                    z = self.encode(nets, batch, y)
                else:
                    eps = torch.stack([torch.randn(self._latent_dim_of(nets),
                                                   generator=torch.Generator().manual_seed(sample_seed + s + i))
                                       for i in range(len(batch))]).to(device)
                    z = self.encode_sample(nets, batch, eps, y)
                out.append(self.generate(nets, z, y).float().clamp(-1, 1).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, *np.shape(x)[1:]), np.float32)
        finally:
            enc.train(modes[0])
            gen.train(modes[1])


@MODELS.register("vae")
class VAE(_VAEFamily):
    """Vanilla VAE: KL + 0.025 x sum of squared errors (paper 002, Eq. 5 and Sec. 3.2)."""

    Params = VAEParams
    step = "vae"

    def build(self, params: VAEParams | DFCVAEParams, spatial_dims: int,  # type: ignore[override]
              shape: tuple[int, ...]) -> dict[str, nn.Module]:
        kw = self.network_kwargs(params)
        return {"E": GaussianEncoder(spatial_dims, shape, **kw), "G": UpsamplingDecoder(spatial_dims, shape, **kw)}


@MODELS.register("dfc_vae")
class DFCVAE(VAE):
    """DFC-VAE: KL + feature perceptual loss on three ReLU layers (paper 002, Eqs. 6-7; Hou et al. 2017)."""

    Params = DFCVAEParams
    step = "dfc_vae"


@MODELS.register("intro_vae")
class IntroVAE(_VAEFamily):
    """IntroVAE: the encoder doubles as discriminator through the KL margin m (paper 002, Eqs. 8-9)."""

    Params = IntroVAEParams
    step = "intro_vae"

    def build(self, params: IntroVAEParams, spatial_dims: int,  # type: ignore[override]
              shape: tuple[int, ...]) -> dict[str, nn.Module]:
        kw = self.network_kwargs(params)
        return {"E": IntroEncoder(spatial_dims, shape, **kw), "G": IntroDecoder(spatial_dims, shape, **kw)}
