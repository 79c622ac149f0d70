"""The utility report: CSVs, ``report.html`` and ``metrics.json`` of a ``synthmed utility`` run.

:func:`utility_sections` returns the report sections alone, so a larger report (``synthmed
protocol``) can embed them; :func:`write_utility_report` writes the stand-alone report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from synthmed.io_utils import csv_text, write_text_atomic
from synthmed.report.html import Estimate, Figure, KeyValues, Report, Section, Table, Text, write_report
from synthmed.utility.compositions import COMPOSITIONS
from synthmed.utility.metrics import METRIC_NAMES
from synthmed.utility.stats import Interval


def _est(d: dict[str, Any] | None) -> Any:
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return None
    if d.get("low") is None or not math.isfinite(d["low"]):
        return d["mean"]
    return Estimate(d["mean"], d["low"], d["high"])


def _gap(rec: dict[str, Any], records: list[dict[str, Any]], baseline: str) -> float | None:
    base = next((r for r in records if r["composition"] == baseline and r["fold"] == rec["fold"]), None)
    if base is None or rec["composition"] == baseline:
        return None
    a, b = base["metrics"].get("auc"), rec["metrics"].get("auc")
    return None if a is None or b is None else a - b


def per_fold_rows(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The ``per_fold_metrics.csv`` header and rows."""
    records, baseline = results["records"], results["config"]["statistics"]["baseline"]
    header = ["composition", "fold", "n_train_real", "n_train_synthetic", "n_val", "n_test", *METRIC_NAMES,
              "majority_rate", "auc_real_minus_auc", "auc_synthetic_test", "delta_syn", "best_epoch", "epochs",
              "iterations", "seconds", "generator_saw_test_subjects"]
    rows = []
    for r in records:
        fit = r.get("fit", {})
        syn = sum(v for v in r["counts"]["synthetic"].values() if v >= 0)
        inf = any(v < 0 for v in r["counts"]["synthetic"].values())
        rows.append([r["composition"], r["fold"], sum(r["counts"]["real"].values()), "inf" if inf else syn,
                     r["n_val"], r["n_test"], *[r["metrics"].get(m) for m in METRIC_NAMES], r["majority_rate"],
                     _gap(r, records, baseline), r.get("auc_synthetic_test"), r.get("delta_syn"),
                     fit.get("best_epoch"), fit.get("epochs"), fit.get("iterations"), r.get("seconds"),
                     (r.get("generator_overlap") or {}).get("test")])
    return header, rows


def _tests_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m, t in summary["tests"].items():
        for kind in ("anova_all", "anova_small"):
            a = t.get(kind)
            if a:
                rows.append([m, kind, " vs ".join(a["groups"]), "", a["f"], f"{a['df_between']},{a['df_within']}",
                             a["p"], a["p"], a["p"] < 0.05 if a["p"] == a["p"] else None])
        for kind in ("t_tests_bonferroni", "mann_whitney_vs_baseline"):
            for x in t[kind]:
                rows.append([m, kind, x["a"], x["b"], x["statistic"], x["df"], x["p"], x["p_corrected"],
                             x["significant"]])
    return rows


def write_csvs(results: dict[str, Any], out: Path) -> None:
    """``per_fold_metrics.csv``, ``summary.csv``, ``tests.csv``, ``training_history.csv``."""
    header, rows = per_fold_rows(results)
    write_text_atomic(out / "per_fold_metrics.csv", csv_text(rows, header))
    s = results["summary"]
    srows = [[c, m, iv["mean"], iv["low"], iv["high"], iv["n"], iv["sd"]]
             for m, by in s["intervals"].items() for c, iv in by.items()]
    srows += [[c, "auc_real_minus_auc", iv["mean"], iv["low"], iv["high"], iv["n"], iv["sd"]]
              for c, iv in s["auc_real_minus_auc"].items()]
    srows += [[c, "delta_syn", iv["mean"], iv["low"], iv["high"], iv["n"], iv["sd"]] for c, iv in s["delta_syn"].items()]
    write_text_atomic(out / "summary.csv", csv_text(srows, ["composition", "metric", "mean", "ci_low", "ci_high", "n", "sd"]))
    write_text_atomic(out / "tests.csv", csv_text(_tests_rows(s), ["metric", "test", "a", "b", "statistic", "df", "p",
                                                               "p_corrected", "significant"]))
    hist = [[r["composition"], r["fold"], h.get("epoch"), h.get("iteration"), h.get("train_loss"), h.get("val_loss")]
            for r in results["records"] for h in r.get("history", [])]
    write_text_atomic(out / "training_history.csv",
                      csv_text(hist, ["composition", "fold", "epoch", "iteration", "train_loss", "val_loss"]))


