"""``synthmed protocol`` end to end on tiny data through the CLI: every stage, resume, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from protocol_helpers import tiny_raw, write_yaml
from synth_testdata import make_tiny_prepared

from synthmed.cli import main
from synthmed.data.prepared import load_prepared

CANDIDATES = {"alpha_sngan", "alpha_sngan+diffaugment", "sngan", "sngan+diffaugment"}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.json"))}


def test_protocol_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prep = make_tiny_prepared(tmp_path / "prep", n=24)
    raw = tiny_raw(Path("/not/used"))
    cfg = write_yaml(tmp_path / "protocol.yaml", raw)
    out = tmp_path / "out"
    args = ["protocol", str(cfg), "--out", str(out), "--set", f"data.path={prep}", "--no-progress"]
    assert main(args) == 0
    assert "protocol report written to" in capsys.readouterr().out
    for name in ("report.html", "metrics.json", "ranking.csv", "ranking_tests.csv", "sweeps.csv", "sweep_tests.csv",
                 "conditioning.csv", "conditioning_tests.csv", "figures/conditioning_kid.png",
                 "config.yaml", "utility/report.html", "figures/ranking_kid.png", "figures/sweeps.png"):
        assert (out / name).is_file(), name
    res = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["results"]
    ds = load_prepared(prep)

    # (a) every model with and without DiffAugment, one run per class on that class's trainval subjects only
    assert set(res["candidates"]) == CANDIDATES
    for name, cand in res["candidates"].items():
        assert cand["diffaugment"] == name.endswith("+diffaugment")
        for cls, run in cand["runs"].items():
            data = json.loads((Path(run) / "data.json").read_text(encoding="utf-8"))
            want = sorted(ds.subject_ids[i] for i in ds.indices("trainval", label=cls))
            assert sorted(data["train_subject_ids"]) == want
            assert (Path(run) / "config.yaml").read_text(encoding="utf-8").count("enabled: true") == int(
                cand["diffaugment"])

    # (b) n_sets sets the size of the real set, every class in the real proportion
    with open(out / "pools" / "sngan" / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(ds)
    for k in range(3):
        labels = [int(r["label"]) for r in rows[k * len(ds):(k + 1) * len(ds)]]
        assert {int(r["set"]) for r in rows[k * len(ds):(k + 1) * len(ds)]} == {k}
        assert np.bincount(labels).tolist() == np.bincount(ds.labels).tolist()

    # (c) the winner has the lowest mean KID (protocol_quick's ranking metric, unbiased at small sample sizes);
    # per-set values are those of each candidate's own evaluation report
    means = {}
    assert res["ranking"]["metric"] == "kid"
    for name in CANDIDATES:
        ev = json.loads((out / "evaluation" / name / "metrics.json").read_text(encoding="utf-8"))["results"]
        kid = next(r for r in ev["sources"][name]["feature_metrics"] if r["metric"] == "kid")["per_set"]
        assert len(kid) == 3
        means[name] = float(np.mean(kid))
    assert res["ranking"]["winner"] == min(means, key=means.get)
    for m in ("kid", "fid"):
        assert res["ranking"]["tests"][m]["anova"]["df_between"] == 3
        assert res["ranking"]["tests"][m]["anova"]["df_within"] == 4 * 3 - 4

    # (d) conditioning: per-class reuses the winner's candidate runs; frozen-classifier is one conditional run on
    # every class, sampled with each class's label into labelled sets in the real class proportion
    cond = res["conditioning"]
    winner_runs = res["candidates"][res["ranking"]["winner"]]["runs"]
    assert cond["candidate"] == res["ranking"]["winner"]
    assert cond["methods"]["per-class"]["runs"] == winner_runs and cond["methods"]["per-class"]["reused_candidate_runs"]
    fc_runs = cond["methods"]["frozen-classifier"]["runs"]
    assert set(fc_runs) == set(ds.classes) and len(set(fc_runs.values())) == 1
    fc = Path(next(iter(fc_runs.values())))
    assert json.loads((fc / "data.json").read_text(encoding="utf-8"))["conditioning"]["method"] == "frozen-classifier"
    with open(out / "conditioning" / "pools" / "frozen-classifier" / "manifest.csv", newline="", encoding="utf-8") as f:
        crows = list(csv.DictReader(f))
    assert len(crows) == 3 * len(ds) and {r["run"] for r in crows} == {str(fc)}
    assert np.bincount([int(r["label"]) for r in crows if r["set"] == "0"]).tolist() == np.bincount(ds.labels).tolist()
    # ranked by the KID averaged over classes per synthetic set, taken from each method's own evaluation report
    rk = cond["ranking"]
    assert rk["basis"] == "per-class" and rk["winner"] == "frozen-classifier" and rk["forced"]
    for method in ("per-class", "frozen-classifier"):
        ev = json.loads((out / "conditioning" / "evaluation" / method / "metrics.json").read_text(encoding="utf-8"))
        per_class = ev["results"]["sources"][method]["per_class_feature_metrics"]
        assert set(per_class) == set(ds.classes)
        kids = [next(r for r in rows if r["metric"] == "kid")["per_set"] for rows in per_class.values()]
        assert rk["means"][method] == pytest.approx(float(np.mean(np.mean(kids, axis=0))))
    two_way = {t["term"]: t for t in rk["tests"]["kid"]["two_way_anova"]}
    assert two_way["method"]["df"] == 1 and two_way["class"]["df"] == 1 and two_way["residual"]["df"] == 2 * 2 * 3 - 4
    ctests = list(csv.DictReader(open(out / "conditioning_tests.csv", encoding="utf-8")))
    assert {r["term_or_a"] for r in ctests if r["test"] == "two_way_anova"} == {"method", "class", "method:class"}

    # (e) the utility protocol used the chosen method's conditional run for every class; Delta_syn and the AUC
    # gap follow their definitions
    util = res["utility"]["results"]
    assert util["config"]["synthetic"] == fc_runs and res["utility"]["conditioning"] == "frozen-classifier"
    recs = {r["composition"]: r for r in util["records"]}
    syn = recs["synthetic-small"]
    assert syn["delta_syn"] == pytest.approx(syn["auc_synthetic_test"] - syn["metrics"]["auc"])
    gap = util["summary"]["auc_real_minus_auc"]["synthetic-small"]["mean"]
    assert gap == pytest.approx(recs["real"]["metrics"]["auc"] - syn["metrics"]["auc"])

    # (f) every sweep point: one conditional generator that saw exactly fold 0's training subjects of the derived
    # dataset
    assert len(res["sweeps"]["points"]) == 2 * 2 * 2
    for p in res["sweeps"]["points"]:
        assert p["conditioning"] == "frozen-classifier" and len(set(p["runs"].values())) == 1
        root = out / "sweeps" / p["sweep"] / str(p["value"]) / f"seed{p['seed']}"
        part = json.loads((root / "utility" / "partition.json").read_text(encoding="utf-8"))
        seen = set()
        for run in p["runs"].values():
            seen |= set(json.loads((Path(run) / "data.json").read_text(encoding="utf-8"))["train_subject_ids"])
        assert seen == set(part["folds"][0]["train"])
        derived = load_prepared(root / "data")
        if p["sweep"] == "samples_per_class":
            assert np.bincount(derived.labels).tolist() == [p["value"]] * 2
        if p["sweep"] == "resolution":
            assert derived.shape == (p["value"],) * 3
    tests = {(r["sweep"], r["quantity"]) for r in csv.DictReader(open(out / "sweep_tests.csv", encoding="utf-8"))}
    assert tests == {(s, q) for s in ("samples_per_class", "resolution") for q in ("gap", "delta_syn")}

    # an existing run needs --resume
    assert main(args) == 2 and "--resume" in capsys.readouterr().err

    # --resume: every stage is skipped, nothing is recomputed
    stages = _mtimes(out / "stages")
    ckpt = (out / "candidates" / "sngan" / "a" / "checkpoints" / "last.pt").stat().st_mtime_ns
    ranking = (out / "ranking.csv").read_text(encoding="utf-8")
    assert main([*args[:-1], "--resume"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == len(stages)
    assert _mtimes(out / "stages") == stages
    assert (out / "ranking.csv").read_text(encoding="utf-8") == ranking

    # a lost stage result is recomputed alone (the runs are reused, the numbers are the same)
    (out / "stages" / "evaluation-sngan.json").unlink()
    (out / "stages" / "utility.json").unlink()
    assert main([*args, "--resume"]) == 0
    after = _mtimes(out / "stages")
    assert set(after) == set(stages)
    assert [k for k in stages if after[k] != stages[k]] == ["evaluation-sngan.json", "utility.json"]
    assert (out / "candidates" / "sngan" / "a" / "checkpoints" / "last.pt").stat().st_mtime_ns == ckpt
    assert (out / "ranking.csv").read_text(encoding="utf-8") == ranking

    # other settings are never silently mixed with finished results
    assert main([*args, "--resume", "--set", "evaluation.n_sets=4"]) == 2
    err = capsys.readouterr().err
    assert "evaluation-" in err and "other settings" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "candidates.sett=1"], "'candidates.sett'"),
    (["--set", "utility.train.lrr=1"], "'train.lrr'"),
    (["--set", "sweeps.seedz=[1]"], "'sweeps.seedz'"),
    (["--set", "ranking.metric=fidd"], "unknown metric 'fidd'"),
    (["--set", "candidates.models=[nosuchmodel]"], "nosuchmodel"),
    (["--set", "stages=[utility]"], "'stages'"),
    (["--set", "candidates.conditioning=conditional"], "'candidates.conditioning'"),
    (["--set", "conditioning.methods=[magic]"], "unknown method 'magic'"),
    (["--set", "conditioning.winner=ac"], "'conditioning.winner'"),
    # candidates trained on every class without stage (d) cannot feed the per-class utility protocol
    (["--set", "conditioning.methods=[]"], "'conditioning.methods'"),
    (["--set", "stages=[candidates,evaluation,utility]"], "'conditioning.methods'"),
    # every candidate must support every method (any may win), found before anything is written
    (["--set", "candidates.models=[hagan]", "--set", "conditioning.methods=[per-class,frozen-classifier]"],
     "candidate hagan cannot be trained with 'frozen-classifier'"),
])
def test_protocol_bad_config_is_one_line(extra: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["protocol", "protocol_quick", "--out", str(tmp_path / "o"), "--set", "data.path=/nowhere", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_protocol_bad_data_and_sweep_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocol", "protocol_quick", "--out", str(tmp_path / "o"), "--set",
                 f"data.path={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o").exists()
    prep = make_tiny_prepared(tmp_path / "prep", n=12)
    cfg = write_yaml(tmp_path / "p.yaml", tiny_raw(prep, stages=["candidates", "evaluation", "sweeps"]))
    # 7 subjects per class asked for; the tiny cohort has 6 (found before any sweep run starts)
    assert main(["protocol", str(cfg), "--out", str(tmp_path / "o2"), "--no-progress",
                 "--set", "sweeps.samples_per_class=[3,7]", "--set", "candidates.diffaugment=[false]",
                 "--set", "candidates.models=[sngan]", "--set", "candidates.set.model.latent_dim=8",
                 "--set", "candidates.set.model.base_channels=4", "--set", "candidates.set.model.max_channels=8"]) == 2
    err = capsys.readouterr().err
    assert "sweeps.samples_per_class" in err and "smallest class" in err
    assert not (tmp_path / "o2").exists()  # nothing trained or written


def test_shipped_protocol_configs() -> None:
    from synthmed.config import shipped_configs
    from synthmed.protocol import load_protocol_config
    from synthmed.protocol.config import resolve_candidates
    from synthmed.protocol.runner import _check_sweeps

    assert {"protocol_paper000", "protocol_quick"} <= set(shipped_configs("protocol"))
    paper = load_protocol_config("protocol_paper000", ["data.path=/x"])
    cands = resolve_candidates(paper)
    assert {c.name for c in cands} == CANDIDATES
    for c in cands:
        assert c.cfg.train.iterations == 12000 and c.cfg.train.batch_size == 4 and c.cfg.augment.enabled == c.diffaugment
        assert c.cfg.model.params.latent_dim == 1000
    assert paper.evaluation.n_sets == 10 and paper.ranking.metric == "fid"
    assert paper.utility["train"]["lr"] == 5e-6 and paper.utility["folds"] == 5
    quick = load_protocol_config("protocol_quick", ["data.path=/x"])
    assert {c.name for c in resolve_candidates(quick)} == CANDIDATES
    # the sweeps fit a ds002748-sized cohort (51 / 21 subjects): classifier sizes, subjects per class, folds
    labels = np.array([0] * 51 + [1] * 21)
    _check_sweeps(labels, 3, quick.data.resolution, Path("/x"), quick)
    _check_sweeps(labels, 3, 64, Path("/x"), paper)


def test_protocol_unconditional_candidates_then_conditioning(tmp_path: Path) -> None:
    """Paper 000's order: basic architectures trained on every subject, compared on unlabelled sets; then the
    winner extended with a conditional method and evaluated per class."""
    from synthmed.protocol import build_protocol_config, run_protocol

    prep = make_tiny_prepared(tmp_path / "prep", n=24)
    raw = tiny_raw(prep, stages=["candidates", "evaluation", "conditioning"])
    raw["candidates"].update(conditioning="none", diffaugment=[False])
    raw["conditioning"] = {"methods": ["projection"], "set": {"train.iterations": 3}}
    out = tmp_path / "out"
    run_protocol(build_protocol_config(raw), out, progress=False)
    res = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["results"]
    ds = load_prepared(prep)
    for name, cand in res["candidates"].items():
        assert list(cand["runs"]) == [""] and cand["conditioning"] == "none"  # one run, every class
        data = json.loads((Path(cand["runs"][""]) / "data.json").read_text(encoding="utf-8"))
        assert sorted(data["train_subject_ids"]) == sorted(ds.subject_ids[i] for i in ds.indices("trainval"))
        with open(out / "pools" / name / "manifest.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 * len(ds) and "label" not in rows[0]  # unlabelled sets of the real set's size
    cond = res["conditioning"]
    assert cond["candidate"] == res["ranking"]["winner"] and cond["ranking"]["winner"] == "projection"
    run = Path(next(iter(cond["methods"]["projection"]["runs"].values())))
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["step"] == 3  # conditioning.set applied
    assert set(cond["methods"]["projection"]["per_class_feature_metrics"]) == set(ds.classes)
    assert "utility" not in res and "sweeps" not in res
    assert (out / "conditioning.csv").is_file() and "(d) Conditional architectures" in (
        out / "report.html").read_text(encoding="utf-8")
