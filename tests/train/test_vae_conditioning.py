"""Conditional VAEs (``model.conditioning: cvae``, Sohn et al. 2015) through the real loop: vae, dfc_vae
and intro_vae in 2D and 3D, label-dependent decoders, sampling with ``--label``, reconstructions with
the images' own labels, and clear config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synth_testdata import make_tiny_prepared

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.generate.sample import load_run
from synthmed.models import get_family
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train

VAES = ["vae", "dfc_vae", "intro_vae"]
TINY = ["model.latent_dim=8", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.batch_size=4",
        "train.iterations=2"]


def cfg(model: str, *extra: str):
    over = [*TINY, *extra]
    if model == "dfc_vae":
        over.append("model.feature_iterations=3")
    return load_config(model, over)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("vaecond")
    return {2: make_tiny_prepared(root / "p2", 2, 16, 8), 3: make_tiny_prepared(root / "p3", 3, 8, 8)}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", VAES)
def test_cvae_trains_and_samples_with_labels(model: str, dims: int, data: dict[int, Path], tmp_path: Path) -> None:
    run = train(cfg(model, "model.conditioning=auto", "model.num_classes=2"), data[dims], tmp_path / "run",
                progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["conditioning"]["method"] == "cvae"
    assert ckpt["params"]["num_classes"] == 2 and ckpt["params"]["conditioning"] == "cvae"
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["model"]
    assert resolved["conditioning"] == "cvae"
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["status"] == "finished"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert all(np.isfinite(float(v)) for r in rows for v in r.values() if v != "")

    loaded = load_run(run, device="cpu")
    assert loaded.nets["G"].cond_dim == 2 and loaded.nets["E"].cond_dim == 2
    z = torch.randn(2, 8)
    a = loaded.family.generate_images(loaded.nets, z, torch.tensor([0, 0]))
    b = loaded.family.generate_images(loaded.nets, z, torch.tensor([1, 1]))
    assert not np.allclose(a, b)  # same z, different y -> different images

    out = tmp_path / "s"
    assert main(["sample", str(run), "--n", "4", "--label", "b", "--out", str(out), "--device", "cpu"]) in (0, None)
    m = list(csv.DictReader(open(out / "manifest.csv")))
    assert [(r["label"], r["label_name"]) for r in m] == [("1", "b")] * 4


def test_reconstruction_uses_the_images_own_labels(data: dict[int, Path], tmp_path: Path) -> None:
    run = train(cfg("vae", "model.conditioning=cvae"), data[2], tmp_path / "run", progress=False)
    loaded = load_run(run, device="cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 16, 16)).astype(np.float32)
    own = loaded.family.reconstruct_images(loaded.nets, x, labels=np.array([1, 1, 1]))
    other = loaded.family.reconstruct_images(loaded.nets, x, labels=np.array([0, 0, 0]))
    assert own.shape == x.shape and not np.allclose(own, other)
    seeded = loaded.family.reconstruct_images(loaded.nets, x, batch_size=2, sample_seed=3, labels=np.array([1, 0, 1]))
    assert seeded.shape == x.shape and np.isfinite(seeded).all()


def test_multi_hot_code_and_unconditional_defaults() -> None:
    fam = get_family("intro_vae")
    p = load_config("intro_vae", ["model.latent_dim=8", "model.base_channels=4", "model.max_channels=8",
                                  "model.conditioning=cvae", "model.num_classes=3", "model.multi_label=true"]).model.params
    nets = fam.build(p, 2, (16, 16))
    z = torch.randn(2, 8)
    y = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert fam.generate_images(nets, z, y).shape == (2, 1, 16, 16)
    assert fam.encode(nets, torch.zeros(2, 1, 16, 16), y).shape == (2, 8)
    plain = load_config("vae", ["model.latent_dim=8"]).model.params
    assert fam.conditioning(plain) == "none" and get_family("vae").build(plain, 2, (16, 16))["G"].cond_dim == 0


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="model.conditioning"):
        load_config("vae", ["model.conditioning=projection"])
    with pytest.raises(ConfigError, match="model.conditioning"):
        load_config("intro_vae", ["model.conditioning=bogus"])
    with pytest.raises(ConfigError, match="model.label_embedding_dim"):
        load_config("dfc_vae", ["model.label_embedding_dim=4"])


def test_evaluation_reconstructs_each_image_with_its_label(data: dict[int, Path], tmp_path: Path) -> None:
    """``synthmed evaluate --reconstruct`` passes the real images' labels to a conditional VAE."""
    from synthmed.data.prepared import load_prepared
    from synthmed.errors import DataError
    from synthmed.evaluate.reconstruction import reconstruct, reconstruction_metrics

    run = train(cfg("vae", "model.conditioning=cvae"), data[2], tmp_path / "run", progress=False)
    loaded = load_run(run, device="cpu")
    ds = load_prepared(data[2])
    x, y = np.asarray(ds.images, dtype=np.float32), np.asarray(ds.labels)
    direct = loaded.family.reconstruct_images(loaded.nets, x, batch_size=8, labels=y)
    np.testing.assert_allclose(reconstruct(loaded, x, 8, labels=y), direct, atol=1e-6)
    res = reconstruction_metrics(loaded, x, batch_size=8, labels=y)
    mse = ((direct - x) / 2) ** 2  # intensities mapped to [0, 1]
    assert res["mse"]["mean"] == pytest.approx(float(mse.reshape(len(x), -1).mean(1).mean()), rel=1e-5)
    flipped = reconstruction_metrics(loaded, x, batch_size=8, labels=1 - y)
    assert flipped["mse"]["mean"] != pytest.approx(res["mse"]["mean"], rel=1e-9)
    with pytest.raises(DataError, match="labels for"):
        reconstruct(loaded, x, 8, labels=y[:3])
