"""The 2D/3D GAN zoo (DCGAN, PGGAN, cpD-GAN, StyleGAN-lite): every model with every conditioning method
trains 2 steps through the real loop in 2D and 3D; progressive growing reaches the full resolution and
resumes exactly; label flipping; StyleGAN-lite samples are reproducible."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from synth_testdata import make_tiny_prepared

from synthmed.config import load_config
from synthmed.generate.sample import sample
from synthmed.models.base import get_family
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.iterations=2",
        "train.batch_size=4", "model.classifier_iterations=2"]
ZOO = ["dcgan", "pggan"]  # cpD-GAN and StyleGAN-lite: test_gan_zoo_style.py (each file stays fast)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("zoo")
    return {2: make_tiny_prepared(root / "p2", 2, 8, 8), 3: make_tiny_prepared(root / "p3", 3, 8, 8),
            16: make_tiny_prepared(root / "p16", 2, 16, 8)}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", ["frozen-classifier", "ac", "projection"])  # none: tests/train/test_training.py
@pytest.mark.parametrize("model", ZOO)
def test_every_zoo_model_and_method_trains(model: str, method: str, dims: int, data: dict[int, Path],
                                           tmp_path: Path) -> None:
    check_trains(model, method, dims, data, tmp_path)


def check_trains(model: str, method: str, dims: int, data: dict[int, Path], tmp_path: Path) -> None:
    extra = ["model.phase_images=2"] if model == "pggan" else []  # grow during the two steps
    run = train(load_config(model, [*TINY, *extra, f"model.conditioning={method}", "augment.enabled=true"]),
                data[dims], tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["conditioning"]["method"] == method
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert all(math.isfinite(float(v)) for r in rows for v in r.values() if v != "")
    fresh = get_family(model).build(get_family(model).Params(**ckpt["params"]), dims, (8,) * dims)
    w0 = fresh["G"].state_dict()
    assert any(not torch.equal(w0[k], v) for k, v in ckpt["nets"]["G"].items() if v.is_floating_point())
    out = sample(run, 2, tmp_path / "s", labels=["b"], progress=False)
    m = list(csv.DictReader(open(out / "manifest.csv")))
    assert [(r["label"], r["label_name"]) for r in m] == [("1", "b")] * 2


def test_pggan_grows_to_full_resolution_and_resumes_exactly(data: dict[int, Path], tmp_path: Path) -> None:
    # 16^2: levels 4, 8, 16; start 8 (level 1); 4 images per phase = one batch: stabilise 8, fade 16, stable 16
    over = [*TINY, "model.start_resolution=8", "model.phase_images=4", "model.conditioning=ac",
            "train.checkpoint_every=2", "model.label_flip=true"]
    straight = train(load_config("pggan", [*over, "train.iterations=4"]), data[16], tmp_path / "a", progress=False)
    rows = list(csv.DictReader(open(straight / "metrics.csv")))
    assert [(float(r["level"]), float(r["alpha"])) for r in rows] == [(1, 1), (2, 0), (2, 1), (2, 1)]
    ckpt = load_checkpoint(straight / "checkpoints/last.pt")
    assert int(ckpt["nets"]["G"]["level"]) == 2 and ckpt["optim"]["images_seen"] == 16
    assert ckpt["optim"]["critic_updates"] == 4
    half = train(load_config("pggan", [*over, "train.iterations=2"]), data[16], tmp_path / "b", progress=False)
    train(load_config("pggan", [*over, "train.iterations=4"]), data[16], half, resume=True, progress=False)
    wa, wb = ckpt["nets"], load_checkpoint(half / "checkpoints/last.pt")["nets"]
    for net in wa:
        for k in wa[net]:
            assert torch.equal(wa[net][k], wb[net][k]), f"{net}.{k}"


@pytest.mark.parametrize(("model", "key", "value"), [("pggan", "phase_images", 0), ("cpdgan", "gp_weight", -1),
                                                     ("stylegan_lite", "mapping_layers", 0), ("dcgan", "latent_dim", 0),
                                                     ("pggan", "minibatch_group", 0)])
def test_bad_zoo_parameters_are_config_errors(model: str, key: str, value: int) -> None:
    from synthmed.errors import ConfigError

    params = load_config(model, [f"model.{key}={value}"]).model.params
    with pytest.raises(ConfigError, match=f"model.{key}"):
        get_family(model).build(params, 2, (16, 16))


def test_unplannable_size_is_a_config_error() -> None:
    from synthmed.errors import ConfigError

    fam = get_family("cpdgan")
    with pytest.raises(ConfigError, match="cpdgan.*cannot be halved"):
        fam.build(load_config("cpdgan", TINY).model.params, 2, (6, 6))
