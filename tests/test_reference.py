"""``synthmed reference`` (issue 13, reference runs): the CLI end to end on tiny data, resume, the floor,
the copy-flag rule and the VAE reconstruction ratio on known answers, and the error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from synth_testdata import make_tiny_prepared

from synthmed import reference as ref
from synthmed.cli import main
from synthmed.config import CONFIG_DIR, load_config
from synthmed.io_utils import sha256_file

#: tiny networks and two iterations (as tests/train/test_training.py's TINY)
TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.iterations=2",
        "train.batch_size=4"]
FAST = ["--n-sets", "2", "--extractor-iterations", "3", "--batch-size", "16", "--device", "cpu", "--no-progress"]
RESULT_KEYS = {"name", "dataset", "model", "config", "iterations", "training", "threads", "feature_space", "metrics",
               "floor", "fid_ratio", "per_class", "memorisation", "vae", "warnings", "targets", "samples_png"}


def _sets(*overrides: str) -> list[str]:
    return [a for o in (*TINY, *overrides) for a in ("--set", o)]


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Reference configs of the tests' own (the shipped ones may change): ``breastmnist-sngan`` and
    ``adrenal28-vae`` from the shipped sngan / vae configs."""
    folder = tmp_path / "reference_configs"
    folder.mkdir()
    shutil.copy(CONFIG_DIR / "sngan.yaml", folder / "breastmnist-sngan.yaml")
    shutil.copy(CONFIG_DIR / "vae.yaml", folder / "adrenal28-vae.yaml")
    monkeypatch.setattr(ref, "REFERENCE_DIR", folder)
    return folder


@pytest.fixture
def prep2d(tmp_path: Path) -> Path:
    """48 labelled 16x16 images: a test split of 12 (6 per class, enough for k-NN with k = 5)."""
    return make_tiny_prepared(tmp_path / "prep2d", 2, 16, 48)


@pytest.fixture
def prep3d(tmp_path: Path) -> Path:
    """32 labelled 16^3 volumes: a test split of 8 (4 per class: too few for per-class k-NN)."""
    return make_tiny_prepared(tmp_path / "prep3d", 3, 16, 32)


