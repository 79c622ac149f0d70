"""The in-domain autoencoder extractor and the 2.5D three-plane wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synth_testdata import make_tiny_prepared

from synthmed.errors import CheckpointError
from synthmed.features import (
    IndomainAutoencoder,
    ThreePlaneExtractor,
    build_extractor,
    extract_features,
    fit_autoencoder,
    load_indomain,
    plane_slices,
    slice_positions,
    train_indomain_extractor,
)
from synthmed.io_utils import sha256_file


def _blobs(n: int, spatial_dims: int, size: int, seed: int = 0) -> np.ndarray:
    """Bright balls of random centre and radius on a -1 background: (n, 1, *size)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * spatial_dims, indexing="ij"))
    out = []
    for _ in range(n):
        centre = rng.uniform(-0.3, 0.3, spatial_dims).reshape(-1, *[1] * spatial_dims)
        r = np.sqrt(((grid - centre) ** 2).sum(0))
        out.append(np.where(r < rng.uniform(0.3, 0.6), 0.8, -1.0)[None])
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_train_reload_identical_features(tmp_path: Path, spatial_dims: int) -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (6, 1, *[16] * spatial_dims)).astype(np.float32)
    path = train_indomain_extractor(images, tmp_path / "ae.pt", spatial_dims, 16, iterations=3, batch_size=4,
                                    feature_dim=32, base_channels=4, max_channels=8, progress=False)
    assert path.is_file() and not list(tmp_path.glob(".*"))
    ext = load_indomain(path)
    assert ext.weights_sha256 == sha256_file(path) and ext.feature_dim == 32
    again = build_extractor("indomain-ae", weights=str(path), sha256=sha256_file(path))
    a = extract_features(ext, images, batch_size=4, progress=False)
    b = extract_features(again, images, batch_size=6, progress=False)
    assert a.shape == (6, 32)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ext.describe()["preprocessing"]["resize"] == [16] * spatial_dims
    with pytest.raises(CheckpointError, match="ae.pt"):
        load_indomain(path, sha256="f" * 64)


def test_training_is_seeded(tmp_path: Path) -> None:
    images = _blobs(4, 2, 16)
    kw = dict(spatial_dims=2, size=16, iterations=2, feature_dim=8, base_channels=4, max_channels=8,
              progress=False)
    a = load_indomain(train_indomain_extractor(images, tmp_path / "a.pt", seed=3, **kw))
    b = load_indomain(train_indomain_extractor(images, tmp_path / "b.pt", seed=3, **kw))
    x = torch.from_numpy(images)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruction_loss_decreases(spatial_dims: int) -> None:
    images = torch.from_numpy(_blobs(16, spatial_dims, 16))
    torch.manual_seed(0)
    model = IndomainAutoencoder(spatial_dims, 16, feature_dim=32, base_channels=8, max_channels=16)
    losses = fit_autoencoder(model, images, iterations=30, batch_size=8, lr=3e-3, progress=False)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_trains_on_training_split_only(tiny3d: Path, tmp_path: Path) -> None:
    from synthmed.data.prepared import load_prepared

    path = train_indomain_extractor(tiny3d, tmp_path / "ae3d.pt", iterations=1, feature_dim=8,
                                    base_channels=4, max_channels=8, progress=False)
    info = torch.load(path, weights_only=True)["training"]
    assert info["subset"] == "train" and info["n"] == len(load_prepared(tiny3d).indices("train"))
    assert info["images_sha256"] == load_prepared(tiny3d).meta["images_sha256"]


def test_missing_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="train_indomain_extractor"):
        build_extractor("indomain-ae")
    with pytest.raises(CheckpointError, match="nope.pt"):
        build_extractor("indomain-ae", weights=str(tmp_path / "nope.pt"))


