"""Downstream diagnosis classifiers, registered in :data:`synthmed.registry.CLASSIFIERS`.

Every network is dimension-generic (``spatial_dims`` 2 or 3) and is built as
``cls(spatial_dims, shape, out_channels, params)``; it maps images ``(B, 1, *shape)`` in [-1, 1] to
logits ``(B, out_channels)`` (one logit for two classes, as paper 000's single sigmoid output; one
per class otherwise).  The sigmoid/softmax is applied by the caller (``predict_scores``), so the
loss can use the numerically stable ``*_with_logits`` forms; it has no parameters, so parameter
counts are those of the papers' tables.

- ``diagnosis-cnn``: paper 000, Fig. S1 (VGG-like; 7,361,057 parameters at 64^3).
- ``hagan-cnn``: paper 001, supplementary Table VIII (the 3D CNN of its augmentation experiment).
- ``densenet121``: paper 004 (MONAI's DenseNet-121; randomly initialised, or torchvision-format
  ImageNet weights from a local file).
- ``svm``: paper 003's "GAN-train" SVM on extracted features (see :mod:`synthmed.utility.svm`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.errors import ConfigError
from synthmed.nn.factories import batch_norm, check_spatial_dims, conv
from synthmed.registry import CLASSIFIERS


def _pool(spatial_dims: int, kind: str, size: int = 2) -> nn.Module:
    cls = {"max": {2: nn.MaxPool2d, 3: nn.MaxPool3d}, "avg": {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}}
    return cls[kind][spatial_dims](size if kind == "max" else 1)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as torchinfo's "Total params" in the papers' tables."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _check_shape(name: str, spatial_dims: int, shape: Sequence[int]) -> tuple[int, ...]:
    check_spatial_dims(spatial_dims)
    shape = tuple(int(s) for s in shape)
    if spatial_dims not in (2, 3) or len(shape) != spatial_dims:
        raise ConfigError(f"classifier {name!r}: needs 2D or 3D images with one size per axis, got "
                          f"spatial_dims={spatial_dims}, shape={shape}")
    return shape


# ---------------------------------------------------------------------------------------------
# paper 000, Fig. S1


@dataclass
class DiagnosisCNNParams:
    """Paper 000 Fig. S1: three blocks conv(3, no padding) -> ReLU -> BatchNorm -> MaxPool(2) with
    16, 64, 128 channels, then Linear 256 -> Dropout -> ReLU -> Linear 128 -> Dropout -> ReLU ->
    Linear.  The dropout rate is not given in the paper; 0.5 (PyTorch's default) is used."""

    #: output channels of the three convolution blocks (paper 000 Fig. S1: 16, 64, 128)
    channels: list[int] = field(default_factory=lambda: [16, 64, 128])
    #: widths of the hidden dense layers (paper 000 Fig. S1: 256, 128)
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    #: dropout rate after each hidden dense layer (not given in paper 000; PyTorch's default 0.5)
    dropout: float = 0.5


@CLASSIFIERS.register("diagnosis-cnn", help="Paper 000 Fig. S1 VGG-like CNN (7,361,057 parameters at 64^3); 2D/3D")
class DiagnosisCNN(nn.Module):
    """The VGG-like diagnosis classifier of paper 000 (Fig. S1), for 2D or 3D images.

    Args:
        spatial_dims: 2 or 3.
        shape: image size per axis (the flattened feature length follows from it: 128 * 6^3 =
            27,648 at 64^3, as in Fig. S1).
        out_channels: logits per image (1 for two classes).
        params: channels, hidden sizes and dropout (:class:`DiagnosisCNNParams`).

    Shape:
        x: (B, 1, *shape) -> (B, out_channels) logits.
    """

    Params = DiagnosisCNNParams

    def __init__(self, spatial_dims: int, shape: Sequence[int], out_channels: int = 1,
                 params: DiagnosisCNNParams | None = None) -> None:
        super().__init__()
        p = params or DiagnosisCNNParams()
        shape = _check_shape("diagnosis-cnn", spatial_dims, shape)
        if not 0 <= p.dropout < 1:
            raise ConfigError(f"config key 'classifier.dropout': expected a number in [0, 1), got {p.dropout}")
        layers: list[nn.Module] = []
        c_in, size = 1, list(shape)
        for c in p.channels:
            layers += [conv(spatial_dims, c_in, c, 3), nn.ReLU(), batch_norm(spatial_dims, c), _pool(spatial_dims, "max")]
            size = [(s - 2) // 2 for s in size]
            c_in = c
        if min(size) < 1:
            raise ConfigError(f"classifier 'diagnosis-cnn': image size {shape} is too small for {len(p.channels)} "
                              "blocks of conv(3) + max-pool(2)")
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        n_in = c_in * math.prod(size)
        for h in p.hidden:
            head += [nn.Linear(n_in, h), nn.Dropout(p.dropout), nn.ReLU()]
            n_in = h
        head.append(nn.Linear(n_in, out_channels))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# paper 001, supplementary Table VIII


@dataclass
class HAGANCNNParams:
    """Paper 001 Table VIII: 13 units conv(3, padding 1) -> BatchNorm -> ELU in five stages of
    widths 8, 16, 32, 64, 128; each stage has ``convs_per_stage`` stride-1 convolutions (1, 2, 2,
    2, 1) followed by one stride-2 convolution; then global average pooling and one dense layer.
    Table VIII does not say whether the convolutions carry a bias; PyTorch's default (bias) is
    used."""

    #: widths of the five stages (paper 001 Table VIII: 8, 16, 32, 64, 128)
    channels: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    #: stride-1 convolutions per stage before its stride-2 one (paper 001 Table VIII: 1, 2, 2, 2, 1)
    convs_per_stage: list[int] = field(default_factory=lambda: [1, 2, 2, 2, 1])
    #: convolutions with a bias (not stated in paper 001 Table VIII; PyTorch's default)
    bias: bool = True


@CLASSIFIERS.register("hagan-cnn", help="Paper 001 Table VIII 3D CNN (13 conv + BN + ELU, global pool, dense); 2D/3D")
class HAGANClassifierCNN(nn.Module):
    """The supervised 3D CNN of paper 001 (HA-GAN, supplementary Table VIII), for 2D or 3D.

    Args:
        spatial_dims: 2 or 3.
        shape: image size per axis (any size: the network ends in global average pooling).
        out_channels: logits per image (paper 001: 5 GOLD classes).
        params: :class:`HAGANCNNParams`.

    Shape:
        x: (B, 1, *shape) -> (B, out_channels) logits.
    """

    Params = HAGANCNNParams

    def __init__(self, spatial_dims: int, shape: Sequence[int], out_channels: int = 1,
                 params: HAGANCNNParams | None = None) -> None:
        super().__init__()
        p = params or HAGANCNNParams()
        _check_shape("hagan-cnn", spatial_dims, shape)
        if not p.channels or len(p.convs_per_stage) != len(p.channels) or min(p.convs_per_stage) < 1:
            raise ConfigError("config keys 'classifier.channels'/'classifier.convs_per_stage': expected equally "
                              f"long lists with at least one convolution per stage, got {p.channels} and "
                              f"{p.convs_per_stage}")
        layers: list[nn.Module] = []
        c_in = 1
        for c, n_convs in zip(p.channels, p.convs_per_stage, strict=True):
            for stride in [1] * n_convs + [2]:
                layers += [conv(spatial_dims, c_in, c, 3, stride=stride, padding=1, bias=p.bias),
                           batch_norm(spatial_dims, c), nn.ELU()]
                c_in = c
        self.features = nn.Sequential(*layers, _pool(spatial_dims, "avg"), nn.Flatten())
        self.head = nn.Linear(c_in, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# paper 004: DenseNet-121

#: ImageNet statistics of torchvision's weights, used when ImageNet weights are loaded.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DENSE_LAYER_KEY = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.((?:norm|relu|conv)[12]\..+)$")


@dataclass
class DenseNet121Params:
    """Paper 004: DenseNet-121 with a randomly initialised final layer, inputs resized to 224.

    Attributes:
        weights: torchvision-format ``densenet121`` ImageNet state dict on local disk (2D only;
            nothing is downloaded); empty for random initialisation.
        sha256: expected SHA-256 of ``weights`` (checked when given).
        input_size: resize inputs to this edge (paper 004: 224); 0 keeps the native size (which
            must be at least 32).
    """

    weights: str = ""
    sha256: str = ""
    input_size: int = 0


@CLASSIFIERS.register("densenet121", help="Paper 004 DenseNet-121 (MONAI), random init or local torchvision "
                                          "ImageNet weights (2D)")
class DenseNet121Classifier(nn.Module):
    """DenseNet-121 (Huang et al. 2017) built with MONAI, as paper 004's predictive model.

    With ImageNet weights the grey image is mapped to [0, 1], repeated to three channels and
    normalised with ImageNet's mean and standard deviation (the input the weights were trained
    on); the classification layer is always new and randomly initialised (paper 004, S.5).

    Args:
        spatial_dims: 2 (3 with random initialisation only).
        shape: image size per axis.
        out_channels: logits per image.
        params: :class:`DenseNet121Params`.

    Shape:
        x: (B, 1, *shape) -> (B, out_channels) logits.
    """

    Params = DenseNet121Params

    def __init__(self, spatial_dims: int, shape: Sequence[int], out_channels: int = 1,
                 params: DenseNet121Params | None = None) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet121

        p = params or DenseNet121Params()
        shape = _check_shape("densenet121", spatial_dims, shape)
        self.size = [p.input_size] * spatial_dims if p.input_size else list(shape)
        if min(self.size) < 32:
            raise ConfigError(f"classifier 'densenet121': input size {tuple(self.size)} is below 32 (DenseNet "
                              "downsamples 32-fold); set classifier.input_size (paper 004: 224)")
        self.pretrained = bool(p.weights)
        if self.pretrained and spatial_dims != 2:
            raise ConfigError("classifier 'densenet121': ImageNet weights are 2D; use random initialisation in 3D")
        self.net = DenseNet121(spatial_dims=spatial_dims, in_channels=3 if self.pretrained else 1,
                               out_channels=out_channels)
        self.weights_sha256: str | None = None
        if self.pretrained:
            self.weights_sha256 = load_torchvision_densenet121(self.net, p.weights, p.sha256 or None)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if list(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear" if x.ndim == 4 else "trilinear", align_corners=False)
        if self.pretrained:
            x = ((x + 1) / 2).repeat(1, 3, 1, 1)
            x = (x - self.mean) / self.std
        return self.net(x)


def load_torchvision_densenet121(net: nn.Module, path: str | Path, sha256: str | None = None) -> str:
    """Load torchvision-format ``densenet121`` ImageNet weights into MONAI's ``DenseNet121``.

    torchvision names dense-layer modules ``denselayerN.norm1`` where MONAI has
    ``denselayerN.layers.norm1``; the ImageNet ``classifier`` is dropped (MONAI's ``class_layers.out``
    stays randomly initialised).  Every other tensor must be present with the right shape.

    Returns:
        The SHA-256 of the weight file.

    Raises:
        CheckpointError: naming the file when it is missing, has another hash, or does not fit.
    """
    from synthmed.features.inception import load_checked_state_dict, load_weights_file

    what = "torchvision's densenet121 ImageNet state dict (densenet121-a639ec97.pth)"
    state, digest = load_weights_file(path, sha256, what)
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        m = _DENSE_LAYER_KEY.match(key)
        renamed[f"{m.group(1)}.layers.{m.group(2)}" if m else key] = value
    own = net.state_dict()
    for key in ("class_layers.out.weight", "class_layers.out.bias"):
        renamed[key] = own[key]
    load_checked_state_dict(net, renamed, path, what)
    return digest


def classifier_class(name: str) -> Any:
    """The registered classifier called ``name`` (ConfigError listing the choices)."""
    import synthmed.utility.svm  # noqa: F401  (registers "svm")

    try:
        return CLASSIFIERS.get(name)
    except ConfigError as e:
        raise ConfigError(f"config key 'classifier.name': {e}") from None


def is_network(name: str) -> bool:
    """Whether classifier ``name`` is a torch network trained by gradient descent (not the SVM)."""
    cls = classifier_class(name)
    return isinstance(cls, type) and issubclass(cls, nn.Module)


def build_classifier(name: str, spatial_dims: int, shape: Sequence[int], n_classes: int = 2,
                     params: Any = None) -> nn.Module:
    """Build a registered network classifier: one logit for two classes, else one per class."""
    cls = classifier_class(name)
    if not is_network(name):
        raise ConfigError(f"classifier {name!r} is not a network")
    return cls(spatial_dims, shape, 1 if n_classes == 2 else n_classes, params)

