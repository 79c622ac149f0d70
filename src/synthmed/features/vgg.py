"""VGG16 (Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR; arXiv:1409.1556) as a 2D feature extractor and a perceptual-loss backbone.

Configuration D of the paper's Table 1: thirteen 3 x 3 convolutions with ReLU in five stages of
64, 128, 256, 512 and 512 channels, each closed by a 2 x 2 max pool, then fully connected layers
of 4096, 4096 and 1000 units (fc6, fc7, fc8), written here from that table.  Module names are
torchvision's (``features.0.weight`` ... ``features.28.bias``, ``classifier.0/3/6.*``; a 7 x 7
adaptive average pool sits between them) so torchvision's ImageNet weights
``vgg16-397923af.pth`` load from local disk (nothing downloads at run time).  Dropout is left out:
features are eval-mode activations.

Features for metrics: ``fc7`` (4096-d, after the second classifier ReLU, the usual "deep
features" of pretrained-CNN evaluations such as paper 003's GAN-train SVM) or ``pool5`` (the
512-channel map after the fifth max pool, averaged over space).  :meth:`VGG16Extractor.relu_features`
gives the ReLU maps relu1_1, relu2_1, relu3_1 ... for the feature perceptual loss of DFC-VAE
(Hou et al. 2017; paper 002, Sec. 3.2).

Inputs are ImageNet-normalised as the weights expect: [-1, 1] -> [0, 1], grayscale repeated to RGB,
then ``(x - mean) / std`` with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from synthmed.errors import CheckpointError, ConfigError
from synthmed.features.base import EXTRACTORS, FeatureExtractor
from synthmed.features.inception import load_checked_state_dict, load_weights_file

#: Configuration D (Table 1 of Simonyan and Zisserman): conv widths, "M" = 2 x 2 max pool.
VGG16_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")
VGG16_WEIGHT_FILE = "torchvision's vgg16-397923af.pth (ImageNet, 1000 classes)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_SIZE = 224
VGG_MIN_SIZE = 32
VGG_LAYERS = ("fc7", "pool5")


def _relu_indices(config: Sequence[int | str]) -> dict[str, int]:
    """Index in ``features`` of each ReLU by its conventional name (relu1_1 -> 1 ... relu5_3 -> 29)."""
    out, stage, conv, index = {}, 1, 0, 0
    for item in config:
        if item == "M":
            stage, conv, index = stage + 1, 0, index + 1
        else:
            conv += 1
            out[f"relu{stage}_{conv}"] = index + 1
            index += 2
    return out


#: ReLU name -> index of its module in ``VGG16.features``.
VGG16_RELUS = _relu_indices(VGG16_CONFIG)


class VGG16(nn.Module):
    """VGG16 (configuration D) with torchvision's parameter names.

    Args:
        num_classes: outputs of fc8.

    Shape:
        x: (B, 3, H, W) ImageNet-normalised (224 x 224 for the classifier as trained) ->
        logits (B, num_classes); :meth:`fc7`: -> (B, 4096); :meth:`pool5`: -> (B, 512).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # Identity where torchvision has Dropout keeps its indices (classifier.0/3/6) and eval behaviour.
        # skip_init: the default init of 120 M weights would be overwritten at once (below or by a file)
        self.classifier = nn.Sequential(
            skip_init(nn.Linear, 512 * 7 * 7, 4096), nn.ReLU(), nn.Identity(),
            skip_init(nn.Linear, 4096, 4096), nn.ReLU(), nn.Identity(),
            skip_init(nn.Linear, 4096, num_classes),
        )
        for m in self.modules():  # He-normal convs keep an untrained network's activations at unit scale
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def pool5(self, x: Tensor) -> Tensor:
        """Spatial mean of the 512-channel map after the fifth max pool."""
        return self.features(x).mean(dim=(2, 3))

    def fc7(self, x: Tensor) -> Tensor:
        """Activations after the second fully connected layer and its ReLU."""
        return self.classifier[:5](self.avgpool(self.features(x)).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier[5:](self.fc7(x))


class VGG16Extractor(FeatureExtractor):
    """VGG16 features of grayscale images: (B, 1, H, W) in [-1, 1] -> (B, 4096) fc7 or (B, 512) pool5.

    Inside :meth:`forward` images are resized bilinearly to ``resize`` x ``resize`` (224, the
    training size; None keeps the input size, the adaptive pool then fits fc6), repeated to RGB and
    ImageNet-normalised (module docstring).

    Args:
        weights: path of torchvision's ``vgg16-397923af.pth`` (or another VGG16 state dict with
            its key names), or None for an untrained network (tests only; ``weights_sha256`` None).
        sha256: expected SHA-256 of ``weights`` (checked when given).
        layer: ``"fc7"`` (default) or ``"pool5"``.
        resize: input side length for :meth:`forward`, or None (inputs must then be at least 32
            pixels per side).

    Raises:
        CheckpointError: when the file is missing, has the wrong hash, is corrupt or its keys or
            shapes are not VGG16's.
        ConfigError: for an unknown ``layer``.
    """

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None, layer: str = "fc7",
                 resize: int | None = VGG_SIZE) -> None:
        super().__init__()
        if layer not in VGG_LAYERS:
            raise ConfigError(f"vgg16 layer must be one of {VGG_LAYERS}, got {layer!r}")
        self.name = "vgg16"
        self.spatial_dims = 2
        self.layer = layer
        self.feature_dim = 4096 if layer == "fc7" else 512
        self.resize = None if resize is None else int(resize)
        state, digest = load_weights_file(weights, sha256, VGG16_WEIGHT_FILE) if weights is not None else (None, None)
        num_classes = 1000
        if state is not None and isinstance(state.get("classifier.6.weight"), Tensor):
            num_classes = int(state["classifier.6.weight"].shape[0])
        self.net = VGG16(num_classes)
        if state is not None:
            load_checked_state_dict(self.net, state, weights, f"VGG16: {VGG16_WEIGHT_FILE}")
            self.weights_sha256 = digest
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.preprocessing = {
            "range": [-1, 1],
            "channels": "grayscale repeated to 3",
            "resize": [self.resize, self.resize] if self.resize else None,
            "interpolation": "bilinear, align_corners=False, no antialias",
            "normalise": {"to": "[0, 1] then ImageNet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "features": "fc7 (after the second classifier ReLU, no dropout)" if layer == "fc7"
                        else "pool5 (after the fifth max pool), global average",
        }

    def normalise(self, x: Tensor) -> Tensor:
        """(B, 1 or 3, H, W) in [-1, 1] -> ImageNet-normalised (B, 3, H, W)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return ((x + 1) * 0.5 - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """fc7 ``(B, 4096)`` or pool5 ``(B, 512)`` features of ``x: (B, 1, H, W)`` in [-1, 1]."""
        self.check_input(x)
        if self.resize is not None and tuple(x.shape[2:]) != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        if min(x.shape[2:]) < VGG_MIN_SIZE:
            raise ValueError(f"{self.name}: images of {tuple(x.shape[2:])} pixels are too small for five 2 x 2 "
                             f"max pools (at least {VGG_MIN_SIZE} per side); use resize=")
        x = self.normalise(x)
        return self.net.fc7(x) if self.layer == "fc7" else self.net.pool5(x)

    def relu_features(self, x: Tensor, layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1")) -> list[Tensor]:
        """ReLU feature maps for a perceptual loss (DFC-VAE, Hou et al. 2017; paper 002 Sec. 3.2).

        Images are ImageNet-normalised but not resized; gradients flow to ``x`` (freeze the
        extractor's parameters with ``requires_grad_(False)`` when it is a fixed loss network).

        Args:
            x: (B, 1 or 3, H, W) in [-1, 1].
            layers: names ``relu{stage}_{conv}`` (relu1_1, relu1_2, relu2_1 ... relu5_3), any order.

        Returns:
            One map per name, in the order of ``layers``: (B, C_l, H / 2^(stage-1), W / 2^(stage-1)).
        """
        unknown = [name for name in layers if name not in VGG16_RELUS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG16 layers {unknown}; expected names among {list(VGG16_RELUS)}")
        wanted = {VGG16_RELUS[name]: name for name in layers}
        out: dict[str, Tensor] = {}
        h = self.normalise(x)
        for index, module in enumerate(self.net.features[: max(wanted) + 1]):
            h = module(h)
            if index in wanted:
                out[wanted[index]] = h
        return [out[name] for name in layers]


def load_vgg16(weights: str | Path, sha256: str | None = None, **kwargs: Any) -> VGG16Extractor:
    """VGG16 from a local weight file, e.g. as the fixed network of a perceptual loss
    (:meth:`VGG16Extractor.relu_features`).

    Args:
        weights: torchvision's ``vgg16-397923af.pth`` or a state dict with its key names.
        sha256: expected SHA-256 of the file (checked when given).
        **kwargs: ``layer`` and ``resize`` of :class:`VGG16Extractor`.

    Raises:
        CheckpointError: for a missing, mismatching or corrupt file.
    """
    return VGG16Extractor(weights=weights, sha256=sha256, **kwargs)


@EXTRACTORS.register("vgg16", help="VGG16 (Simonyan & Zisserman 2015) fc7 4096-d or pool5 512-d, 2D; "
                                   "weights=vgg16-397923af.pth")
def _vgg16_factory(weights: str | Path | None = None, *, _random_init: bool = False, **kwargs: Any) -> VGG16Extractor:
    """Registry entry: weights are required unless ``_random_init=True`` (tests, benchmarks)."""
    if weights is None and not _random_init:
        raise CheckpointError(f"vgg16 needs pretrained weights: pass weights=PATH to a local copy of "
                              f"{VGG16_WEIGHT_FILE} (nothing is downloaded at run time)")
    return VGG16Extractor(weights=weights, **kwargs)
