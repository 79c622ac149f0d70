"""The registered diagnosis classifiers: parameter counts against the papers, shapes, weights loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthmed.errors import CheckpointError, ConfigError
from synthmed.registry import CLASSIFIERS, all_registries
from synthmed.utility.classifiers import (
    DenseNet121Classifier,
    DenseNet121Params,
    DiagnosisCNN,
    HAGANClassifierCNN,
    build_classifier,
    count_parameters,
)


def test_paper000_fig_s1_parameter_count_at_64() -> None:
    """Fig. S1: 448 + 32 + 27,712 + 128 + 221,312 + 256 + 7,078,144 + 32,896 + 129 = 7,361,057."""
    net = DiagnosisCNN(3, (64, 64, 64), out_channels=1)
    assert count_parameters(net) == 7_361_057
    per_layer = [p.numel() for p in net.parameters()]
    weights_and_biases = [a + b for a, b in zip(per_layer[::2], per_layer[1::2], strict=True)]
    assert weights_and_biases == [448, 32, 27_712, 128, 221_312, 256, 7_078_144, 32_896, 129]
    # the flattened length of Fig. S1: 128 channels of 6^3
    assert net.head[1].in_features == 27_648


def test_paper000_cnn_2d_counterpart() -> None:
    """The same layers with 2D kernels: 3x3 convolutions and a 128 * 6^2 flatten at 64^2."""
    net = DiagnosisCNN(2, (64, 64))
    convs = (16 * 9 + 16) + (64 * 16 * 9 + 64) + (128 * 64 * 9 + 128)
    bns = 2 * (16 + 64 + 128)
    linears = (128 * 36 * 256 + 256) + (256 * 128 + 128) + (128 + 1)
    assert count_parameters(net) == convs + bns + linears
    out = net(torch.randn(3, 1, 64, 64))
    assert out.shape == (3, 1)


def test_paper001_table_viii_parameter_count() -> None:
    """Table VIII (no count printed): 13 conv(3x3x3) with bias + BatchNorm, dense 128 -> 5 (GOLD 0-4).

    convs: (1,8) (8,8) (8,16) (16,16)x2 (16,32) (32,32)x2 (32,64) (64,64)x2 (64,128) (128,128).
    """
    pairs = [(1, 8), (8, 8), (8, 16), (16, 16), (16, 16), (16, 32), (32, 32), (32, 32), (32, 64), (64, 64),
             (64, 64), (64, 128), (128, 128)]
    expected = sum(27 * a * b + b + 2 * b for a, b in pairs) + 128 * 5 + 5
    assert expected == 1_030_845
    net = HAGANClassifierCNN(3, (32, 32, 32), out_channels=5)
    assert count_parameters(net) == expected
    strides = [m.stride[0] for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert strides == [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 2]
    # Table VIII's output sizes at 128^3 end in 128 x 4^3 before pooling; the same five halvings at 32^3
    x = torch.randn(2, 1, 32, 32, 32)
    assert net.features[:-2](x).shape == (2, 128, 1, 1, 1)
    assert net(x).shape == (2, 5)


@pytest.mark.parametrize("name", ["diagnosis-cnn", "hagan-cnn"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_tiny(name: str, spatial_dims: int) -> None:
    shape = (24,) * spatial_dims  # Fig. S1 needs >= 22 voxels a side: 22 -> 10 -> 4 -> 1
    net = build_classifier(name, spatial_dims, shape, n_classes=2)
    x = torch.randn(2, 1, *shape)
    y = net(x)
    assert y.shape == (2, 1)
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert build_classifier(name, spatial_dims, shape, n_classes=4)(x).shape == (2, 4)


def test_too_small_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too small"):
        DiagnosisCNN(3, (8, 8, 8))


def test_registry_lists_every_classifier() -> None:
    assert {"diagnosis-cnn", "hagan-cnn", "densenet121", "svm"} <= set(all_registries()["classifiers"].names())
    assert "classifiers" in all_registries() and CLASSIFIERS.get("svm").__name__ == "GANTrainSVM"


def _torchvision_format(net: DenseNet121Classifier) -> dict[str, torch.Tensor]:
    """MONAI DenseNet121 weights renamed the way torchvision's densenet121 file names them."""
    out = {}
    for k, v in net.net.state_dict().items():
        if k.startswith("class_layers."):
            continue
        out[k.replace(".layers.", ".")] = v.clone()
    out["classifier.weight"] = torch.zeros(1000, 1024)
    out["classifier.bias"] = torch.zeros(1000)
    return out


def test_densenet121_random_and_local_weights(tmp_path: Path) -> None:
    net = DenseNet121Classifier(2, (32, 32), 1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1)
    # a torchvision-format file (3-channel stem) is loaded key by key
    donor = DenseNet121Classifier(2, (32, 32), 1, DenseNet121Params())
    donor.net = type(donor.net)(spatial_dims=2, in_channels=3, out_channels=1)
    state = _torchvision_format(donor)
    path = tmp_path / "densenet121.pth"
    torch.save(state, path)
    loaded = DenseNet121Classifier(2, (32, 32), 1, DenseNet121Params(weights=str(path)))
    key = "features.denseblock1.denselayer1.conv1.weight"
    assert torch.equal(loaded.net.state_dict()["features.denseblock1.denselayer1.layers.conv1.weight"], state[key])
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64
    assert loaded(torch.randn(2, 1, 32, 32)).shape == (2, 1)
    with pytest.raises(CheckpointError, match="SHA-256"):
        DenseNet121Classifier(2, (32, 32), 1, DenseNet121Params(weights=str(path), sha256="0" * 64))
    with pytest.raises(ConfigError, match="below 32"):
        DenseNet121Classifier(2, (28, 28), 1)
    assert DenseNet121Classifier(2, (28, 28), 1, DenseNet121Params(input_size=32))(torch.randn(2, 1, 28, 28)).shape == (2, 1)
