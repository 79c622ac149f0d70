"""cpD-GAN and StyleGAN-lite with every conditioning method through the real loop in 2D and 3D; label
flipping (paper 003) in the WGAN-GP step; StyleGAN-lite samples are reproducible despite per-layer noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synth_testdata import make_tiny_prepared
from test_gan_zoo import TINY, check_trains

from synthmed.config import load_config
from synthmed.generate.sample import load_run, sample
from synthmed.models.base import get_family
from synthmed.train.loop import train
from synthmed.train.steps import make_step


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("zoo_style")
    return {2: make_tiny_prepared(root / "p2", 2, 8, 8), 3: make_tiny_prepared(root / "p3", 3, 8, 8)}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", ["frozen-classifier", "ac", "projection"])  # none: tests/train/test_training.py
@pytest.mark.parametrize("model", ["cpdgan", "stylegan_lite"])
def test_every_style_model_and_method_trains(model: str, method: str, dims: int, data: dict[int, Path],
                                             tmp_path: Path) -> None:
    check_trains(model, method, dims, data, tmp_path)


def test_label_flipping_swaps_the_critic_terms_every_third_update(data: dict[int, Path]) -> None:
    """Paper 003: every third critic update, real and synthetic swap: the Wasserstein term changes sign."""
    cfg = load_config("cpdgan", [*TINY, "model.label_flip=true", "train.lr=1e-12", "model.gp_weight=0",
                                 "model.drift_weight=0"])
    fam = get_family("cpdgan")
    torch.manual_seed(0)
    nets = fam.build(cfg.model.params, 2, (8, 8))
    step = make_step(fam, cfg, nets, torch.device("cpu"), None)
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    signs = []
    for _ in range(3):
        out = step(real)
        signs.append(float(out["loss_d"]) * float(out["d_fake"] - out["d_real"]) > 0)
    assert signs == [True, True, False]


def test_stylegan_lite_samples_depend_only_on_their_seed(data: dict[int, Path], tmp_path: Path) -> None:
    run = train(load_config("stylegan_lite", TINY), data[2], tmp_path / "run", progress=False)
    a = sample(run, 3, tmp_path / "a", seed=5, batch_size=1, progress=False)
    b = sample(run, 2, tmp_path / "b", seed=6, batch_size=2, progress=False)
    from PIL import Image

    img = lambda d, i: np.asarray(Image.open(d / f"synthetic_{i:05d}.png"))  # noqa: E731
    assert np.array_equal(img(a, 1), img(b, 0)) and np.array_equal(img(a, 2), img(b, 1))
    loaded = load_run(run, device="cpu")
    assert loaded.nets["G"].layers[0].noise.strength.shape == (loaded.nets["G"].channels[0],)
