"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision",
CVPR; arXiv:1512.00567) as a 2D feature extractor and classifier.

The network of the paper's Table 1 / Figs. 5-7, written here from the architecture: a 299 x 299
stem of 3 x 3 convolutions, three 35 x 35 "A" modules (Fig. 5), the 35 -> 17 grid reduction
(Fig. 10), four 17 x 17 modules with factorised 1 x 7 / 7 x 1 convolutions (Fig. 6), the 17 -> 8
reduction, two 8 x 8 modules with expanded 1 x 3 / 3 x 1 filter banks (Fig. 7), global average
pooling ("pool3", 2048-d) and a linear classifier; an auxiliary classifier on the 17 x 17 grid
(Sec. 4) is kept for its weights only.  Every convolution is followed by BatchNorm (eps 0.001) and
ReLU.

Module and parameter names are torchvision's (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.conv.weight`` ... ``fc.weight``, ``AuxLogits.*``), so two public weight files
load from local disk (nothing downloads at run time):

* torchvision's ImageNet weights ``inception_v3_google-*.pth`` (1000 classes, with
  ``AuxLogits``): the ``"torchvision"`` variant;
* pytorch-fid's port of the TensorFlow graph used by TTUR for FID (Heusel et al. 2017),
  ``pt_inception-2015-12-05-6726825d.pth`` (1008 classes, no ``AuxLogits``): the ``"fid"``
  variant, which differs in its pooling: the average pools of the Mixed_5*, Mixed_6b-e and
  Mixed_7b branches exclude the zero padding (``count_include_pad=False``) and Mixed_7c's pool
  branch is a 3 x 3 max pool.

Both weight files expect RGB inputs scaled to [-1, 1] at 299 x 299 (torchvision's
``transform_input`` maps ImageNet-normalised inputs back to that range; pytorch-fid scales [0, 1]
images by 2x - 1), so a prepared grayscale image in [-1, 1] only needs repeating to three channels
and a bilinear resize.  The Inception score (Salimans et al. 2016) uses :meth:`InceptionV3Extractor.logits`.

:func:`load_weights_file` and :func:`load_checked_state_dict` (hash check, key and shape check
with one readable error) are shared with :mod:`synthmed.features.vgg`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthmed.errors import CheckpointError, ConfigError
from synthmed.features.base import EXTRACTORS, FeatureExtractor
from synthmed.io_utils import sha256_file