def test_plane_slices() -> None:
    vol = torch.arange(2 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 1, 4, 5, 6)
    assert slice_positions(9, 1) == [4] and slice_positions(9, 3) == [2, 4, 6]
    assert plane_slices(vol, 0).shape == (2, 1, 5, 6)
    torch.testing.assert_close(plane_slices(vol, 1)[1, 0], vol[1, 0, :, 2, :])
    two = plane_slices(vol, 2, k=2)
    assert two.shape == (4, 1, 4, 5)
    torch.testing.assert_close(two[1, 0], vol[0, 0, :, :, slice_positions(6, 2)[1]])


@pytest.mark.parametrize("reduce", ["concat", "mean"])
def test_three_plane_extractor(tmp_path: Path, reduce: str) -> None:
    volumes = _blobs(3, 3, 16)
    path = train_indomain_extractor(volumes, tmp_path / "ae2d.pt", spatial_dims=2, size=16, iterations=2,
                                    feature_dim=8, base_channels=4, max_channels=8, progress=False)
    inner = load_indomain(path)
    wrapped = ThreePlaneExtractor(inner, slices_per_plane=3, reduce=reduce)
    built = build_extractor("planes:indomain-ae", weights=str(path), slices_per_plane=3, reduce=reduce)
    feats = extract_features(wrapped, volumes, batch_size=2, progress=False)
    assert feats.shape == (3, 24 if reduce == "concat" else 8)
    np.testing.assert_allclose(feats, extract_features(built, volumes, progress=False), rtol=1e-5, atol=1e-6)
    # the middle-slice sagittal features equal the inner extractor on that slice
    mid = ThreePlaneExtractor(inner, slices_per_plane=1, reduce="concat").eval()
    x = torch.from_numpy(volumes)
    with torch.no_grad():
        torch.testing.assert_close(mid(x)[:, :8], inner(x[:, :, 7]))
    desc = built.describe()
    assert desc["name"] == "planes:indomain-ae" and desc["weights_sha256"] == sha256_file(path)
    assert desc["preprocessing"]["inner"]["resize"] == [16, 16]
    with pytest.raises(ValueError, match="2D"):
        ThreePlaneExtractor(load_indomain(train_indomain_extractor(
            volumes, tmp_path / "ae3d.pt", iterations=1, feature_dim=8, base_channels=4, max_channels=8,
            progress=False)))


def test_capped_size_halves_to_the_cap() -> None:
    from synthmed.features.indomain import capped_size

    assert capped_size((64, 64, 64)) == (32, 32, 32)
    assert capped_size((128, 128, 128)) == (32, 32, 32)
    assert capped_size((32, 32, 32)) == (32, 32, 32)
    assert capped_size((224, 224)) == (56, 56)  # 2D cap 64: one halving is not enough, two are
    assert capped_size((28, 28)) == (28, 28)
    assert capped_size((64, 64, 64), 0) == (64, 64, 64)
    assert capped_size((96, 64, 64), 32) == (24, 16, 16)  # uniform factor keeps the aspect
    assert capped_size((97, 64, 64), 32) == (97, 64, 64)  # not divisible: native size


def test_evaluation_extractor_works_at_the_capped_size(tmp_path: Path) -> None:
    from synthmed.data.prepared import load_prepared
    from synthmed.evaluate.fidelity import FidelityOptions, make_extractor
    from synthmed.features.base import extract_features

    ds = load_prepared(make_tiny_prepared(tmp_path / "p", 3, 16, 6))
    ext = make_extractor(ds, FidelityOptions(extractor_iterations=2, extractor_size=8, progress=False))
    assert ext.size == (8, 8, 8) and ext.preprocessing["resize"] == [8, 8, 8]
    assert (ds.root / "extractors" / "indomain-ae_8x8x8_it2_seed0.pt").is_file()
    feats = extract_features(ext, np.asarray(ds.images, dtype=np.float32), progress=False)
    assert feats.shape == (6, ext.feature_dim) and np.isfinite(feats).all()
    native = make_extractor(ds, FidelityOptions(extractor_iterations=2, extractor_size=0, progress=False))
    assert native.size == (16, 16, 16)