def test_run_resume_floor_and_table(configs: Path, prep2d: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    argv = ["reference", "run", "breastmnist-sngan", "--work", str(work), "--data", str(prep2d), *FAST,
            *_sets("model.conditioning=projection")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for word in ("precision", "recall", "FID ratio", "copies", "targets met", "floor"):
        assert word in out
    run = work / "runs" / "breastmnist-sngan"
    result = json.loads((run / "reference" / "result.json").read_text(encoding="utf-8"))
    assert RESULT_KEYS <= set(result)
    assert (result["name"], result["dataset"], result["model"]) == ("breastmnist-sngan", "breastmnist", "sngan")
    assert result["iterations"] == {"configured": 2, "trained": 2}
    assert result["training"]["trained_in_this_call"] and result["training"]["seconds"] > 0
    assert result["threads"]["torch_threads"] >= 1
    assert result["config"]["sha256"] == sha256_file(configs / "breastmnist-sngan.yaml")
    assert result["set_size"] == 12 and result["n_sets"] == 2
    assert {r["metric"] for r in result["metrics"]} >= {"fid", "kid", "precision", "recall", "density", "coverage"}
    assert all(r["n_sets"] == 2 and r["ci_low"] is not None for r in result["metrics"])
    assert set(result["targets"]) == {"precision", "recall", "fid_ratio", "copies"}
    for t in result["targets"].values():
        assert set(t) >= {"value", "threshold", "met", "shortfall"}
        assert t["met"] == (t["shortfall"] == 0)
    assert result["memorisation"]["n_synthetic"] == 24 and result["memorisation"]["n_holdout"] == 12
    assert result["vae"] is None
    # a conditional run: per-class metrics, synthetic sets in the test split's class proportions (6 + 6)
    assert set(result["per_class"]["metrics"]) == {"a", "b"}
    assert (run / "reference" / "samples.png").is_file()

    # the floor is feature_metric_rows of the same seeded trainval subsets against the test features
    from synthmed.data.prepared import load_prepared
    from synthmed.evaluate.fidelity import FidelityOptions, feature_metric_rows, make_extractor
    from synthmed.features.base import extract_features

    ds = load_prepared(prep2d)
    fo = FidelityOptions(extractor_iterations=3, progress=False)
    feats = extract_features(make_extractor(ds, fo), ds.images, progress=False)
    test, trainval = ds.indices("test"), ds.indices("trainval")
    subsets = ref.floor_subsets(trainval, len(test), 2, seed=0)
    assert all(len(s) == len(test) and len(set(s.tolist())) == len(test) and set(s) <= set(trainval) for s in subsets)
    by_hand = {r["metric"]: r["value"] for r in feature_metric_rows(feats[test], [feats[s] for s in subsets], fo)}
    floor = {r["metric"]: r["value"] for r in result["floor"]["metrics"]}
    assert floor == pytest.approx(by_hand, rel=1e-5, abs=1e-6)
    fid = {r["metric"]: r["value"] for r in result["metrics"]}["fid"]
    assert result["fid_ratio"] == pytest.approx(fid / floor["fid"])

    # a second call keeps the finished run: no retraining, the checkpoint is unchanged
    ckpt = run / "checkpoints" / "last.pt"
    before = (sha256_file(ckpt), ckpt.stat().st_mtime_ns)
    assert main(argv) == 0
    assert (sha256_file(ckpt), ckpt.stat().st_mtime_ns) == before
    again = json.loads((run / "reference" / "result.json").read_text(encoding="utf-8"))
    assert not again["training"]["trained_in_this_call"]
    assert again["metrics"] == result["metrics"]  # same seeds, same samples, same numbers
    assert again["truncation"] is None and again["metrics_untruncated"] is None
    capsys.readouterr()

    # sampling with the truncation trick keeps the trained run (sample.* is not part of its fingerprint);
    # the untruncated numbers beside it are those of the same seeds without truncation, i.e. the first call's
    assert main([*argv, "--set", "sample.truncation=0.5"]) == 0
    assert (sha256_file(ckpt), ckpt.stat().st_mtime_ns) == before
    cut = json.loads((run / "reference" / "result.json").read_text(encoding="utf-8"))
    assert cut["truncation"] == 0.5 and cut["metrics_untruncated"] == result["metrics"]
    assert cut["metrics"] != result["metrics"]
    assert "truncation psi = 0.5" in capsys.readouterr().out

    # the table: one row per run, with a link to its picture relative to the table file
    table = tmp_path / "docs" / "results.md"
    assert main(["reference", "table", str(work), "--out", str(table)]) == 0
    rows = [line for line in table.read_text(encoding="utf-8").splitlines() if line.startswith("| breastmnist")]
    assert len(rows) == 1 and "](../work/runs/breastmnist-sngan/reference/samples.png)" in rows[0]
    assert main(["reference", "table", str(work)]) == 0
    assert capsys.readouterr().out.count("| breastmnist-sngan (truncation 0.5) |") == 1


def test_vae_run_3d(configs: Path, prep3d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    assert main(["reference", "run", "adrenal28-vae", "--work", str(work), "--data", str(prep3d), *FAST,
                 *_sets("model.conditioning=cvae")]) == 0
    out = capsys.readouterr().out
    assert "final KL" in out and "recon" in out and "skipped" in out
    result = json.loads((work / "runs" / "adrenal28-vae" / "reference" / "result.json").read_text(encoding="utf-8"))
    vae = result["vae"]
    assert vae["recon_ratio"] > 0 and vae["final_kl_nats"] is not None and vae["n_images"] == 8
    assert {"recon_ratio", "final_kl"} <= set(result["targets"])
    # 4 test images per class: too few for k-NN (k = 5), skipped with the reason
    assert result["per_class"]["metrics"] == {}
    assert all("need at least 6" in why for why in result["per_class"]["skipped"].values())
    assert (work / "runs" / "adrenal28-vae" / "reference" / "samples.png").is_file()
    assert result["prior"] == "standard" and result["metrics_standard_prior"] is None

    # the gmm prior (ex-post density estimation) keeps the trained run; the standard-prior numbers beside it
    # are those of the same seeds from N(0, I), i.e. the first call's
    assert main(["reference", "run", "adrenal28-vae", "--work", str(work), "--data", str(prep3d), *FAST,
                 *_sets("model.conditioning=cvae", "sample.prior=gmm", "sample.prior_components=2")]) == 0
    assert "sampled from the gmm prior (2 components" in capsys.readouterr().out
    gmm = json.loads((work / "runs" / "adrenal28-vae" / "reference" / "result.json").read_text(encoding="utf-8"))
    assert not gmm["training"]["trained_in_this_call"]
    assert gmm["prior"] == "gmm" and gmm["prior_components"] == 2
    assert gmm["metrics_standard_prior"] == result["metrics"] and gmm["metrics"] != result["metrics"]
    assert gmm["prior_fit"]["per_class"] and set(gmm["prior_fit"]["fits"]) == {"0", "1"}
    assert gmm["prior_fit"]["n_codes"] == 24  # the 24 trainval volumes it was trained on
    assert gmm["memorisation"]["n_synthetic"] == 16  # the copy check is of the gmm samples
    row = ref.table_row(gmm, "x")
    assert row[0] == "adrenal28-vae (gmm prior)"


def test_copy_flag_rule_known_answer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 0.3, (20, 1, 8, 8))
    holdout = rng.normal(0, 0.3, (10, 1, 8, 8))
    far = np.full((1, 1, 8, 8), 5.0)
    synthetic = np.concatenate([train[[3]], far, train[[7]] + 1e-9, rng.normal(0, 0.3, (1, 1, 8, 8))])
    res = ref.copy_flags(synthetic, train, holdout)
    assert res["flagged"] == [0, 2]  # the planted copies; the far-away sample is not flagged
    assert res["n_flagged"] == 2 and res["fraction_flagged"] == pytest.approx(0.5)
    assert list(res["nearest_train"][[0, 2]]) == [3, 7]
    assert res["threshold"] == pytest.approx(
        min(np.sqrt(((train - h) ** 2).sum(axis=(1, 2, 3))).min() for h in holdout))
    m, h = 4, 10
    assert res["chance_rate"] == pytest.approx(1 / (h + 1)) and res["expected_by_chance"] == pytest.approx(m / (h + 1))
    assert res["p_value"] == pytest.approx(m / (m + h) * (m - 1) / (m + h - 1))
    assert res["p_no_flag_without_memorisation"] == pytest.approx(h / (h + m))
    # a held-out image identical to a training image (the dataset's own leakage) does not set the threshold
    dup = ref.copy_flags(synthetic, train, np.concatenate([holdout, train[[5]]]))
    assert dup["n_holdout_duplicates"] == 1 and dup["n_holdout"] == h and dup["flagged"] == [0, 2]
    assert dup["threshold"] == pytest.approx(res["threshold"])
    # the picture of the flagged samples
    memo = {**res}
    extra = ref._copies_figure(memo, synthetic.astype(np.float32), train.astype(np.float32), np.arange(20) + 100, 2,
                               tmp_path)
    assert extra["copies_png"] == "copies.png" and (tmp_path / "copies.png").is_file()
    assert [(f["set"], f["index"], f["nearest_train_row"]) for f in extra["flagged_samples"]] == [(0, 0, 103),
                                                                                                  (1, 0, 107)]


def test_reconstruction_ratio_known_answer() -> None:
    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(0, 0.4, (6, 1, 8, 8)), -1, 1).astype(np.float32)
    mean = x.mean(axis=0)
    assert ref.reconstruction_ratio(x, x, mean)["ratio"] == pytest.approx(0.0)
    assert ref.reconstruction_ratio(x, np.broadcast_to(mean, x.shape), mean)["ratio"] == pytest.approx(1.0)
    assert ref.reconstruction_ratio(x, (x + mean) / 2, mean)["ratio"] == pytest.approx(0.25)  # half the error


def test_training_seconds_and_final_kl(tmp_path: Path) -> None:
    rows = ["step,loss_kl,sec_per_it,diversity"]
    rows += [f"{s},{s},{0.5 if s <= 6 else 1.0}," for s in range(2, 13, 2)]  # timed every 2 iterations
    rows.insert(3, "5,,,0.9")  # a preview row between two log rows has no timing
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "run.json").write_text(json.dumps({"started": "2026-01-01T10:00:00",
                                                   "finished": "2026-01-01T10:01:30"}), encoding="utf-8")
    t = ref.training_seconds(tmp_path)
    assert t["seconds"] == pytest.approx(3 * 2 * 0.5 + 3 * 2 * 1.0) and t["seconds_run_json"] == 90.0
    assert ref.final_kl(tmp_path, last=3) == pytest.approx((8 + 10 + 12) / 3)
    assert ref.final_kl(tmp_path / "missing") is None