#: The weight files this module can read, by variant.
INCEPTION_WEIGHT_FILES = {
    "torchvision": "torchvision's inception_v3_google-*.pth (1000 classes)",
    "fid": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (1008 classes, the TTUR/FID graph)",
}
INCEPTION_VARIANTS = ("auto", "torchvision", "fid")
#: Input size of Inception-v3 (Szegedy et al. 2016, Table 1).
INCEPTION_SIZE = 299
_FID_CLASSES = 1008


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001) and ReLU: the unit every module is made of.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size, stride, padding: as for :class:`torch.nn.Conv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_branch(x: Tensor, pool: str) -> Tensor:
    """The 3 x 3, stride-1 pooling of a module's pool branch (spatial size kept).

    ``"avg"``: average counting the zero padding (torchvision); ``"avg-exclude-pad"``: average over
    real pixels only and ``"max"``: max pool (the FID graph, see the module docstring).
    """
    if pool == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=pool == "avg")


class InceptionA(nn.Module):
    """35 x 35 module (Fig. 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 -> 224 + ``pool_features``."""

    def __init__(self, in_channels: int, pool_features: int, pool: str = "avg") -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_pool_branch(x, self.pool))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction (Fig. 10): stride-2 3x3 | 1x1-3x3-3x3/2 | max pool -> 480 + in."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """17 x 17 module with factorised 7x7 convolutions (Fig. 6) -> 768 channels.

    Args:
        in_channels: input channels (768).
        channels_7x7: width of the factorised 7x7 branches (128, 160 or 192).
        pool: pool-branch pooling (:func:`_pool_branch`).
    """

    def __init__(self, in_channels: int, channels_7x7: int, pool: str = "avg") -> None:
        super().__init__()
        c = channels_7x7
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7_2 = BasicConv2d(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7dbl_2 = BasicConv2d(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_pool_branch(x, self.pool))
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool -> 512 + in."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8 x 8 module with expanded filter banks (Fig. 7): 320 + 768 + 768 + 192 = 2048 channels."""

    def __init__(self, in_channels: int, pool: str = "avg") -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], dim=1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], dim=1)
        bp = self.branch_pool(_pool_branch(x, self.pool))
        return torch.cat([b1, b3, bd, bp], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17 x 17 grid (Sec. 4): 5x5/3 avg pool, 1x1, 5x5, linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------


class InceptionV3(nn.Module):
    """Inception-v3 with torchvision's parameter names.

    Args:
        num_classes: classifier outputs (1000 for torchvision's weights, 1008 for the FID graph).
        aux_logits: keep the auxiliary classifier ``AuxLogits`` (its weights only; it is never
            evaluated, as in eval mode).
        variant: ``"torchvision"`` or ``"fid"`` (pooling of the pool branches, module docstring).

    Shape:
        x: (B, 3, 299, 299) scaled to [-1, 1] -> logits (B, num_classes); :meth:`pool3`: -> (B, 2048).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, variant: str = "torchvision") -> None:
        super().__init__()
        if variant not in ("torchvision", "fid"):
            raise ConfigError(f"Inception-v3 variant must be 'torchvision' or 'fid', got {variant!r}")
        self.variant = variant
        fid = variant == "fid"
        avg = "avg-exclude-pad" if fid else "avg"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32, avg)
        self.Mixed_5c = InceptionA(256, 64, avg)
        self.Mixed_5d = InceptionA(288, 64, avg)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, avg)
        self.Mixed_6c = InceptionC(768, 160, avg)
        self.Mixed_6d = InceptionC(768, 160, avg)
        self.Mixed_6e = InceptionC(768, 192, avg)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, avg)
        self.Mixed_7c = InceptionE(2048, "max" if fid else "avg")
        self.fc = nn.Linear(2048, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions so an untrained network keeps its activations at unit scale
        (tests); pretrained weights replace all of it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def pool3(self, x: Tensor) -> Tensor:
        """The 2048-d "pool3" features: the last module's output, globally average pooled."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (dropout before ``fc`` is omitted: eval-mode behaviour)."""
        return self.fc(self.pool3(x))


# ----------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------


def load_weights_file(path: str | Path, sha256: str | None, what: str) -> tuple[dict[str, Tensor], str]:
    """Read a local PyTorch state dict and its SHA-256, checking the hash when one is expected.

    A bare state dict, ``{"state_dict": {...}}`` and ``module.``-prefixed keys are accepted.

    Args:
        path: the weight file.
        sha256: expected SHA-256 of the file, or None.
        what: what the file should be, for messages (e.g. "torchvision's vgg16-397923af.pth").

    Returns:
        ``(state_dict, sha256 of the file)``.

    Raises:
        CheckpointError: naming ``path`` when it is missing, has the wrong hash, cannot be read
            or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found; expected {what} on local disk "
                              "(nothing is downloaded at run time)")
    actual = sha256_file(path)
    if sha256 is not None:
        if actual.lower() != sha256.lower().strip():
            raise CheckpointError(f"{path}: SHA-256 {actual} does not match the expected {sha256} ({what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-tensor pickles
        raise CheckpointError(f"{path}: cannot read it as a PyTorch state dict ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); expected {what}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; expected {what}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}, actual


def load_checked_state_dict(model: nn.Module, state: dict[str, Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state)`` with one readable error for wrong keys or shapes.

    BatchNorm ``num_batches_tracked`` counters absent from older files are not required.

    Raises:
        CheckpointError: naming ``path``, the missing/unexpected keys or mismatching shapes, and
            ``what`` was expected.
    """
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: keys do not fit; expected {what}. missing keys: {_few(missing)}; "
                              f"unexpected keys: {_few(unexpected)}")
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
              if tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        raise CheckpointError(f"{path}: tensor shapes do not fit; expected {what}: {_few(shapes)}")
    model.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 5) -> str:
    return "[" + ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "") + "]"


# ----------------------------------------------------------------------------------------------
# The extractor
# ----------------------------------------------------------------------------------------------


class InceptionV3Extractor(FeatureExtractor):
    """Inception-v3 pool3 features of grayscale images: (B, 1, H, W) in [-1, 1] -> (B, 2048).

    Inside :meth:`forward` (and :meth:`logits`) each image is repeated to three channels and
    resized bilinearly (``align_corners=False``, as pytorch-fid) to 299 x 299; no further
    normalisation is needed because both weight files expect [-1, 1] (module docstring).

    Args:
        weights: path of a local weight file (torchvision's ``inception_v3_google-*.pth`` or
            pytorch-fid's ``pt_inception-2015-12-05-*.pth``), or None for an untrained network
            (tests only: features are meaningless and ``weights_sha256`` is None).
        sha256: expected SHA-256 of ``weights`` (checked when given).
        variant: ``"auto"`` (from the file's classifier size: 1008 classes -> ``"fid"``, else
            ``"torchvision"``; ``"torchvision"`` without weights), ``"torchvision"`` or ``"fid"``.

    Raises:
        CheckpointError: when the file is missing, has the wrong hash, is corrupt or its keys or
            shapes are not Inception-v3's.
        ConfigError: for an unknown ``variant``.
    """

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None, variant: str = "auto") -> None:
        super().__init__()
        if variant not in INCEPTION_VARIANTS:
            raise ConfigError(f"inception-v3 variant must be one of {INCEPTION_VARIANTS}, got {variant!r}")
        self.name = "inception-v3"
        self.spatial_dims = 2
        self.feature_dim = 2048
        what = " or ".join(INCEPTION_WEIGHT_FILES.values())
        state, digest = load_weights_file(weights, sha256, what) if weights is not None else (None, None)
        num_classes, aux = 1000, False
        if state is not None:
            fc = state.get("fc.weight")
            if fc is None or fc.ndim != 2:
                raise CheckpointError(f"{weights}: no 2D 'fc.weight'; not an Inception-v3 state dict "
                                      f"(expected {what})")
            num_classes, aux = int(fc.shape[0]), any(k.startswith("AuxLogits.") for k in state)
        if variant == "auto":
            variant = "fid" if num_classes == _FID_CLASSES else "torchvision"
        self.variant = variant
        self.num_classes = num_classes
        self.net = InceptionV3(num_classes, aux_logits=aux, variant=variant)
        if state is not None:
            load_checked_state_dict(self.net, state, weights, f"Inception-v3 ({variant} variant): {what}")
            self.weights_sha256 = digest
        self.preprocessing = {
            "range": [-1, 1],
            "channels": "grayscale repeated to 3",
            "resize": [INCEPTION_SIZE, INCEPTION_SIZE],
            "interpolation": "bilinear, align_corners=False, no antialias",
            "normalise": "none: the weights expect RGB in [-1, 1]",
            "variant": variant,
            "num_classes": num_classes,
            "features": "pool3 (global average pool after Mixed_7c)",
        }

    def prepare(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) in [-1, 1] -> the network's input (B, 3, 299, 299)."""
        self.check_input(x)
        if tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1)

    def forward(self, x: Tensor) -> Tensor:
        """pool3 features ``(B, 2048)`` of images ``x: (B, 1, H, W)`` in [-1, 1]."""
        return self.net.pool3(self.prepare(x))

    def logits(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of images ``x: (B, 1, H, W)`` in [-1, 1]."""
        return self.net(self.prepare(x))

    def probabilities(self, x: Tensor) -> Tensor:
        """Softmax class probabilities ``(B, num_classes)``, p(y|x) of the Inception score."""
        return torch.softmax(self.logits(x), dim=1)


@EXTRACTORS.register("inception-v3", help="Inception-v3 pool3 (Szegedy et al. 2016), 2048-d, 2D; "
                                          "weights=inception_v3_google-*.pth or pt_inception-2015-12-05-*.pth")
def _inception_factory(weights: str | Path | None = None, *, _random_init: bool = False,
                       **kwargs: Any) -> InceptionV3Extractor:
    """Registry entry: weights are required unless ``_random_init=True`` (tests, benchmarks)."""
    if weights is None and not _random_init:
        raise CheckpointError(
            "inception-v3 needs pretrained weights: pass weights=PATH to a local copy of "
            f"{INCEPTION_WEIGHT_FILES['torchvision']} or {INCEPTION_WEIGHT_FILES['fid']} "
            "(nothing is downloaded at run time)")
    return InceptionV3Extractor(weights=weights, **kwargs)
