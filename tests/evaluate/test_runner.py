"""`synthmed evaluate` end to end on tiny data: report contents, invariants, memorisation, CLI errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.data.prepared import load_prepared
from synthmed.evaluate.fidelity import FidelityOptions
from synthmed.evaluate.runner import EvaluateOptions, evaluate
from synthmed.generate.sample import sample
from synthmed.generate.writers import write_nifti
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
        "train.n_preview=2", "model.code_hidden_dim=16"]


def _opts(**kw) -> EvaluateOptions:
    base = dict(n_sets=3, fidelity=FidelityOptions(extractor_iterations=10), progress=False, screenshot=False,
                ssim_queries=4)
    base.update(kw)
    return EvaluateOptions(**base)


@pytest.fixture
def prep(tmp_path: Path) -> Path:
    from synth_testdata import make_tiny_prepared

    return make_tiny_prepared(tmp_path / "prep", 3, 16, 12)


@pytest.fixture
def run(prep: Path, tmp_path: Path) -> Path:
    return train(load_config("alpha_sngan", TINY), prep, tmp_path / "run", progress=False)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _feature(m: dict, source: str, metric: str) -> dict:
    return next(r for r in m["results"]["sources"][source]["feature_metrics"] if r["metric"] == metric)


def _copies_folder(ds_path: Path, rows: np.ndarray, out: Path) -> Path:
    """A `synthmed sample`-style folder whose images are exact copies of real rows."""
    ds = load_prepared(ds_path)
    out.mkdir()
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "seed"])
        for k, r in enumerate(rows):
            write_nifti(np.asarray(ds.images[r, 0]), ds.affine, out / f"copy_{k:03d}.nii.gz")
            w.writerow([f"copy_{k:03d}.nii.gz", "", k])
    return out


def test_run_folder_report(prep: Path, run: Path, tmp_path: Path) -> None:
    html = evaluate(prep, run, tmp_path / "rep", _opts())
    out = html.parent
    assert html.is_file() and "<html" in html.read_text(encoding="utf-8")[:200].lower()
    m = _metrics(out)
    res = m["results"]
    assert res["real"]["n"] == 12 and res["feature_space"]["name"] == "indomain-ae"
    assert res["feature_space"]["weights_sha256"] and len(res["feature_space"]["weights_sha256"]) == 64
    fid = _feature(m, "run", "fid")
    assert fid["n_sets"] == 3 and len(fid["per_set"]) == 3
    assert fid["ci_low"] <= fid["value"] <= fid["ci_high"]
    assert np.isclose(fid["value"], np.mean(fid["per_set"]))
    assert res["sources"]["run"]["set_sizes"] == [12, 12, 12]
    # privacy: the run's own training subjects vs every other subject
    data = json.loads((run / "data.json").read_text(encoding="utf-8"))
    priv = res["sources"]["run"]["privacy"]
    assert priv["n_train"] == len(data["train_subject_ids"]) and priv["n_train"] + priv["n_holdout"] == 12
    assert 0.0 <= priv["pixel (L2)"]["membership_inference"]["auc"] <= 1.0
    assert len(priv["ssim_nearest"]["queries"]) == 4
    for name in ("run_slices", "run_planes", "run_pca", "run_mds", "run_nearest", "run_training"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, name
    timing = res["timing"]
    assert {"load real", "extractor", "features: real", "features: synthetic", "feature metrics",
            "privacy", "embeddings", "figures"} <= set(timing["stages_s"])
    assert timing["peak_memory_mb"] > 0
    assert timing["stages_s"]["synthetic sets (load or generate)"] > 0  # sampling is timed, not hidden


def test_sampled_folder_gives_the_run_folder_numbers(prep: Path, run: Path, tmp_path: Path) -> None:
    """A run sampled on the fly and the same seeds written by `synthmed sample` are the same cohort."""
    folder = sample(run, 12, tmp_path / "s", seed=0, progress=False)
    a = _metrics(evaluate(prep, run, tmp_path / "a", _opts(n_sets=1, privacy=False)).parent)
    b = _metrics(evaluate(prep, folder, tmp_path / "b", _opts(n_sets=1, privacy=False)).parent)
    for metric in ("fid", "kid", "precision", "coverage"):
        # NIfTI stores float32 exactly, so features agree to float rounding
        assert np.isclose(_feature(a, "run", metric)["value"], _feature(b, "s", metric)["value"], rtol=1e-4, atol=1e-6)


def test_memorised_copies_are_flagged(prep: Path, tmp_path: Path) -> None:
    """Exact copies of training images: DCR ~0, all flagged, membership inference succeeds; an honest
    'generator' (held-out real images) is not flagged."""
    ds = load_prepared(prep)
    train_rows, test_rows = ds.indices("trainval"), ds.indices("test")
    copies = _copies_folder(prep, np.resize(train_rows, 12), tmp_path / "copies")
    m = _metrics(evaluate(prep, copies, tmp_path / "rep", _opts(n_sets=1, embeddings=())).parent)
    pix = m["results"]["sources"]["copies"]["privacy"]["pixel (L2)"]
    assert pix["median_synthetic"] < 1e-4 and pix["ratio"] < 1e-4
    assert len(pix["flagged"]) == 12 and pix["p_value"] < 0.01
    assert pix["membership_inference"]["auc"] == 1.0
    assert max(m["results"]["sources"]["copies"]["privacy"]["ssim_nearest"]["ssim"]) > 0.999
    # identical sets: FID ~ 0 on the same rows
    same = _copies_folder(prep, np.arange(12), tmp_path / "same")
    m2 = _metrics(evaluate(prep, same, tmp_path / "rep2", _opts(n_sets=1, privacy=False, embeddings=())).parent)
    assert abs(_feature(m2, "same", "fid")["value"]) < 1e-3
    assert _feature(m2, "same", "precision")["value"] == 1.0 and _feature(m2, "same", "coverage")["value"] == 1.0
    del test_rows


def test_two_sources_side_by_side_and_names(prep: Path, run: Path, tmp_path: Path) -> None:
    folder = sample(run, 12, tmp_path / "s", seed=100, progress=False)
    html = evaluate(prep, [run, folder], tmp_path / "rep", _opts(n_sets=2, privacy=False, embeddings=("pca",)),
                    names=["on-the-fly", "written"])
    m = _metrics(html.parent)
    assert set(m["results"]["sources"]) == {"on-the-fly", "written"}
    table = next(b for s in m["sections"] if s["title"].startswith("Fidelity") for b in s["blocks"]
                 if b["type"] == "table")
    assert [r[0] for r in table["rows"]] == ["on-the-fly", "written"]
    assert [r[1] for r in table["rows"]] == [2, 1]


def test_cli_evaluate_and_errors(prep: Path, run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(["evaluate", "--real", str(prep), "--synthetic", str(run), "--out", str(out), "--n-sets", "2",
               "--extractor-iterations", "5", "--ssim-queries", "0", "--embeddings", "pca", "--no-screenshot",
               "--no-progress", "--split", "trainval", "--max-real", "7"])
    assert rc == 0 and (out / "report.html").is_file()
    assert len(load_prepared(prep).indices("trainval")) == 9
    assert _metrics(out)["results"]["real"]["n"] == 7
    assert _metrics(out)["results"]["sources"]["run"]["set_sizes"] == [7, 7]
    capsys.readouterr()
    # too few real images for the k-NN metrics
    rc = main(["evaluate", "--real", str(prep), "--synthetic", str(run), "--out", str(tmp_path / "t"), "--split", "test"])
    assert rc == 2 and "need at least 6 in each" in capsys.readouterr().err
    # missing synthetic folder
    rc = main(["evaluate", "--real", str(prep), "--synthetic", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "nope: synthetic folder or run folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # wrong shape: a 2D prepared set against a 3D run
    from synth_testdata import make_tiny_prepared

    p2 = make_tiny_prepared(tmp_path / "p2", 2, 16, 8)
    rc = main(["evaluate", "--real", str(p2), "--synthetic", str(run), "--out", str(tmp_path / "y"),
               "--extractor-iterations", "5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "synthetic images have shape (1, 16, 16, 16)" in err and "(1, 16, 16)" in err
    assert not (tmp_path / "y" / "report.html").exists()


def test_inception_score_section(prep: Path, run: Path, tmp_path: Path) -> None:
    """--inception-weights: the Inception score on the three middle planes of real and synthetic sets,
    identical to calling the metric directly on the same images."""
    import torch

    from synthmed.features.inception import InceptionV3, InceptionV3Extractor
    from synthmed.metrics.inception_score import inception_score_planes

    weights = tmp_path / "inception.pth"
    torch.save(InceptionV3(num_classes=10).state_dict(), weights)
    m = _metrics(evaluate(prep, run, tmp_path / "rep", _opts(n_sets=1, privacy=False, embeddings=(),
                                                             image_metrics=False,
                                                             inception_weights=str(weights))).parent)
    scores = m["results"]["inception_score"]
    assert set(scores) == {"real", "run"}
    assert 1.0 <= scores["real"]["mean"] <= 10.0 and set(scores["real"]["per_plane"]) == {"sagittal", "coronal", "axial"}
    ext = InceptionV3Extractor(weights=str(weights)).eval()
    real = load_prepared(prep).images[:]
    direct = inception_score_planes(np.asarray(real, np.float32), ext.logits, progress=False)
    assert np.isclose(scores["real"]["mean"], direct.mean, rtol=1e-4)


def test_training_warnings_reach_the_report(prep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose collapse guard fired: the evaluation of its samples shows the warning (issue 13)."""
    import synthmed.train.guards as guards

    monkeypatch.setattr(guards, "KL_COLLAPSE_NATS", 1e9)  # every KL counts as collapsed: the guard fires at once
    cfg = load_config("vae", ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8",
                              "train.iterations=2", "train.n_preview=2", "train.guard_patience=1"])
    run = train(cfg, prep, tmp_path / "vae", progress=False)
    folder = sample(run, 4, tmp_path / "s", progress=False)
    for src in (run, folder):
        out = tmp_path / f"rep_{src.name}"
        html = evaluate(prep, src, out, _opts(n_sets=1, privacy=False, embeddings=(), image_metrics=False))
        text = html.read_text(encoding="utf-8")
        assert "Training warnings" in text and "posterior collapse" in text
        prov = _metrics(out)["results"]["sources"][src.name]["provenance"]
        assert prov["training_warnings"][0]["guard"] == "posterior_collapse"


