"""MedicalNet extractors, the registry/factory, batched extraction and the feature cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.errors import CheckpointError, ConfigError
from synthmed.features import (
    EXTRACTORS,
    FeatureExtractor,
    MedicalNetExtractor,
    build_extractor,
    cached_features,
    extract_features,
    zscore_foreground,
)
from synthmed.io_utils import sha256_file


def _fake_medicalnet_checkpoint(model: MedicalNetExtractor, path: Path) -> Path:
    """The official layout: {"state_dict": {"module.<key>": ...}} with a segmentation head."""
    state = {f"module.{k}": v.clone() for k, v in model.backbone.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(512, 32, 2, 2, 2)
    state["module.conv_seg.0.bias"] = torch.zeros(32)
    torch.save({"epoch": 1, "state_dict": state}, path)
    return path


def _perturb_bn(model: torch.nn.Module) -> None:
    """Non-default BatchNorm statistics so a failed load would change the features."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_registered_names() -> None:
    for name in ["medicalnet-resnet10", "medicalnet-resnet18", "medicalnet-resnet34", "medicalnet-resnet50",
                 "indomain-ae", "planes:indomain-ae"]:
        assert name in EXTRACTORS


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match="medicalnet-resnet50.*indomain|indomain.*medicalnet-resnet50"):
        build_extractor("no-such-extractor")


def test_medicalnet_without_weights_says_where_to_get_them() -> None:
    with pytest.raises(CheckpointError, match=r"github.com/Tencent/MedicalNet.*resnet_50_23dataset|"
                                              r"resnet_50_23dataset.*github.com/Tencent/MedicalNet"):
        build_extractor("medicalnet-resnet50")


def test_medicalnet_checkpoint_roundtrip_and_hash(tmp_path: Path) -> None:
    ref = MedicalNetExtractor(10, _random_init=True)
    _perturb_bn(ref)
    ref.eval()
    path = _fake_medicalnet_checkpoint(ref, tmp_path / "resnet_10_23dataset.pth")
    digest = sha256_file(path)
    loaded = build_extractor("medicalnet-resnet10", weights=str(path), sha256=digest).eval()
    assert loaded.weights_sha256 == digest
    x = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x))
    with pytest.raises(CheckpointError, match="resnet_10_23dataset.pth"):
        build_extractor("medicalnet-resnet10", weights=str(path), sha256="0" * 64)
    with pytest.raises(CheckpointError, match="missing.pth"):
        build_extractor("medicalnet-resnet10", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="resnet_10_23dataset.pth"):  # keys of another depth
        build_extractor("medicalnet-resnet34", weights=str(path))


def test_medicalnet_resnet50_shapes_and_describe() -> None:
    model = MedicalNetExtractor(50, _random_init=True).eval()
    assert model.feature_dim == 2048
    with torch.no_grad():
        for size in (32, 64):
            assert model(torch.rand(1, 1, size, size, size) * 2 - 1).shape == (1, 2048)
    desc = model.describe()
    assert desc["name"] == "medicalnet-resnet50" and desc["feature_dim"] == 2048
    assert desc["weights_sha256"] is None and desc["preprocessing"]["normalise"].startswith("zscore")
    json.dumps(desc)


def test_medicalnet_resize_and_dilation_keep_feature_map() -> None:
    model = MedicalNetExtractor(10, resize=(32, 32, 32), _random_init=True).eval()
    seen: dict[str, torch.Size] = {}

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["shape"] = output.shape

    model.backbone.layer4.register_forward_hook(hook)
    with torch.no_grad():
        assert model(torch.rand(1, 1, 20, 24, 28)).shape == (1, 512)
    assert seen["shape"][2:] == (4, 4, 4)  # stem /2, maxpool /2, layer2 /2; layers 3-4 dilated
    assert model.describe()["preprocessing"]["resize"] == [32, 32, 32]


def test_zscore_foreground() -> None:
    x = torch.full((2, 1, 8, 8, 8), -1.0)
    x[0, 0, 2:6, 2:6, 2:6] = torch.rand(4, 4, 4)
    x[1] = torch.rand(1, 8, 8, 8)
    out = zscore_foreground(x)
    fg = out[0, 0, 2:6, 2:6, 2:6]
    assert abs(fg.mean().item()) < 1e-5 and abs(fg.std(unbiased=False).item() - 1) < 1e-4
    assert out[0, 0, 0, 0, 0] == 0
    assert torch.isfinite(zscore_foreground(torch.full((1, 1, 4, 4, 4), -1.0))).all()


class _MeanStd(FeatureExtractor):
    """A trivial 2D extractor for testing extraction and caching."""

    def __init__(self) -> None:
        super().__init__()
        self.name, self.spatial_dims, self.feature_dim = "mean-std", 2, 2
        self.preprocessing = {"range": [-1, 1]}
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.check_input(x)
        flat = x.flatten(1)
        return torch.stack([flat.mean(1), flat.std(1)], dim=1)


def test_extract_features_batch_size_independent() -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (7, 1, 8, 8)).astype(np.float32)
    ext = _MeanStd().train()
    a = extract_features(ext, images, batch_size=3, progress=False)
    b = extract_features(ext, images, batch_size=7, progress=False)
    assert a.shape == (7, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a[:, 0], images.reshape(7, -1).mean(1), rtol=1e-5)
    assert ext.training  # mode restored
    with pytest.raises(ValueError, match="spatial"):
        extract_features(ext, images[:, 0], progress=False)


def test_cached_features(tmp_path: Path) -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    ext = _MeanStd()
    first = cached_features(ext, images, tmp_path, progress=False)
    calls = ext.calls
    again = cached_features(ext, images, tmp_path, progress=False)
    assert ext.calls == calls
    np.testing.assert_array_equal(first, again)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and not any(f.startswith(".") for f in files)
    cached_features(ext, images, tmp_path, dataset_key="other", progress=False)
    assert ext.calls > calls
    ext.preprocessing = {"range": [-1, 1], "changed": True}  # another feature space: not reused
    calls = ext.calls
    cached_features(ext, images, tmp_path, progress=False)
    assert ext.calls > calls
    sidecar = json.loads(next(tmp_path.glob("*other*.json")).read_text(encoding="utf-8"))
    assert sidecar["extractor"]["name"] == "mean-std" and sidecar["n"] == 5
