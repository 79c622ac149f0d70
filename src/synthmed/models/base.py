"""What a registered model family provides to the generic training loop and the sampler.

A family is one decorated class in ``MODELS``: a typed ``Params`` dataclass (defaults from the
paper), ``build`` (the networks for a given data shape) and the name of the ``Step`` that owns
its losses and update order (``synthmed.train.steps.STEPS``).  Families with an image encoder
(alpha-SN-GAN, the VAEs) also set ``has_encoder`` and provide ``encode``, which
``reconstruct_images`` uses for reconstruction metrics (paper 002, Sec. 3.3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.registry import MODELS


class ModelFamily(ABC):
    """Base class of every registered generative model family."""

    #: typed parameters (the ``model:`` section of a config, without ``name``).
    Params: ClassVar[type]
    #: name of the training step in ``synthmed.train.steps.STEPS``.
    step: ClassVar[str]
    #: the network that maps a latent code to an image.
    generator_key: ClassVar[str] = "G"
    #: spatial dims this family supports.
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    #: whether the family maps images to latent codes (``encode``, ``reconstruct_images``).
    has_encoder: ClassVar[bool] = False
    #: the network that maps an image to a latent code, when ``has_encoder``.
    encoder_key: ClassVar[str] = "E"
    #: whether ``encode`` is the mean of a Gaussian posterior q(z|x) trained against the prior N(0, I) (the
    #: VAEs): such a family can be sampled from a density fitted ex post to its training codes
    #: (``sample.prior: gmm``, Ghosh et al. 2020, Sec. 4; :mod:`synthmed.generate.prior`).
    gaussian_posterior: ClassVar[bool] = False

    @abstractmethod
    def build(self, params: Any, spatial_dims: int, shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """Build the networks for images of ``shape`` (spatial only) with ``spatial_dims`` dims."""

    def latent_dim(self, params: Any) -> int:
        return int(params.latent_dim)

    def sample_latent(self, params: Any, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
        """z ~ N(0, I): (n, latent_dim)."""
        return torch.randn(n, self.latent_dim(params), generator=generator).to(device)

    def generate(self, nets: dict[str, nn.Module], z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, *spatial) in [-1, 1] from latent codes (B, latent_dim)."""
        return nets[self.generator_key](z)

    @torch.no_grad()
    def generate_images(self, nets: dict[str, nn.Module], z: torch.Tensor) -> np.ndarray:
        """Images as float32 NumPy (B, 1, *spatial) in [-1, 1], generated in eval mode (BatchNorm
        running statistics, so a sample does not depend on its batch); the generator's train/eval
        mode is restored afterwards, so previews and FID checks during training change nothing."""
        gen = nets[self.generator_key]
        was = gen.training
        gen.eval()
        try:
            return self.generate(nets, z).float().clamp(-1, 1).cpu().numpy()
        finally:
            gen.train(was)

    def encode(self, nets: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) of images (B, 1, *spatial) in [-1, 1], in the networks' current mode.

        The default returns ``nets[encoder_key](x)``; VAEs override it to return the posterior mean.

        Raises:
            ConfigError: if the family has no encoder.
        """
        self._require_encoder()
        return nets[self.encoder_key](x)

    def encode_sample(self, nets: dict[str, nn.Module], x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A latent code drawn from the encoder's posterior with standard-normal noise ``eps``
        (B, latent_dim); deterministic encoders (the default) ignore ``eps`` and return :meth:`encode`."""
        return self.encode(nets, x)

    @torch.no_grad()
    def reconstruct_images(self, nets: dict[str, nn.Module], x: np.ndarray, batch_size: int | None = None,
                           sample_seed: int | None = None) -> np.ndarray:
        """Reconstructions ``G(encode(x))`` as float32 NumPy (B, 1, *spatial) in [-1, 1].

        Like :meth:`generate_images`: eval mode (BatchNorm running statistics, so an image's
        reconstruction does not depend on its batch), no gradients, train/eval modes restored
        afterwards.  Inputs go to the device of the generator's parameters.

        Args:
            nets: the family's networks.
            x: (B, 1, *spatial) images in [-1, 1].
            batch_size: images per forward pass (None: all at once).
            sample_seed: None decodes the deterministic code (the posterior mean of a VAE); an int
                decodes a posterior sample (:meth:`encode_sample`), image ``i`` with noise from seed
                ``sample_seed + i`` (independent of the batch size).

        Raises:
            ConfigError: if the family has no encoder.
        """
        self._require_encoder()
        enc, gen = nets[self.encoder_key], nets[self.generator_key]
        modes = (enc.training, gen.training)
        device = next(gen.parameters()).device
        enc.eval()
        gen.eval()
        try:
            step = batch_size or max(len(x), 1)
            out = []
            for s in range(0, len(x), step):
                batch = torch.from_numpy(np.array(x[s:s + step], dtype=np.float32)).to(device)  # copy: x may be read-only
                if sample_seed is None:
                    z = self.encode(nets, batch)
                else:
                    eps = torch.stack([torch.randn(self._latent_dim_of(nets),
                                                   generator=torch.Generator().manual_seed(sample_seed + s + i))
                                       for i in range(len(batch))]).to(device)
                    z = self.encode_sample(nets, batch, eps)
                out.append(self.generate(nets, z).float().clamp(-1, 1).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, *np.shape(x)[1:]), np.float32)
        finally:
            enc.train(modes[0])
            gen.train(modes[1])

    def _latent_dim_of(self, nets: dict[str, nn.Module]) -> int:
        """The latent length of built networks (their generator's ``latent_dim``)."""
        return int(nets[self.generator_key].latent_dim)

    def _require_encoder(self) -> None:
        if not self.has_encoder:
            choices = ", ".join(n for n, cls in MODELS.items() if getattr(cls, "has_encoder", False))
            raise ConfigError(f"model family {type(self).__name__} has no encoder, so it cannot reconstruct "
                              f"images; families with one: {choices}")


def get_family(name: str) -> ModelFamily:
    """Instantiate the registered family ``name`` (ConfigError listing the choices if unknown)."""
    import synthmed.models.gan  # noqa: F401  (fills the registry)
    import synthmed.models.vae  # noqa: F401

    return MODELS.get(name)()
