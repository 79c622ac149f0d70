"""What a registered model family provides to the generic training loop and the sampler.

A family is one decorated class in ``MODELS``: a typed ``Params`` dataclass (defaults from the
paper), ``build`` (the networks for a given data shape) and the name of the ``Step`` that owns
its losses and update order (``synthmed.train.steps.STEPS``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

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


def get_family(name: str) -> ModelFamily:
    """Instantiate the registered family ``name`` (ConfigError listing the choices if unknown)."""
    import synthmed.models.gan  # noqa: F401  (fills the registry)

    return MODELS.get(name)()
