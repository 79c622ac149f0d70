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
    base = dict(n_sets=3, fidelity=FidelityOptions(extractor_iterations=10, n_boot=25), progress=False,
                screenshot=False, ssim_queries=4, split="all")
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


def _copies_folder(ds_path: Path, rows: np.ndarray, out: Path, suffix: str = ".nii.gz") -> Path:
    """A `synthmed sample`-style folder whose images are exact copies of real rows."""
    from synthmed.generate.writers import write_png

    ds = load_prepared(ds_path)
    out.mkdir()
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "seed"])
        for k, r in enumerate(rows):
            name = f"copy_{k:03d}{suffix}"
            if suffix == ".png":
                write_png(np.asarray(ds.images[r, 0]), out / name)
            else:
                write_nifti(np.asarray(ds.images[r, 0]), ds.affine, out / name)
            w.writerow([name, "", k])
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
    assert priv["train_vs_holdout"].startswith("the run's training subjects")
    assert "needs at least 4 of each" in priv["skipped"]  # 12 subjects: too few held out to calibrate on
    for name in ("run_slices", "run_planes", "run_pca", "run_mds", "run_training"):
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


def _fake_run(ds_path: Path, train_ids: list[str], out: Path) -> Path:
    """A folder with a run's data.json (the training subjects), enough for a sampled folder to point at."""
    out.mkdir()
    (out / "data.json").write_text(json.dumps({"path": str(ds_path), "train_subject_ids": train_ids}), encoding="utf-8")
    (out / "config.yaml").write_text("model:\n  name: sngan\n", encoding="utf-8")
    return out