def _setup(results: dict[str, Any]) -> list[Any]:
    cfg, co, s = results["config"], results["cohort"], results["summary"]
    cls = cfg["classifier"]
    items = {
        "real data": f"{co['dataset']} ({co['n_subjects']} subjects, {co['class_counts']}, shape {tuple(co['shape'])})",
        "partition": f"stratified {cfg['folds']}-fold, 60/20/20 train/validation/test per fold (seed {cfg['seed']}); "
                     f"folds run: {s['folds']}",
        "classifier": cls, "optimisation": cfg["train"], "device": results["device"],
        **{f"synthetic: {k}": v for k, v in results["sources"].items()},
    }
    blocks: list[Any] = [KeyValues(items, caption="What was trained and tested")]
    if s["generator_saw_test_subjects"]:
        blocks.append(Text(f"Caution: the generators were trained on subjects that are in the test folds (up to "
                           f"{s['generator_saw_test_subjects']} per fold). Compositions with synthetic data may "
                           "then look better than they would on unseen subjects; for an unbiased estimate train "
                           "one generator per fold on that fold's training subjects."))
    rows = []
    for c, counts in s["training_sets_first_fold"]["counts"].items():
        cells = [f"{counts['real'][n]} / {'inf' if counts['synthetic'][n] < 0 else counts['synthetic'][n]}"
                 for n in co["classes"]]
        rows.append([c, COMPOSITIONS[c].title, *cells])
    blocks.append(Table(["composition", "paper 000 Table 1 row", *[f"{n} (real / synthetic)" for n in co["classes"]]],
                        rows, caption=f"Training sets in fold {s['training_sets_first_fold']['fold']}; validation "
                                      "and test sets are real only"))
    return blocks


def _results(results: dict[str, Any], out: Path) -> list[Any]:
    from synthmed.utility.figures import utility_bar_chart

    s, cfg = results["summary"], results["config"]
    rows = [[c, s["intervals"]["accuracy"][c]["n"], *[_est(s["intervals"][m].get(c)) for m in METRIC_NAMES]]
            for c in s["compositions"]]
    blocks: list[Any] = [Table(["composition", "folds", *METRIC_NAMES], rows, caption=(
        f"Real test data: mean [{cfg['statistics']['confidence']:.0%} t-interval] over folds. Chance: accuracy "
        f"{s['chance_level']['accuracy']:.3f} (always the majority class), balanced accuracy "
        f"{s['chance_level']['balanced_accuracy']:.2f}, AUC 0.5"))]
    for m in cfg["statistics"]["chart_metrics"]:
        ivs = {c: Interval(**s["intervals"][m][c]) for c in s["compositions"]}
        sig = [t["a"] if t["b"] == cfg["statistics"]["baseline"] else t["b"]
               for t in s["tests"].get(m, {}).get("t_tests_bonferroni", [])
               if t["significant"] and cfg["statistics"]["baseline"] in (t["a"], t["b"])]
        chance = s["chance_level"].get(m)
        path = utility_bar_chart(ivs, out / "figures" / f"{m}_bars.png", m, chance, sig,
                                 cfg["statistics"]["baseline"], large=s["large"])
        blocks.append(Figure(path, caption=f"{m.replace('_', ' ')} per training set (paper 000 Fig. 6): mean with "
                                           "95% CI over folds; dotted: chance; * differs from "
                                           f"{cfg['statistics']['baseline']} (two-tailed t-test, Bonferroni over all "
                                           f"pairs, alpha {cfg['statistics']['alpha']})."))
    return blocks


