"""Fidelity metrics over several synthetic sets, and loading synthetic cohorts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthmed.config import load_config
from synthmed.evaluate.fidelity import FidelityOptions, feature_metric_rows, metric_values, n_replicates
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


def test_bootstrap_interval_covers_the_known_answer() -> None:
    """Real N(0, I) and synthetic N(delta, I) in 2-D: the population FID and linear MMD^2 are both |delta|^2 = 1.
    Over 120 independent toy problems (one synthetic set each, so no t-interval could exist), the 95%
    bootstrap intervals over real and synthetic together cover 1 about 95% of the time; with the real set
    held fixed (the old interval's assumption) they would be too narrow."""
    from synthmed.metrics.stats import bootstrap_sets

    def metrics(r: np.ndarray, f: np.ndarray) -> dict[str, float]:
        return {"fid": float(fm.fid(r, f)), "mmd_linear": float(fm.mmd_linear(r, f))}

    hits = {"fid": 0, "mmd_linear": 0}
    widths = []
    reps = 120
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        real, fake = rng.normal(size=(80, 2)), rng.normal(size=(80, 2)) + np.array([1.0, 0.0])
        res = bootstrap_sets(metrics, real, [fake], n_boot=60, seed=seed, bounds={"fid": (0.0, None)})
        for k in hits:
            hits[k] += res[k].low <= 1.0 <= res[k].high
            assert res[k].low <= res[k].value <= res[k].high
        widths.append(res["mmd_linear"].high - res["mmd_linear"].low)
    for k, h in hits.items():
        assert 0.88 <= h / reps <= 0.995, (k, h / reps)
    # the width matches the true sampling spread: sd of |mean_x - mean_y|^2 ~ 2 |delta| sqrt(2/80) = 0.32
    assert 0.8 < np.mean(widths) / (2 * 1.96 * 0.316) < 1.25


def test_intervals_exist_with_one_set_and_respect_the_metric_range() -> None:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(40, 4))
    rows = {r["metric"]: r for r in feature_metric_rows(real, [real.copy()], FidelityOptions(n_boot=30))}
    for name, r in rows.items():
        assert r["ci_low"] is not None and r["ci_low"] <= r["value"] <= r["ci_high"], name
        assert r["se"] >= 0 and r["n_sets"] == 1 and r["n_boot"] == 30
    assert rows["coverage"]["value"] == 1.0 and rows["coverage"]["ci_high"] == 1.0  # clipped, not 1.007
    assert rows["precision"]["ci_high"] <= 1.0 and rows["fid"]["ci_low"] >= 0.0
    assert n_replicates(100, 1) == 100 and n_replicates(100, 10) == 50 and n_replicates(100, 40) == 25


def test_mmd_rbf_uses_one_kernel_width_from_the_real_data() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(60, 5))
    near, far = rng.normal(size=(60, 5)) + 0.2, rng.normal(size=(60, 5)) * 4.0
    opts = FidelityOptions(n_boot=25)
    bw = {name: next(r for r in feature_metric_rows(real, [f], opts) if r["metric"] == "mmd_rbf")["bandwidth"]
          for name, f in (("near", near), ("far", far))}
    assert bw["near"] == bw["far"] == pytest.approx(fm.median_heuristic(real))


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
    # a sampled folder knows its run's training subjects (sample.json names the run; issue 14)
    assert b.train_subject_ids == a.train_subject_ids and b.ids == [f"synthetic_{i:05d}.nii.gz" for i in range(3)]
    import json

    meta = json.loads((folder / "sample.json").read_text(encoding="utf-8"))
    assert meta["run"] == str(run.resolve())
    del meta["run"]  # a folder sampled before the run was recorded: found through its checkpoint's path
    (folder / "sample.json").write_text(json.dumps(meta), encoding="utf-8")
    assert load_synthetic(folder, 3).train_subject_ids == a.train_subject_ids
    meta["checkpoint"] = str(tmp_path / "gone" / "checkpoints" / "last.pt")  # the run was moved away
    (folder / "sample.json").write_text(json.dumps(meta), encoding="utf-8")
    assert load_synthetic(folder, 3).train_subject_ids is None
