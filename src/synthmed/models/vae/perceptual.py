"""Feature networks psi for the DFC-VAE perceptual loss (paper 002, Sec. 2.3 Eqs. 6-7 and Sec. 3.2).

Paper 002 takes "the outputs of three ReLU activation layers" of an ImageNet VGG16.  ImageNet
weights cannot be downloaded at run time here, so two feature networks are offered:

* ``indomain`` (default): the encoder of the project's in-domain autoencoder
  (:mod:`synthmed.features.indomain`), trained on the run's own training images at the start of the
  run (or loaded from a checkpoint of :func:`synthmed.features.train_indomain_extractor`); psi_l are
  the outputs of its first three LeakyReLU layers (fewer when the image is only halved twice, e.g.
  28^3 gives two).
* ``vgg16``: ``synthmed.features.vgg.VGG16`` with a local weights file, layers relu1_1, relu2_1 and
  relu3_1 (Hou et al. 2017), 2D only.

A feature network is frozen and always in eval mode (BatchNorm running statistics), so psi(x) of a
real image does not depend on the batch it is in.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthmed.errors import CheckpointError, ConfigError
from synthmed.io_utils import sha256_file

#: VGG16 layers of the DFC-VAE ("VAE-123", Hou et al. 2017).
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


class FeatureNetwork(nn.Module):
    """A frozen network returning hidden feature maps: x (B, 1, *spatial) in [-1, 1] -> [(B, C_l, *S_l)].

    Attributes:
        name: ``indomain`` or ``vgg16``.
        weights_sha256: SHA-256 of the weights file it came from.
        info: JSON-able provenance (layers, training of an in-domain network ...).
    """

    name = "feature-network"

    def __init__(self, weights_sha256: str | None, info: dict[str, Any]) -> None:
        super().__init__()
        self.weights_sha256 = weights_sha256
        self.info = info

    def freeze(self) -> FeatureNetwork:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        """Always eval: BatchNorm statistics of psi must not follow the batch."""
        return super().train(False)


class IndomainReluFeatures(FeatureNetwork):
    """The outputs of the first ``n_layers`` LeakyReLU layers of an in-domain encoder.

    Args:
        autoencoder: a trained :class:`synthmed.features.indomain.IndomainAutoencoder` (only its
            encoder is kept).
        n_layers: how many activation layers to return (3, as paper 002's three ReLU layers).
        weights_sha256: SHA-256 of the checkpoint file.
        info: provenance.
    """

    name = "indomain"

    def __init__(self, autoencoder: nn.Module, n_layers: int = 3, weights_sha256: str | None = None,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__(weights_sha256, info or {})
        self.encoder = autoencoder.encoder
        self.config = dict(autoencoder.config)
        self.size = tuple(self.config["size"])
        acts = [i for i, m in enumerate(self.encoder.body) if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
        if not acts:
            raise ValueError("the in-domain encoder has no activation layers")
        self.cut = acts[: max(1, n_layers)]
        self.info = {**self.info, "layers": [f"body.{i}" for i in self.cut]}
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        from synthmed.features.indomain import resize_images

        h = resize_images(x, self.size)
        feats: list[Tensor] = []
        for i, m in enumerate(self.encoder.body):
            h = m(h)
            if i in self.cut:
                feats.append(h)
                if len(feats) == len(self.cut):
                    break
        return feats


class VGGReluFeatures(FeatureNetwork):
    """``VGG16.relu_features`` of ``synthmed.features.vgg`` at the given layers (2D only)."""

    name = "vgg16"

    def __init__(self, vgg: nn.Module, layers: tuple[str, ...], weights_sha256: str | None) -> None:
        super().__init__(weights_sha256, {"layers": list(layers)})
        self.vgg, self.layers = vgg, layers
        self.freeze()

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.vgg.relu_features(x, layers=self.layers))


def train_indomain_features(images: np.ndarray, iterations: int, seed: int, device: torch.device | str,
                            progress: bool = False, n_layers: int = 3) -> IndomainReluFeatures:
    """Train the in-domain autoencoder on ``images`` (the run's training images) and wrap its encoder.

    Uses :func:`synthmed.features.indomain.train_indomain_extractor` (seeded; it leaves the global
    RNG untouched, so a resumed run and a straight run draw the same latents).
    """
    from synthmed.features.indomain import train_indomain_extractor

    with tempfile.TemporaryDirectory(prefix="synthmed-dfc-") as tmp:
        path = train_indomain_extractor(np.ascontiguousarray(images, dtype=np.float32), Path(tmp) / "features.pt",
                                        iterations=iterations, seed=seed, device=device, progress=progress)
        net = load_indomain_features(path, n_layers)
    # The file's bytes hold its random temporary name (torch.save names the archive after it), so
    # identify a network trained here by its weights instead.
    net.weights_sha256 = tensors_sha256(net.encoder)
    net.info["weights_sha256_of"] = "encoder tensors"
    return net


def tensors_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state (names and float32/int bytes, in name order)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_indomain_features(path: str | Path, n_layers: int = 3) -> IndomainReluFeatures:
    """An in-domain checkpoint (from ``train_indomain_extractor``) as a feature network."""
    from synthmed.features.indomain import load_indomain_autoencoder

    model, ckpt = load_indomain_autoencoder(path)
    info = {"training": ckpt.get("training", {}), "config": ckpt["config"]}
    return IndomainReluFeatures(model, n_layers, sha256_file(path), info)


def indomain_features_state(net: IndomainReluFeatures) -> dict[str, Any]:
    """Everything needed to rebuild ``net`` without its file (kept in the training checkpoint)."""
    return {"config": net.config, "encoder": {k: v.detach().cpu() for k, v in net.encoder.state_dict().items()},
            "n_layers": len(net.cut), "weights_sha256": net.weights_sha256, "info": net.info}


def indomain_features_from_state(state: dict[str, Any]) -> IndomainReluFeatures:
    """Inverse of :func:`indomain_features_state`."""
    from synthmed.features.indomain import IndomainAutoencoder

    c = state["config"]
    ae = IndomainAutoencoder(c["spatial_dims"], c["size"], c["feature_dim"], c["base_channels"], c["max_channels"])
    ae.encoder.load_state_dict(state["encoder"])
    info = {k: v for k, v in state["info"].items() if k != "layers"}
    return IndomainReluFeatures(ae, state["n_layers"], state["weights_sha256"], info)


def load_vgg16_features(path: str | Path, layers: tuple[str, ...] = VGG_LAYERS) -> VGGReluFeatures:
    """VGG16 ReLU features from a local weights file (``synthmed.features.vgg``, imported lazily).

    Raises:
        ConfigError: when the VGG module is not installed or the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: VGG16 weights file not found (model.feature_weights)")
    try:
        from synthmed.features import vgg as vgg_module
    except ImportError as e:
        raise ConfigError(f"model.feature_network 'vgg16' needs synthmed.features.vgg ({e})") from None
    loader = getattr(vgg_module, "load_vgg16", None)
    net = loader(path) if loader is not None else vgg_module.VGG16(weights=path)
    return VGGReluFeatures(net, tuple(layers), sha256_file(path))
