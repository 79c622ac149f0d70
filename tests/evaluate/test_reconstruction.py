"""Reconstruction MSE and sharpness of models with an encoder (paper 002, Sec. 3.3, Fig. 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.config import load_config
from synthmed.data.prepared import load_prepared
from synthmed.errors import ConfigError, DataError
from synthmed.evaluate.reconstruction import reconstruct, reconstruction_metrics, reconstruction_section
from synthmed.generate.sample import load_run
from synthmed.metrics.image import laplacian_sharpness, reconstruction_mse
from synthmed.train.loop import train

TINY = ["model.latent_dim=8", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
        "train.n_preview=2", "train.batch_size=4"]


@pytest.fixture
def vae2d(tiny2d: Path, tmp_path: Path) -> Path:
    return train(load_config("vae", TINY), tiny2d, tmp_path / "vae", progress=False)


def test_metrics_match_the_image_metrics(vae2d: Path, tiny2d: Path, tmp_path: Path) -> None:
    real = np.asarray(load_prepared(tiny2d).images)
    res = reconstruction_metrics(vae2d, real, batch_size=3, figure_path=tmp_path / "fig.png")
    run = load_run(vae2d)
    rec = run.family.reconstruct_images(run.nets, real)
    mse, sharp_o, sharp_r = reconstruction_mse(rec, real), laplacian_sharpness(real), laplacian_sharpness(rec)
    assert res["n_images"] == len(real) == len(res["per_image"]) and res["model"] == "vae"
    assert res["mse"]["mean"] == pytest.approx(mse.mean(), rel=1e-5)
    assert res["mse"]["std"] == pytest.approx(mse.std(), rel=1e-4)
    assert [r["mse"] for r in res["per_image"]] == pytest.approx(mse.tolist(), rel=1e-5)
    assert res["sharpness_original"]["mean"] == pytest.approx(sharp_o.mean())
    assert res["sharpness_reconstruction"]["mean"] == pytest.approx(sharp_r.mean(), rel=1e-5)
    assert res["sharpness_ratio"] == pytest.approx(sharp_r.mean() / sharp_o.mean(), rel=1e-5)
    with Image.open(res["figure"]) as im:  # 8 pairs: originals left, reconstructions right
        assert im.width > 2 * 16 and im.height > 8 * 16
    # batch-size independent (eval mode), and a loaded run gives the same as a folder
    again = reconstruction_metrics(run, real, batch_size=8)
    assert again["mse"]["mean"] == pytest.approx(res["mse"]["mean"], rel=1e-5)
    assert reconstruction_metrics(run, real, max_images=3)["n_images"] == 3


def test_perfect_reconstruction_scores_zero(vae2d: Path, tiny2d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = load_run(vae2d)
    monkeypatch.setattr(type(run.family), "reconstruct_images", lambda self, nets, x, **kw: x)
    real = np.asarray(load_prepared(tiny2d).images)
    res = reconstruction_metrics(run, real)
    assert res["mse"]["mean"] == 0.0 and res["sharpness_ratio"] == pytest.approx(1.0)


def test_section_blocks_and_3d_alpha_sngan(tiny3d: Path, tmp_path: Path) -> None:
    from synthmed.report.html import Figure, Table, Text

    run = train(load_config("alpha_sngan", [*TINY, "model.code_hidden_dim=8"]), tiny3d, tmp_path / "a",
                progress=False)
    real = np.asarray(load_prepared(tiny3d).images)
    blocks, res = reconstruction_section(run, real, tmp_path / "fig" / "rec.png", batch_size=4)
    assert [type(b) for b in blocks] == [Table, Figure, Text]
    assert Path(res["figure"]).is_file() and res["model"] == "alpha_sngan"
    assert np.isfinite(res["mse"]["mean"]) and len(res["per_image"]) == len(real)


def test_models_without_encoder_and_wrong_shapes(tiny2d: Path, tmp_path: Path, vae2d: Path) -> None:
    run = train(load_config("sngan", TINY), tiny2d, tmp_path / "g", progress=False)
    real = np.asarray(load_prepared(tiny2d).images)
    with pytest.raises(ConfigError, match="no encoder"):
        reconstruction_metrics(run, real)
    with pytest.raises(DataError, match="do not fit"):
        reconstruct(vae2d, real[:, :, :8])
