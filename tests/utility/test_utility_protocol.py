"""The utility protocol end to end on tiny data: real-only validation/test, resume, sources, SVM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from utility_helpers import blob_images, make_cohort, write_sampled_folder

import synthmed.utility.training as training
from synthmed.errors import ConfigError, SynthmedError
from synthmed.utility import build_utility_config, run_utility
from synthmed.utility.runner import load_cohort

MARK = 0.777  # written into voxel [0, 0, 0] of every synthetic image: never found in real images


def _sources(root: Path, n: int = 40) -> dict[str, str]:
    out = {}
    for label, name in enumerate("ab"):
        imgs = blob_images(n, label, seed=50 + label)
        imgs[:, 0, 0, 0, 0] = MARK
        out[name] = str(write_sampled_folder(root / f"syn_{name}", imgs))
    return out


def _config(prep: Path, synthetic: dict[str, str] | str | None, **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "data": {"path": str(prep)}, "synthetic": synthetic, "folds": 3,
        "compositions": ["real", "augmented", "mixed-small", "synthetic-small", "mixed-large"],
        "classifier": {"name": "diagnosis-cnn", "channels": [2, 4], "hidden": [8]},
        "train": {"lr": 1e-3, "max_epochs": 2, "batch_size": 6},
        "occlusion": {"compare": ["real", "synthetic-small"], "n_images": 2, "mask_size": 8},
    }
    for k, v in extra.items():
        merge = isinstance(v, dict) and isinstance(raw.get(k), dict) and k != "classifier"
        raw[k] = {**raw[k], **v} if merge else v
    return build_utility_config(raw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("utility")
    return make_cohort(root / "prep", 30), _sources(root)


def test_validation_and_test_sets_are_real_only(tiny: tuple[Path, dict[str, str]], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    prep, syn = tiny
    cfg = _config(prep, syn)
    cohort = load_cohort(cfg)
    seen_val, seen_pred = [], []
    real_loss, real_pred = training.mean_loss, training.predict_scores

    def spy_loss(model: Any, images: np.ndarray, *a: Any, **k: Any) -> float:
        seen_val.append(np.array(images))
        return real_loss(model, images, *a, **k)

    def spy_pred(model: Any, images: np.ndarray, *a: Any, **k: Any) -> np.ndarray:
        seen_pred.append(np.array(images))
        return real_pred(model, images, *a, **k)

    monkeypatch.setattr(training, "mean_loss", spy_loss)
    monkeypatch.setattr(training, "predict_scores", spy_pred)
    html = run_utility(cfg, tmp_path / "out", progress=False)
    assert html.is_file() and (tmp_path / "out" / "metrics.json").is_file()
    real_rows = {cohort.images[i].tobytes() for i in range(len(cohort.ids))}
    assert seen_val and all(img.tobytes() in real_rows for batch in seen_val for img in batch)
    synthetic_tests = [b for b in seen_pred if (b[:, 0, 0, 0, 0] == MARK).all()]
    real_tests = [b for b in seen_pred if not (b[:, 0, 0, 0, 0] == MARK).any()]
    assert len(real_tests) + len(synthetic_tests) == len(seen_pred)  # never a mix
    assert all(img.tobytes() in real_rows for batch in real_tests for img in batch)
    assert len(synthetic_tests) == 3  # Delta_syn: synthetic-small in each of 3 folds
    # each fold tests on exactly its partition's test subjects
    part = json.loads((tmp_path / "out" / "partition.json").read_text(encoding="utf-8"))
    for k, fold in enumerate(part["folds"]):
        rec = json.loads((tmp_path / "out" / "folds" / "real" / f"fold{k}.json").read_text(encoding="utf-8"))
        assert rec["n_test"] == len(fold["test"]) and rec["n_val"] == len(fold["val"])
        assert set(fold["test"]).isdisjoint(fold["train"]) and set(fold["val"]).isdisjoint(fold["train"])
    # training-set sizes per Table 1 rules: 10 real training subjects per fold, 5 per class
    rec = json.loads((tmp_path / "out" / "folds" / "mixed-large" / "fold0.json").read_text(encoding="utf-8"))
    assert rec["counts"] == {"real": {"a": 5, "b": 5}, "synthetic": {"a": 25, "b": 25}}
    rec = json.loads((tmp_path / "out" / "folds" / "mixed-small" / "fold0.json").read_text(encoding="utf-8"))
    assert rec["counts"] == {"real": {"a": 3, "b": 3}, "synthetic": {"a": 2, "b": 2}}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["results"]
    assert set(metrics["summary"]["intervals"]["accuracy"]) == set(cfg.compositions)
    assert "delta_syn" in metrics["summary"] and "synthetic-small" in metrics["summary"]["delta_syn"]
    text = html.read_text(encoding="utf-8")
    for words in ("Utility: statistics", "AUC_real - AUC_syn", "occlusion", "Table 1"):
        assert words in text
    header = (tmp_path / "out" / "per_fold_metrics.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("composition,fold,") and "balanced_accuracy" in header and "delta_syn" in header


def test_resume_after_a_crash_matches_a_straight_run(tiny: tuple[Path, dict[str, str]], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    prep, syn = tiny
    cfg = _config(prep, syn, compositions=["real", "mixed-small"], occlusion={"enabled": False})
    straight = tmp_path / "straight"
    run_utility(cfg, straight, progress=False)

    import synthmed.utility.runner as runner

    calls = {"n": 0}
    real_run_fold = runner.run_fold

    def crashing(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real_run_fold(*a, **k)

    monkeypatch.setattr(runner, "run_fold", crashing)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_utility(cfg, crashed, progress=False)
    assert len(list((crashed / "folds").rglob("fold*.json"))) == 3 and not (crashed / "report.html").exists()
    with pytest.raises(SynthmedError, match="--resume"):
        run_utility(cfg, crashed, progress=False)
    calls["n"] = -100  # no more crashes
    run_utility(cfg, crashed, resume=True, progress=False)
    assert calls["n"] == -100 + 3  # only the 3 unfinished (composition, fold)s ran
    assert _without_seconds(crashed) == _without_seconds(straight)
    changed = _config(prep, syn, compositions=["real", "mixed-small"], occlusion={"enabled": False},
                      train={"lr": 2e-3})
    with pytest.raises(SynthmedError, match="differing: train"):
        run_utility(changed, crashed, resume=True, progress=False)


def _without_seconds(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "per_fold_metrics.csv", newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_run_folder_sources_infinite_and_class_check(tmp_path: Path) -> None:
    from synthmed.config import load_config
    from synthmed.train.loop import train

    prep = make_cohort(tmp_path / "prep", 18)
    runs = {}
    for name in "ab":
        cfg = load_config("alpha_sngan", ["train.iterations=1", f"train.label={name}", "train.subset=all",
                                          "model.latent_dim=8", "model.base_channels=4", "model.max_channels=8",
                                          "model.code_hidden_dim=8", "train.n_preview=1"])
        runs[name] = str(train(cfg, prep, tmp_path / f"run_{name}", progress=False))
        assert json.loads((tmp_path / f"run_{name}" / "data.json").read_text(encoding="utf-8"))["n_train"] == 9
    cfg = _config(prep, runs, compositions=["synthetic-small", "synthetic-infinite"], run_folds=[0],
                  train={"infinite_max_iterations": 4, "infinite_eval_every": 2, "batch_size": 4}, occlusion={"enabled": False})
    run_utility(cfg, tmp_path / "out", progress=False)
    rec = json.loads((tmp_path / "out" / "folds" / "synthetic-infinite" / "fold0.json").read_text(encoding="utf-8"))
    assert rec["fit"]["iterations"] == 4 and rec["counts"]["synthetic"] == {"a": -1, "b": -1}
    assert rec["generator_overlap"]["test"] > 0  # the generators saw every subject: reported
    assert "Caution: the generators were trained on subjects" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    swapped = _config(prep, {"a": runs["b"], "b": runs["a"]}, compositions=["synthetic-small"])
    with pytest.raises(ConfigError, match="trained on class 'b'"):
        run_utility(swapped, tmp_path / "out2", progress=False)


def test_svm_gan_train_and_labelled_single_source(tmp_path: Path) -> None:
    prep = make_cohort(tmp_path / "prep", 24)
    imgs = np.concatenate([blob_images(20, 0, seed=1), blob_images(20, 1, seed=2)])
    folder = write_sampled_folder(tmp_path / "labelled", imgs, [0] * 20 + [1] * 20)
    cfg = _config(prep, str(folder), compositions=["real", "synthetic-small"], run_folds=[0, 1],
                  classifier={"name": "svm", "extractor_iterations": 5}, occlusion={"enabled": False})
    run_utility(cfg, tmp_path / "out", progress=False)
    rec = json.loads((tmp_path / "out" / "folds" / "synthetic-small" / "fold1.json").read_text(encoding="utf-8"))
    assert {"sensitivity", "specificity", "harmonic_mean"} <= set(rec["metrics"])
    assert rec["fit"]["extractor"]["name"] == "indomain-ae" and (tmp_path / "out" / "extractors" / "fold1.pt").is_file()
    with pytest.raises(ConfigError, match="needs a network classifier"):
        _config(prep, str(folder), compositions=["synthetic-infinite"], classifier={"name": "svm"})


def test_bad_sources_are_clear_errors(tiny: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    prep, syn = tiny
    with pytest.raises(ConfigError, match="no class 'c'"):
        run_utility(_config(prep, {**syn, "c": syn["a"]}), tmp_path / "o1", progress=False)
    with pytest.raises(ConfigError, match="no synthetic source for class"):
        run_utility(_config(prep, {"a": syn["a"]}), tmp_path / "o2", progress=False)
    with pytest.raises(ConfigError, match="needs labels"):
        run_utility(_config(prep, syn["a"]), tmp_path / "o3", progress=False)
    with pytest.raises(ConfigError, match="need synthetic data"):
        _config(prep, None)
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))  # nothing written on bad input