def test_targets_shortfall() -> None:
    t = ref.check_targets({"precision": 0.5, "recall": 0.7}, 2.0, 3, {"recon_ratio": 0.25, "final_kl_nats": 0.2})
    assert (t["precision"]["met"], t["precision"]["shortfall"]) == (False, pytest.approx(0.1))
    assert (t["recall"]["met"], t["recall"]["shortfall"]) == (True, 0.0)
    assert t["fid_ratio"]["met"] and t["recon_ratio"]["met"]
    assert (t["copies"]["met"], t["copies"]["shortfall"]) == (False, 3.0)
    assert (t["final_kl"]["met"], t["final_kl"]["shortfall"]) == (False, pytest.approx(0.8))
    missing = ref.check_targets({}, None, 0, None)["fid_ratio"]  # e.g. a floor FID of 0
    assert missing["met"] is False and missing["shortfall"] is None


def test_errors_are_one_clear_line(configs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reference", "run", "nosuch-run", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and "nosuch-run" in err and "breastmnist-sngan" in err
    missing = tmp_path / "no_data"
    assert main(["reference", "run", "breastmnist-sngan", "--work", str(tmp_path / "w"), "--data-root",
                 str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing / "medmnist" / "breastmnist.npz") in err
    assert not (tmp_path / "w").exists()
    assert main(["reference", "table", str(tmp_path)]) == 2
    assert "no reference/result.json" in capsys.readouterr().err


def test_list_and_shipped_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reference", "list", "--data-root", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    for key in ref.DATASETS:
        assert key in out
    assert "MISSING" in out
    for name, path in ref.reference_configs().items():  # every shipped reference config loads, on a known dataset
        assert name in out
        load_config(path)
        assert ref.resolve_reference(name)[1].key == name.split("-")[0]


@pytest.mark.parametrize("name", sorted(ref.reference_configs()))
def test_every_reference_config_trains_two_steps(name: str, tiny2d: Path, tiny3d: Path, tmp_path: Path) -> None:
    """Issue 13: each shipped reference config parses and trains two steps (its own sizes, tiny data of its
    dataset's dimensionality; the real runs are benchmarks in docs/results.md)."""
    from synthmed.config import load_config
    from synthmed.train.checkpoint import load_checkpoint
    from synthmed.train.loop import train

    path, dataset = ref.resolve_reference(name)
    data = tiny3d if dataset.spatial_dims == 3 else tiny2d
    cfg = load_config(path, ["train.iterations=2", "train.n_preview=2", "train.batch_size=4"])
    run = train(cfg, data, tmp_path / "run", progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
