"""Inception-v3 (torchvision and FID variants): architecture, weight files, extractor, planes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.errors import CheckpointError, ConfigError
from synthmed.features import (
    EXTRACTORS,
    InceptionV3,
    InceptionV3Extractor,
    ThreePlaneExtractor,
    build_extractor,
    extract_features,
)
from synthmed.features.inception import _pool_branch
from synthmed.io_utils import sha256_file

#: torchvision's published count for inception_v3 (with AuxLogits, 1000 classes).
TORCHVISION_PARAMS = 27_161_264


def _perturb_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-default BatchNorm statistics so a failed load would change the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InceptionV3]:
    """A torchvision-layout weight file (1000 classes, with AuxLogits) and the network it holds."""
    torch.manual_seed(0)
    net = InceptionV3(1000, aux_logits=True).eval()
    _perturb_bn(net)
    path = tmp_path_factory.mktemp("inception") / "inception_v3_google-test.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_parameter_count_and_torchvision_names() -> None:
    net = InceptionV3(1000, aux_logits=True)
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS
    keys = set(net.state_dict())
    for key in ["Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch1x1.conv.weight",
                "Mixed_5b.branch_pool.conv.weight", "Mixed_6a.branch3x3.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.weight", "Mixed_7a.branch7x7x3_4.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight", "AuxLogits.conv1.conv.weight", "AuxLogits.fc.bias",
                "fc.weight", "fc.bias"]:
        assert key in keys
    assert not any(k.startswith("AuxLogits") for k in InceptionV3(1008, variant="fid").state_dict())
    # the FID graph: no aux head, 1008-way classifier
    fid_params = sum(p.numel() for p in InceptionV3(1008, variant="fid").parameters())
    aux = sum(p.numel() for p in net.AuxLogits.parameters())
    assert fid_params == TORCHVISION_PARAMS - aux + 8 * 2048 + 8


def test_grid_sizes_follow_table_1() -> None:
    """Szegedy et al. 2016, Table 1: 35x35x288 -> 17x17x768 -> 8x8x2048 for a 299x299 input."""
    net = InceptionV3().eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c"):
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        assert net.pool3(torch.zeros(1, 3, 299, 299)).shape == (1, 2048)
    assert seen == {"Mixed_5d": (288, 35, 35), "Mixed_6e": (768, 17, 17), "Mixed_7c": (2048, 8, 8)}


def test_fid_variant_pooling() -> None:
    net = InceptionV3(1008, variant="fid")
    assert [net.Mixed_5b.pool, net.Mixed_6b.pool, net.Mixed_7b.pool, net.Mixed_7c.pool] == \
           ["avg-exclude-pad", "avg-exclude-pad", "avg-exclude-pad", "max"]
    assert InceptionV3().Mixed_7c.pool == "avg"
    ones = torch.ones(1, 1, 4, 4)
    assert _pool_branch(ones, "avg")[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # zero padding counted
    assert torch.equal(_pool_branch(ones, "avg-exclude-pad"), ones)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert _pool_branch(x, "max")[0, 0, 0, 0].item() == 5.0


def test_roundtrip_hash_and_outputs(tv_file: tuple[Path, InceptionV3]) -> None:
    path, net = tv_file
    digest = sha256_file(path)
    ext = build_extractor("inception-v3", weights=str(path), sha256=digest.upper()).eval()
    assert isinstance(ext, InceptionV3Extractor)
    assert ext.weights_sha256 == digest and ext.variant == "torchvision" and ext.num_classes == 1000
    x = torch.rand(1, 1, 20, 28) * 2 - 1  # any 2D size: resized to 299 x 299
    with torch.no_grad():
        big = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        ref_feats = net.pool3(big.repeat(1, 3, 1, 1))
        feats, logits, probs = ext(x), ext.logits(x), ext.probabilities(x)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1000)
    torch.testing.assert_close(feats, ref_feats)
    torch.testing.assert_close(logits, net.fc(ref_feats))
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))
    desc = ext.describe()
    assert desc["weights_sha256"] == digest and desc["preprocessing"]["resize"] == [299, 299]
    json.dumps(desc)


def test_fid_file_autodetected_without_batch_counters(tmp_path: Path) -> None:
    net = InceptionV3(1008, variant="fid")
    _perturb_bn(net, seed=2)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save(state, path)
    ext = InceptionV3Extractor(weights=path)
    assert ext.variant == "fid" and ext.num_classes == 1008
    assert ext.describe()["preprocessing"]["variant"] == "fid"
    forced = InceptionV3Extractor(weights=path, variant="torchvision")
    assert forced.variant == "torchvision" and forced.net.Mixed_7c.pool == "avg"
    with torch.no_grad():  # same weights, different pooling: the last module's outputs differ
        assert ext.net.fc(torch.rand(1, 2048)).shape == (1, 1008)
        t = torch.rand(1, 2048, 4, 4)
        assert not torch.allclose(ext.net.Mixed_7c(t), forced.net.Mixed_7c(t))
        t = torch.rand(1, 192, 5, 5)
        assert not torch.allclose(ext.net.Mixed_5b(t), forced.net.Mixed_5b(t))


def test_weight_file_errors(tmp_path: Path, tv_file: tuple[Path, InceptionV3]) -> None:
    path, net = tv_file
    with pytest.raises(CheckpointError, match="inception_v3_google-test.pth.*does not match"):
        InceptionV3Extractor(weights=path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="missing.pth.*not found"):
        build_extractor("inception-v3", weights=str(tmp_path / "missing.pth"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth.*cannot read"):
        InceptionV3Extractor(weights=corrupt)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        InceptionV3Extractor(weights=truncated)
    state = net.state_dict()
    wrong_keys = tmp_path / "wrong_keys.pth"
    torch.save({("renamed." + k if "Mixed_6b" in k else k): v for k, v in state.items()}, wrong_keys)
    with pytest.raises(CheckpointError, match=r"wrong_keys.pth: keys do not fit.*missing keys: \[Mixed_6b"):
        InceptionV3Extractor(weights=wrong_keys)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save({**state, "Mixed_5b.branch1x1.conv.weight": torch.zeros(64, 192, 3, 3)}, wrong_shape)
    with pytest.raises(CheckpointError, match=r"wrong_shape.pth: tensor shapes.*Mixed_5b.branch1x1.conv.weight"):
        InceptionV3Extractor(weights=wrong_shape)
    no_fc = tmp_path / "no_fc.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, no_fc)
    with pytest.raises(CheckpointError, match="no_fc.pth.*fc.weight"):
        InceptionV3Extractor(weights=no_fc)


def test_registry_needs_weights_and_untrained_describe() -> None:
    assert "inception-v3" in EXTRACTORS and "planes:inception-v3" in EXTRACTORS
    with pytest.raises(CheckpointError, match="inception_v3_google.*pt_inception"):
        build_extractor("inception-v3")
    with pytest.raises(ConfigError, match="variant"):
        InceptionV3Extractor(variant="tf")
    ext = build_extractor("inception-v3", _random_init=True)
    desc = ext.describe()
    assert desc["weights_sha256"] is None and desc["feature_dim"] == 2048 and desc["spatial_dims"] == 2
    assert InceptionV3Extractor().weights_sha256 is None
    with pytest.raises(ValueError, match="expected images"):
        ext(torch.zeros(1, 3, 16, 16))


def test_features_independent_of_batch_size() -> None:
    ext = InceptionV3Extractor()
    _perturb_bn(ext)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 1, 12, 12)).astype(np.float32)
    a = extract_features(ext, images, batch_size=1, progress=False)
    b = extract_features(ext, images, batch_size=2, progress=False)
    assert a.shape == (2, 2048)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different images, different features


def test_planes_wrapper_on_tiny_volume(tv_file: tuple[Path, InceptionV3]) -> None:
    path, _ = tv_file
    ext = build_extractor("planes:inception-v3", weights=str(path), reduce="mean").eval()
    assert isinstance(ext, ThreePlaneExtractor) and ext.feature_dim == 2048
    assert ext.weights_sha256 == sha256_file(path) and ext.name == "planes:inception-v3"
    vol = torch.rand(1, 1, 8, 10, 12) * 2 - 1
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    ext.inner.register_forward_hook(lambda m, i, o: calls.append((i[0], o)))
    with torch.no_grad():
        feats = ext(vol)
    assert feats.shape == (1, 2048)
    # the middle sagittal, coronal and axial slices, one inner call each, averaged
    for (seen, _), expected in zip(calls, [vol[:, :, 3], vol[:, :, :, 4], vol[:, :, :, :, 5]], strict=True):
        torch.testing.assert_close(seen, expected)
    torch.testing.assert_close(feats, torch.stack([o for _, o in calls]).mean(0))
    assert ext.describe()["preprocessing"]["inner"]["resize"] == [299, 299]
    concat = build_extractor("planes:inception-v3", _random_init=True)
    assert concat.feature_dim == 3 * 2048 and concat.weights_sha256 is None
