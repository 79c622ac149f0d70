"""MedicalNet 3D ResNet feature extractors (Chen, Ma and Zheng 2019, "Med3D: Transfer Learning for
3D Medical Image Analysis", arXiv:1904.00625).

The encoder of MedicalNet's segmentation network, pretrained on 23 medical datasets, with global
average pooling after ``layer4``: 512-d features for ResNet-10/18/34 and 2048-d for ResNet-50 (the
feature space of paper 000 and paper 001).  The architecture is MONAI's
:class:`monai.networks.nets.ResNet` with MedicalNet's settings: a 7^3 stride-2 stem, shortcut type
"B" without downsample bias for ResNet-10/50 and "A" for ResNet-18/34
(:func:`monai.networks.nets.resnet.get_medicalnet_pretrained_resnet_args`), and, as in
MedicalNet's ``models/resnet.py``, ``layer3``/``layer4`` with stride 1 and dilation 2/4 instead
of stride 2.

Weights come only from a local file (nothing downloads at run time): the official release at
https://github.com/Tencent/MedicalNet (``resnet_10_23dataset.pth`` ... ``resnet_50_23dataset.pth``),
a dict whose ``state_dict`` keys start with ``module.``; the segmentation head ``conv_seg.*`` is
ignored.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNet, get_medicalnet_pretrained_resnet_args
from torch import Tensor, nn

from synthmed.errors import CheckpointError
from synthmed.features.base import EXTRACTORS, FeatureExtractor
from synthmed.io_utils import sha256_file

#: depth -> (block type, blocks per layer), as in MONAI's resnet10 ... resnet50 and MedicalNet.
MEDICALNET_DEPTHS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}
MEDICALNET_URL = "https://github.com/Tencent/MedicalNet"
_IGNORED_PREFIXES = ("conv_seg.", "fc.")


def medicalnet_backbone(depth: int) -> ResNet:
    """The MedicalNet encoder for ``depth`` (10, 18, 34 or 50), randomly initialised.

    Returns:
        A MONAI ResNet without classifier: (B, 1, D, H, W) -> (B, 512 or 2048).
    """
    if depth not in MEDICALNET_DEPTHS:
        raise ValueError(f"MedicalNet depth must be one of {sorted(MEDICALNET_DEPTHS)}, got {depth}")
    block, layers = MEDICALNET_DEPTHS[depth]
    bias_downsample, shortcut_type = get_medicalnet_pretrained_resnet_args(depth)
    net = ResNet(block, layers, [64, 128, 256, 512], spatial_dims=3, n_input_channels=1,
                 conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut_type,
                 bias_downsample=bias_downsample, feed_forward=False)
    _dilate_like_medicalnet(net)
    return net


def _dilate_like_medicalnet(net: ResNet) -> None:
    """Give layer3/layer4 stride 1 and dilation 2/4, as MedicalNet's ``_make_layer`` does.

    MONAI's blocks put the stride on the same 3^3 conv as MedicalNet's (``conv1`` in basic blocks,
    ``conv2`` in bottlenecks), so only stride, dilation and padding change; no weight changes shape.
    """
    for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
        for block in layer:
            for module in block.modules():
                if isinstance(module, nn.Conv3d) and module.kernel_size == (3, 3, 3):
                    module.stride, module.dilation, module.padding = (1,) * 3, (dilation,) * 3, (dilation,) * 3
                elif isinstance(module, nn.Conv3d) and module.kernel_size == (1, 1, 1):
                    module.stride = (1,) * 3
            if isinstance(block.downsample, partial):  # shortcut "A": pooled identity + zero channels
                block.downsample = partial(block.downsample.func, **{**block.downsample.keywords, "stride": 1})


def zscore_foreground(x: Tensor, eps: float = 1e-6) -> Tensor:
    """MedicalNet's per-volume intensity normalisation (``itensity_normalize_one_volume``).

    Voxels above the volume's minimum (the background of a prepared image, -1) are z-scored with
    their own mean and standard deviation; background voxels are set to 0.  MedicalNet fills the
    background with N(0, 1) noise instead; 0 (its expectation) keeps features deterministic.  A
    volume without foreground is z-scored over all voxels.

    Args:
        x: (B, 1, *spatial).

    Returns:
        (B, 1, *spatial) normalised volumes.
    """
    flat = x.reshape(x.shape[0], -1)
    fg = flat > flat.amin(dim=1, keepdim=True) + eps
    fg = torch.where(fg.any(dim=1, keepdim=True), fg, torch.ones_like(fg))
    w = fg.to(flat.dtype)
    count = w.sum(dim=1, keepdim=True)
    mean = (flat * w).sum(dim=1, keepdim=True) / count
    std = (((flat - mean) ** 2 * w).sum(dim=1, keepdim=True) / count).sqrt().clamp_min(eps)
    return torch.where(fg, (flat - mean) / std, torch.zeros_like(flat)).reshape(x.shape)


def load_medicalnet_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, Tensor]:
    """Read an official MedicalNet checkpoint; return the encoder's state dict.

    Args:
        path: the ``.pth`` file (``{"state_dict": {"module.conv1.weight": ...}}``; a bare state
            dict is accepted too).
        sha256: expected SHA-256 of the file, checked when given.

    Raises:
        CheckpointError: naming the file when it is missing, unreadable or has the wrong hash.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: MedicalNet weight file not found; download it from {MEDICALNET_URL}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise CheckpointError(f"{path}: SHA-256 {actual} does not match the expected {sha256}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-tensor pickles
        raise CheckpointError(f"{path}: cannot read MedicalNet checkpoint ({e})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict with 'state_dict' (MedicalNet layout)")
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if not key.startswith(_IGNORED_PREFIXES):
            out[key] = value
    return out


class MedicalNetExtractor(FeatureExtractor):
    """MedicalNet ResNet encoder + global average pooling: (B, 1, D, H, W) -> (B, 512 | 2048).

    Inputs (prepared volumes in [-1, 1]) are optionally resized (trilinear) and z-scored per
    volume over non-background voxels (:func:`zscore_foreground`) inside :meth:`forward`.

    Args:
        depth: 10, 18, 34 or 50.
        weights: path of the official MedicalNet checkpoint (required).
        sha256: expected SHA-256 of ``weights`` (checked when given).
        resize: resize inputs to this (D, H, W) first, or None to keep their size.
        _random_init: build without weights (tests and benchmarking only; features are
            meaningless and ``weights_sha256`` is None).

    Raises:
        CheckpointError: when ``weights`` is missing, does not exist, has the wrong hash or its
            keys/shapes do not fit the architecture.
    """

    def __init__(self, depth: int, weights: str | Path | None = None, sha256: str | None = None,
                 resize: tuple[int, int, int] | list[int] | None = None, *, _random_init: bool = False) -> None:
        super().__init__()
        self.name = f"medicalnet-resnet{depth}"
        if weights is None and not _random_init:
            raise CheckpointError(
                f"{self.name} needs pretrained weights: download resnet_{depth}_23dataset.pth from the "
                f"MedicalNet release by Tencent ({MEDICALNET_URL}) and pass weights=PATH (nothing is "
                "downloaded at run time); or use the in-domain extractor 'indomain-ae'")
        self.spatial_dims = 3
        self.depth = depth
        self.backbone = medicalnet_backbone(depth)
        self.feature_dim = 2048 if MEDICALNET_DEPTHS[depth][0] == "bottleneck" else 512
        self.resize = None if resize is None else tuple(int(s) for s in resize)
        if weights is not None:
            self._load(Path(weights), sha256)
        self.preprocessing = {
            "range": [-1, 1],
            "resize": list(self.resize) if self.resize else None,
            "normalise": "zscore-per-volume-foreground",
            "background": "voxels at the volume minimum set to 0",
            "pooling": "global-average-after-layer4",
        }

    def _load(self, path: Path, sha256: str | None) -> None:
        state = load_medicalnet_state_dict(path, sha256)
        try:
            self.backbone.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: does not fit {self.name} ({str(e).splitlines()[0]}; "
                                  f"{_key_mismatch(self.backbone, state)})") from None
        self.weights_sha256 = sha256_file(path)

    def forward(self, x: Tensor) -> Tensor:
        """Features of volumes ``x: (B, 1, D, H, W)`` in [-1, 1] -> ``(B, feature_dim)``."""
        self.check_input(x)
        if self.resize is not None and tuple(x.shape[2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="trilinear", align_corners=False)
        return self.backbone(zscore_foreground(x))


def _key_mismatch(model: nn.Module, state: dict[str, Any]) -> str:
    expected, given = set(model.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    return f"missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}; " \
           f"unexpected keys: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"


def _register(depth: int) -> None:
    def factory(weights: str | Path | None = None, **kwargs: Any) -> MedicalNetExtractor:
        return MedicalNetExtractor(depth, weights=weights, **kwargs)

    dim = 2048 if depth == 50 else 512
    EXTRACTORS.register(f"medicalnet-resnet{depth}",
                        help=f"MedicalNet 3D ResNet-{depth} (Chen et al. 2019), {dim}-d; weights=resnet_"
                             f"{depth}_23dataset.pth")(factory)


for _depth in MEDICALNET_DEPTHS:
    _register(_depth)
