"""Per-class feature metrics of `synthmed evaluate` (paper 000 Fig. 4: each clinical group separately):
recomputed independently from the extracted features split by class; unlabelled sources give none;
a class too small for the k-NN metrics is skipped with its reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from synthmed.data.prepared import load_prepared
from synthmed.evaluate.fidelity import FidelityOptions, make_extractor
from synthmed.evaluate.runner import EvaluateOptions, evaluate
from synthmed.evaluate.synthetic import load_sampled_folder
from synthmed.features.cache import cached_features
from synthmed.metrics import feature as fm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utility"))
from utility_helpers import blob_images, write_sampled_folder  # noqa: E402

N = 24  # real images (12 per class)


def _opts(**kw) -> EvaluateOptions:
    base = dict(n_sets=3, fidelity=FidelityOptions(extractor_iterations=10, n_boot=25), progress=False,
                screenshot=False, privacy=False, image_metrics=False, embeddings=(), split="all")
    base.update(kw)
    return EvaluateOptions(**base)


@pytest.fixture(scope="module")
def prep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synth_testdata import make_tiny_prepared

    return make_tiny_prepared(tmp_path_factory.mktemp("pc") / "prep", 2, 16, N)


def _folder(path: Path, labels: list[int] | None, seed: int = 5) -> Path:
    lab = labels if labels is not None else [i % 2 for i in range(3 * N)]
    images = np.concatenate([blob_images(1, c, 2, 16, seed=seed + i) for i, c in enumerate(lab)])
    return write_sampled_folder(path, images, labels)


def _results(html: Path) -> dict:
    return json.loads((html.parent / "metrics.json").read_text(encoding="utf-8"))


def _row(rows: list[dict], metric: str) -> dict:
    return next(r for r in rows if r["metric"] == metric)


@pytest.mark.filterwarnings("ignore:FID on")
def test_per_class_metrics_match_an_independent_recomputation(prep: Path, tmp_path: Path) -> None:
    labels = [0, 1, 1] * N  # 24 per class over three sets of 24 (8 of class a, 16 of class b per set)
    folder = _folder(tmp_path / "syn", labels)
    opts = _opts()
    m = _results(evaluate(prep, folder, tmp_path / "rep", opts))
    src = m["results"]["sources"]["syn"]
    per = src["per_class_feature_metrics"]
    assert set(per) == {"a", "b"} and src["per_class_skipped"] == {}
    assert [r["metric"] for r in per["a"]] == [r["metric"] for r in src["feature_metrics"]]

    # independent recomputation: the same extractor (the cached in-domain weights), features split by class
    ds = load_prepared(prep)
    ext = make_extractor(ds, opts.fidelity)
    real = cached_features(ext, np.asarray(ds.images, dtype=np.float32), tmp_path / "f", "real", batch_size=8)
    syn = load_sampled_folder(folder)
    fake = cached_features(ext, syn.images, tmp_path / "f", "fake", batch_size=8)
    lab = np.asarray(labels)
    for c, name in enumerate(["a", "b"]):
        rc = real[ds.labels == c]
        sets = [fake[k * N:(k + 1) * N][lab[k * N:(k + 1) * N] == c] for k in range(3)]
        fid = [fm.fid(rc, f).value for f in sets]
        prec = [fm.precision_recall(rc, f, k=3).precision for f in sets]
        cov = [fm.density_coverage(rc, f, k=5).coverage for f in sets]
        row = _row(per[name], "fid")
        assert row["n_sets"] == 3
        np.testing.assert_allclose(row["per_set"], fid, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(row["value"], np.mean(fid), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_row(per[name], "precision")["per_set"], prec, atol=1e-9)
        np.testing.assert_allclose(_row(per[name], "coverage")["per_set"], cov, atol=1e-9)
    # per class differs from the pooled metrics
    assert not np.isclose(_row(per["a"], "fid")["value"], _row(src["feature_metrics"], "fid")["value"])
    # the report table
    sec = next(s for s in m["sections"] if s["title"] == "Fidelity and diversity per class")
    table = next(b for b in sec["blocks"] if b["type"] == "table")
    assert [r[:3] for r in table["rows"]] == [["syn", "a", 3], ["syn", "b", 3]]


def test_unlabelled_source_has_no_per_class_block(prep: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "plain", None)
    m = _results(evaluate(prep, folder, tmp_path / "rep", _opts(n_sets=1)))
    src = m["results"]["sources"]["plain"]
    assert "feature_metrics" in src and "per_class_feature_metrics" not in src and "per_class_skipped" not in src
    assert not any(s["title"] == "Fidelity and diversity per class" for s in m["sections"])


def test_too_small_class_is_skipped_with_its_reason(prep: Path, tmp_path: Path) -> None:
    # every set of 24: 3 of class b, 21 of class a; the k-NN metrics need max(3, 5) + 1 = 6 per class
    labels = ([1] * 3 + [0] * 21) * 2
    folder = _folder(tmp_path / "few", labels)
    html = evaluate(prep, folder, tmp_path / "rep", _opts(n_sets=2))
    src = _results(html)["results"]["sources"]["few"]
    assert set(src["per_class_feature_metrics"]) == {"a"}
    why = src["per_class_skipped"]["b"]
    assert "3 to 3 synthetic" in why and "at least 6" in why
    text = html.read_text(encoding="utf-8")
    assert "Fidelity and diversity per class" in text and "few, class b: skipped" in text


def test_conditional_run_folder_sets_carry_labels(prep: Path, tmp_path: Path) -> None:
    """A conditional run sampled on the fly: sample with seed s has class s mod K (generate_batch's default)."""
    from synthmed.config import load_config
    from synthmed.evaluate.runner import _source_sets
    from synthmed.train.loop import train

    tiny = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
            "train.n_preview=2", "train.sample_every=100", "train.checkpoint_every=100", "model.conditioning=ac"]
    run = train(load_config("sngan", tiny), prep, tmp_path / "run", progress=False)
    opts = _opts(n_sets=2)
    sets = list(_source_sets(run, 2, N, opts, load_prepared(prep)))
    assert all(whole for _, whole in sets)
    assert [s.labels.tolist() for s, _ in sets] == [[s % 2 for s in range(k * N, (k + 1) * N)] for k in range(2)]
    m = _results(evaluate(prep, run, tmp_path / "rep", opts))
    assert set(m["results"]["sources"]["run"]["per_class_feature_metrics"]) == {"a", "b"}