# ------------------------------------------------------------------ issue 16
def test_a_250_character_source_name(prep: Path, run: Path, tmp_path: Path) -> None:
    """Figure (and feature-cache) file names of a long, valid source name are shortened with a hash."""
    long_run = run.rename(tmp_path / ("r" * 250))
    html = evaluate(prep, long_run, tmp_path / "rep", _opts(n_sets=2, privacy=False, embeddings=("pca",)))
    figures = sorted(p.name for p in (html.parent / "figures").iterdir())
    assert figures and all(len(n.encode()) <= 255 for n in figures)
    from synthmed.evaluate.runner import figure_file

    assert figure_file("r" * 250, "slices") in figures and figure_file("r" * 250, "slices").endswith("_slices.png")
    assert figure_file("r" * 250, "slices") != figure_file("r" * 249 + "s", "slices")
    assert figure_file("run", "pca") == "run_pca.png" and figure_file("a/b", "pca").startswith("a_b-")
    assert set(_metrics(html.parent)["results"]["sources"]) == {"r" * 250}


def test_a_failed_evaluation_leaves_no_half_written_report(prep: Path, run: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import synthmed.report.figures as figures

    out = tmp_path / "rep"
    opts = _opts(n_sets=1, privacy=False, embeddings=("pca",), image_metrics=False)
    evaluate(prep, run, out, opts)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("the user's own file")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENAMETOOLONG, "File name too long", str(out / "figures" / "x.png"))

    monkeypatch.setattr(figures, "slice_comparison_figure", fail)
    for target in (out, tmp_path / "fresh"):
        with pytest.raises(OSError, match="File name too long"):
            evaluate(prep, run, target, opts)
    assert not (tmp_path / "fresh").exists()  # nothing at all: no figures/ or features/ without a report
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.pop(Path("notes.txt")) == b"the user's own file"
    assert after == before  # the older report is whole and unchanged; no staging folder is left