def test_every_sample_is_audited_and_planted_copies_are_found(tmp_path: Path) -> None:
    """Issue 14: a sampled folder of held-out real images (copies of nothing) with copies of the run's
    training images planted in its *second* set (exact, noisy, flipped, shifted); the run's own training
    subjects (its data.json, not the prepared split) are the training set; every copy is found, with its
    source subject and transform; the headline is the fraction, and the copies are pictured."""
    from synth_testdata import make_tiny_prepared

    prep = make_tiny_prepared(tmp_path / "prep", 3, 12, 64, seed=1, texture=0.3)
    ds = load_prepared(prep)
    rng = np.random.default_rng(0)
    # the run trained on 36 of the 48 trainval subjects: the other 12 and the 16 test subjects are held out
    train_rows = np.sort(rng.choice(ds.indices("trainval"), 36, replace=False))
    run = _fake_run(prep, [ds.subject_ids[i] for i in train_rows], tmp_path / "run")
    hold = np.setdiff1d(np.arange(64), train_rows)
    imgs = np.asarray(ds.images[:], np.float32)
    src = train_rows[:8]
    planted = [imgs[src[0]], imgs[src[1]], np.clip(imgs[src[2]] + rng.normal(0, 0.05, imgs[0].shape), -1, 1),
               np.clip(imgs[src[3]] + rng.normal(0, 0.05, imgs[0].shape), -1, 1), imgs[src[4]][:, ::-1],
               imgs[src[5]][:, :, :, ::-1], np.roll(imgs[src[6]], 1, axis=1), np.roll(imgs[src[7]], -1, axis=3)]
    folder = tmp_path / "s"
    folder.mkdir()
    fresh = hold[:10]  # the 10 first samples: held-out real images; then 8 copies; 2 more left out of the sets
    cohort = [imgs[r] for r in fresh] + planted + [imgs[hold[10]], imgs[hold[11]]]
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "seed"])
        for k, im in enumerate(cohort):
            write_nifti(np.asarray(im[0], np.float32), ds.affine, folder / f"synthetic_{k:05d}.nii.gz")
            w.writerow([f"synthetic_{k:05d}.nii.gz", k])
    (folder / "sample.json").write_text(json.dumps({"run": str(run), "model": "sngan"}), encoding="utf-8")
    # the default reference (no split given): the test split, with the floor beside it
    opts = EvaluateOptions(n_sets=5, set_size=9, embeddings=(), image_metrics=False, ssim_queries=2, progress=False,
                           screenshot=False, fidelity=FidelityOptions(extractor_iterations=10, n_boot=25))
    html = evaluate(prep, folder, tmp_path / "rep", opts)
    m = _metrics(html.parent)
    assert m["results"]["real"]["split"] == "test" and m["results"]["real"]["n"] == 16
    table = next(b for s in m["sections"] if s["title"].startswith("Fidelity") for b in s["blocks"] if b["type"] == "table")
    assert [r[0] for r in table["rows"]] == ["floor: real trainval", "s"]
    floor = {r["metric"]: r for r in m["results"]["floor"]["feature_metrics"]}
    assert floor["fid"]["n_sets"] == 5 and floor["mmd_rbf"]["bandwidth"] == _feature(m, "s", "mmd_rbf")["bandwidth"]
    res = m["results"]["sources"]["s"]
    assert res["set_sizes"] == [9, 9] and res["n_images"] == 20 and res["n_dropped"] == 2
    priv = res["privacy"]
    assert priv["train_vs_holdout"].startswith("the run's training subjects") and priv["n_train"] == 36
    audit = priv["near_copies"]
    assert audit["n_samples"] == 20  # every sample, also those in no whole set
    flagged = {f["id"]: f for f in audit["flagged"]}
    want = {f"synthetic_{10 + k:05d}.nii.gz": ds.subject_ids[src[k]] for k in range(8)}
    assert set(want) <= set(flagged) and len(set(flagged) - set(want)) <= 1
    assert {f["train_subject"] for i, f in flagged.items() if i in want} == set(want.values())
    assert all(flagged[i]["train_subject"] == s for i, s in want.items())
    assert flagged["synthetic_00014.nii.gz"]["transform"] == "flip axis 0"
    assert flagged["synthetic_00015.nii.gz"]["transform"] == "flip axis 2"
    assert flagged["synthetic_00016.nii.gz"]["transform"] == "shift (+1, +0, +0)"
    assert flagged["synthetic_00017.nii.gz"]["transform"] == "shift (+0, +0, -1)"
    assert audit["fraction"] == len(flagged) / 20 and 0.15 < audit["fraction_ci"][0] < audit["fraction"]
    assert 0 <= audit["heldout_fpr"]["rate"] <= 0.2
    text = html.read_text(encoding="utf-8")
    assert f"Near-copies of training images: {len(flagged)} of 20 synthetic samples" in text
    assert "More samples are flagged than chance explains" in text and "synthetic_00014.nii.gz" in text
    assert (html.parent / "figures" / "s_nearest.png").stat().st_size > 1000
    assert "pixel (L2)" in priv and 0.0 <= priv["pixel (L2)"]["membership_inference"]["auc"] <= 1.0


def test_privacy_falls_back_to_the_prepared_split_and_says_so(tmp_path: Path) -> None:
    """Without a run to read data.json from, the prepared trainval vs test split is used, in words."""
    from synth_testdata import make_tiny_prepared

    prep = make_tiny_prepared(tmp_path / "prep", 2, 16, 40, seed=2)
    ds = load_prepared(prep)
    folder = _copies_folder(prep, ds.indices("test")[:8], tmp_path / "copies", suffix=".png")
    m = _metrics(evaluate(prep, folder, tmp_path / "rep", _opts(n_sets=1, embeddings=(), image_metrics=False,
                                                                split="test")).parent)
    priv = m["results"]["sources"]["copies"]["privacy"]
    assert priv["train_vs_holdout"].startswith("prepared splits: trainval vs test (the generating run was not found")
    assert priv["n_train"] == len(ds.indices("trainval"))


def test_identical_sets_give_zero_distance(prep: Path, tmp_path: Path) -> None:
    same = _copies_folder(prep, np.arange(12), tmp_path / "same")
    m2 = _metrics(evaluate(prep, same, tmp_path / "rep2", _opts(n_sets=1, privacy=False, embeddings=(),
                                                                split="all")).parent)
    assert abs(_feature(m2, "same", "fid")["value"]) < 1e-3
    assert _feature(m2, "same", "precision")["value"] == 1.0 and _feature(m2, "same", "coverage")["value"] == 1.0


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
               "--extractor-iterations", "5", "--no-progress", "--split", "all"])
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
