"""VGG16 (configuration D): architecture, weight files, fc7/pool5 features, ReLU maps, planes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthmed.errors import CheckpointError, ConfigError
from synthmed.features import EXTRACTORS, VGG16, VGG16Extractor, build_extractor, extract_features, load_vgg16
from synthmed.io_utils import sha256_file

#: torchvision's published count for vgg16 (1000 classes).
TORCHVISION_PARAMS = 138_357_544
#: torchvision's indices of the 13 convolutions in ``features`` and the 3 linears in ``classifier``.
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
LINEAR_INDICES = [0, 3, 6]


def _compact_state(net: VGG16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A VGG16 state dict whose big tensors are stride-0 expansions of small random ones.

    ``torch.save`` writes only the small storages, so the file is a few MB instead of 528 MB;
    every tensor still has the full VGG16 shape.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in net.state_dict().items():
        if value.ndim == 4:  # conv (out, in, 3, 3): per-(out, in) constant kernels, scaled like He init
            small = torch.randn(*value.shape[:2], 1, 1, generator=g) * (2 / (9 * value.shape[1])) ** 0.5
            out[key] = small.expand(value.shape)
        elif value.ndim == 2:  # linear (out, in): one weight per row
            out[key] = (torch.randn(value.shape[0], 1, generator=g) * value.shape[1] ** -0.5).expand(value.shape)
        else:
            out[key] = torch.randn(value.shape, generator=g) * 0.1
    return out


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VGG16]:
    net = VGG16().eval()
    state = _compact_state(net)
    net.load_state_dict(state)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-test.pth"
    torch.save(state, path)
    assert path.stat().st_size < 20e6
    return path, net


def test_parameter_count_and_torchvision_names() -> None:
    net = VGG16()
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS
    expected = [f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in LINEAR_INDICES for p in ("weight", "bias")]
    assert list(net.state_dict()) == expected
    assert net.classifier[0].in_features == 512 * 7 * 7 and net.classifier[6].out_features == 1000


def test_roundtrip_hash_fc7_and_pool5(vgg_file: tuple[Path, VGG16]) -> None:
    path, net = vgg_file
    digest = sha256_file(path)
    ext = build_extractor("vgg16", weights=str(path), sha256=digest, resize=None)
    assert isinstance(ext, VGG16Extractor) and ext.weights_sha256 == digest and ext.feature_dim == 4096
    x = torch.rand(2, 1, 32, 40) * 2 - 1
    rgb = ((x.repeat(1, 3, 1, 1) + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        conv5 = net.features(rgb)
        h = F.adaptive_avg_pool2d(conv5, (7, 7)).flatten(1)
        ref_fc7 = F.relu(net.classifier[3](F.relu(net.classifier[0](h))))
        torch.testing.assert_close(ext(x), ref_fc7)
        pool5 = VGG16Extractor(weights=path, layer="pool5", resize=None)
        assert pool5.feature_dim == 512
        torch.testing.assert_close(pool5(x), conv5.mean(dim=(2, 3)))
    desc = ext.describe()
    assert desc["weights_sha256"] == digest and desc["preprocessing"]["normalise"]["mean"] == [0.485, 0.456, 0.406]
    json.dumps(desc)


class _Stop(Exception):
    pass


def test_default_resize_to_224() -> None:
    ext = VGG16Extractor()
    seen: list[tuple[int, ...]] = []

    def record_and_stop(module: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
        seen.append(tuple(inputs[0].shape))
        raise _Stop  # the shape is all this test needs; skip the 224 x 224 forward pass

    ext.net.features.register_forward_pre_hook(record_and_stop)
    with pytest.raises(_Stop):
        ext(torch.zeros(1, 1, 12, 20))
    assert seen == [(1, 3, 224, 224)] and ext.describe()["preprocessing"]["resize"] == [224, 224]


def test_features_independent_of_batch_size() -> None:
    ext = VGG16Extractor(resize=None)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 32, 32)).astype(np.float32)
    a = extract_features(ext, images, batch_size=1, progress=False)
    b = extract_features(ext, images, batch_size=3, progress=False)
    assert a.shape == (3, 4096)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.abs(a[0] - a[1]).max() > 1e-4


def test_relu_features() -> None:
    ext = VGG16Extractor()
    x = (torch.rand(2, 1, 16, 16) * 2 - 1).requires_grad_(True)
    maps = ext.relu_features(x)
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4)]
    rgb = ((x.detach().repeat(1, 3, 1, 1) + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv = ext.net.features[0]
    torch.testing.assert_close(maps[0].detach(), F.relu(F.conv2d(rgb, conv.weight, conv.bias, padding=1)))
    sum(m.mean() for m in maps).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    picked = ext.relu_features(x.detach().repeat(1, 3, 1, 1), layers=("relu3_1", "relu1_2", "relu5_3"))
    assert [tuple(m.shape) for m in picked] == [(2, 256, 4, 4), (2, 64, 16, 16), (2, 512, 1, 1)]
    with pytest.raises(ValueError, match="relu9_9.*relu1_1"):
        ext.relu_features(x, layers=("relu9_9",))


def test_weight_file_errors(tmp_path: Path, vgg_file: tuple[Path, VGG16]) -> None:
    path, _ = vgg_file
    with pytest.raises(CheckpointError, match="vgg16-test.pth.*does not match"):
        VGG16Extractor(weights=path, sha256="f" * 64)
    with pytest.raises(CheckpointError, match="missing.pth.*vgg16-397923af"):
        build_extractor("vgg16", weights=str(tmp_path / "missing.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pth.*cannot read"):
        VGG16Extractor(weights=corrupt)
    inception_like = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, inception_like)
    with pytest.raises(CheckpointError, match=r"inception.pth: keys do not fit.*VGG16.*missing keys: \[classifier"):
        VGG16Extractor(weights=inception_like)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"epoch": 3}, not_tensors)
    with pytest.raises(CheckpointError, match="not_tensors.pth: not a state dict"):
        VGG16Extractor(weights=not_tensors)


def test_registry_options_and_planes(vgg_file: tuple[Path, VGG16]) -> None:
    assert "vgg16" in EXTRACTORS and "planes:vgg16" in EXTRACTORS
    with pytest.raises(CheckpointError, match="vgg16-397923af"):
        build_extractor("vgg16")
    with pytest.raises(ConfigError, match="fc7.*pool5"):
        VGG16Extractor(layer="fc8")
    assert VGG16Extractor().describe()["weights_sha256"] is None
    path, _ = vgg_file
    ext = build_extractor("planes:vgg16", weights=str(path), layer="pool5", resize=None).eval()
    assert ext.feature_dim == 3 * 512 and ext.weights_sha256 == sha256_file(path)
    loaded = load_vgg16(path, sha256=sha256_file(path))  # the perceptual-loss entry point
    assert loaded.weights_sha256 == ext.weights_sha256
    torch.testing.assert_close(loaded.net.features[0].weight, ext.inner.net.features[0].weight)
    with torch.no_grad():
        assert ext(torch.rand(2, 1, 32, 34, 36) * 2 - 1).shape == (2, 3 * 512)
        with pytest.raises(ValueError, match=r"too small.*resize="):
            ext(torch.rand(1, 1, 8, 10, 12))