def _statistics(results: dict[str, Any]) -> list[Any]:
    s = results["summary"]
    anova, pairs, mw = [], [], []
    for m, t in s["tests"].items():
        for kind, label in (("anova_all", "all compositions"), ("anova_small", "same-size sets (paper 000)")):
            a = t.get(kind)
            if a:
                anova.append([m, label, f"F({a['df_between']},{a['df_within']})", a["f"], a["p"]])
        pairs += [[m, x["a"], x["b"], x["mean_difference"], x["statistic"], x["df"], x["p"], x["p_corrected"],
                   x["significant"]] for x in t["t_tests_bonferroni"]]
        mw += [[m, x["a"], x["b"], x["mean_difference"], x["statistic"], x["p"], x["p_corrected"], x["significant"]]
               for x in t["mann_whitney_vs_baseline"]]
    chance = [[c, v["accuracy_vs_majority_rate"]["t"], v["accuracy_vs_majority_rate"]["p"],
               v["balanced_accuracy_vs_0.5"]["t"], v["balanced_accuracy_vs_0.5"]["p"], v["balanced_accuracy_vs_0.5"]["df"]]
              for c, v in s["chance_tests"].items()]
    return [
        Table(["metric", "compared", "df", "F", "p"], anova, caption="One-way fixed-effects ANOVA over folds"),
        Table(["metric", "a", "b", "mean a - b", "t", "df", "p", "p (Bonferroni)", "significant"], pairs,
              caption="Two-tailed unpaired t-tests, Bonferroni-corrected over all pairs of one metric"),
        Table(["metric", "composition", "baseline", "mean difference", "U", "p", "p (Bonferroni)", "significant"], mw,
              caption="Two-sided Mann-Whitney U tests against the baseline (paper 004)"),
        Table(["composition", "t (accuracy - majority rate)", "p", "t (balanced accuracy - 0.5)", "p", "df"], chance,
              caption="Above chance? One-sample two-tailed t-tests over folds"),
    ]


def _gaps(results: dict[str, Any]) -> list[Any]:
    s = results["summary"]
    rows = [[c, _est(s["auc_real_minus_auc"].get(c)), _est(s["delta_syn"].get(c))]
            for c in s["compositions"] if c in s["auc_real_minus_auc"] or c in s["delta_syn"]]
    return [Table(["composition", "AUC_real - AUC (paired by fold)", "Delta_syn = AUC(synthetic test) - AUC(real test)"],
                  rows, caption="Paper 004: the AUC lost by training on this set instead of real data, and how much "
                                "easier the classifier finds synthetic than real test images (0 is ideal)")]


def _per_fold(results: dict[str, Any]) -> list[Any]:
    header, rows = per_fold_rows(results)
    keep = [header.index(k) for k in ("composition", "fold", "n_train_real", "n_train_synthetic", "accuracy",
                                      "balanced_accuracy", "auc", "sensitivity", "specificity", "f1",
                                      "delta_syn", "best_epoch", "epochs", "seconds")]
    return [Table([header[i] for i in keep], [[r[i] for i in keep] for r in rows],
                  caption="Every fold (also in per_fold_metrics.csv; losses per epoch in training_history.csv)")]


def _occlusion(results: dict[str, Any]) -> list[Any]:
    o = results.get("occlusion")
    if not o:
        return [Text("Occlusion maps were not computed (occlusion.enabled: false).")]
    if "skipped" in o:
        return [Text(f"Occlusion maps skipped: {o['skipped']}.")]
    rows = [[n, *v] for n, v in o["correlation_with_reference"].items()]
    return [Figure(o["figure"], caption=(
        f"Occlusion feature importance (paper 004, S.7) of fold {o['fold']}'s classifiers on real test images: "
        f"patches of {o['mask_size']} voxels masked to the background, normalised increase of the loss of the true "
        "label (red: important); 3D: the middle axial slice.")),
        Table(["trained on", *o["subjects"]], rows,
              caption=f"Pearson correlation of each map with the map of the classifier trained on {o['reference']}")]


def utility_sections(results: dict[str, Any], out: Path) -> list[Section]:
    """The utility part of a report (figures are written under ``out/figures``)."""
    return [
        Section("Utility protocol: setup and training sets", _setup(results)),
        Section("Utility: diagnosis classifier on real test data", _results(results, out)),
        Section("Utility: statistics", _statistics(results)),
        Section("Utility: AUC_real - AUC_syn and Delta_syn", _gaps(results)),
        Section("Utility: per-fold results", _per_fold(results)),
        Section("Utility: occlusion maps", _occlusion(results)),
    ]


def write_utility_report(results: dict[str, Any], out: Path) -> Path:
    """Write the CSVs, ``report.html`` and ``metrics.json`` (with ``results``) into ``out``."""
    write_csvs(results, out)
    report = Report("synthmed utility: " + ", ".join(results["summary"]["compositions"]))
    report.sections.extend(utility_sections(results, out))
    t = results["timing"]
    report.add("Run", KeyValues({"stages (s)": t["stages_s"], "total (s)": t["total_s"],
                                 "peak memory (MB)": t["peak_memory_mb"], "synthmed": results["synthmed_version"]}))
    return write_report(report, out, results=results)
