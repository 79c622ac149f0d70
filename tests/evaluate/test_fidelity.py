"""Fidelity metrics over several synthetic sets, and loading synthetic cohorts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthmed.config import load_config
from synthmed.evaluate.fidelity import FidelityOptions, aggregate, feature_metric_rows, metric_values
from synthmed.evaluate.synthetic import load_synthetic
from synthmed.generate.sample import sample
from synthmed.metrics import feature as fm
from synthmed.train.loop import train


def test_metric_values_match_the_metric_functions() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.5
    v = metric_values(real, fake, FidelityOptions())
    assert v["fid"] == pytest.approx(float(fm.fid(real, fake)))
    assert v["precision"] == pytest.approx(fm.precision_recall(real, fake, k=3).precision)
    assert v["coverage"] == pytest.approx(fm.density_coverage(real, fake, k=5).coverage)


def test_aggregate_is_a_t_interval_around_the_mean() -> None:
    from scipy import stats

    rows = aggregate([{"fid": 1.0}, {"fid": 2.0}, {"fid": 3.0}])
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert rows[0]["value"] == 2.0 and rows[0]["ci_low"] == pytest.approx(2 - half)
    assert rows[0]["ci_high"] == pytest.approx(2 + half) and rows[0]["n_sets"] == 3
    single = aggregate([{"fid": 5.0}])
    assert single[0]["ci_low"] is None and single[0]["value"] == 5.0


def test_identical_sets_are_perfect_and_shifted_sets_are_worse() -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(size=(50, 6))
    same = feature_metric_rows(real, [real.copy(), real.copy()], FidelityOptions())
    by = {r["metric"]: r for r in same}
    assert by["fid"]["value"] == pytest.approx(0, abs=1e-6)
    assert by["precision"]["value"] == 1.0 and by["recall"]["value"] == 1.0 and by["coverage"]["value"] == 1.0
    shifted = {r["metric"]: r for r in feature_metric_rows(real, [real + 3.0], FidelityOptions())}
    assert shifted["fid"]["value"] > 8 and shifted["precision"]["value"] < 0.5
    assert shifted["fid"]["note"] == ""  # 50 samples in 6 dims is not rank-deficient


def test_run_folder_and_sampled_folder_give_the_same_images(tiny3d: Path, tmp_path: Path) -> None:
    cfg = load_config("sngan", ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8",
                                "train.iterations=1", "train.n_preview=2"])
    run = train(cfg, tiny3d, tmp_path / "run", progress=False)
    folder = sample(run, 3, tmp_path / "s", seed=5, progress=False)
    a = load_synthetic(run, 3, seed=5, device="cpu")
    b = load_synthetic(folder, 3)
    np.testing.assert_allclose(a.images, b.images, atol=1e-6)
    assert a.provenance["checkpoint_sha256"] == b.provenance["checkpoint_sha256"]
    assert a.train_subject_ids and len(a.train_subject_ids) == 6
