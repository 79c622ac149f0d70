"""Stage (g): the protocol's ``report.html`` (every stage, figures embedded), ``metrics.json`` and
CSVs (``ranking.csv``, ``ranking_tests.csv``, ``conditioning.csv``, ``conditioning_tests.csv``,
``sweeps.csv``, ``sweep_tests.csv``)."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

from synthmed.evaluate.fidelity import PRECISION_CAVEAT
from synthmed.io_utils import csv_text, write_text_atomic
from synthmed.report.html import Estimate, Figure, KeyValues, Report, Table, Text, write_report
from synthmed.utility.stats import Interval

log = logging.getLogger(__name__)

_SHOWN = ("fid", "kid", "mmd_rbf", "precision", "recall", "density", "coverage")


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _est(d: dict[str, Any] | None) -> Any:
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return None
    if d.get("low") is None or not math.isfinite(_num(d["low"])):
        return d["mean"]
    return Estimate(d["mean"], d["low"], d["high"])


def _rel(path: str | Path, out: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def ranking_rows(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    ev, rk = results["evaluation"], results["ranking"]
    header = ["rank", "candidate", "model", "diffaugment", "n_sets"]
    for m in _SHOWN:
        header += [m, f"{m}_ci_low", f"{m}_ci_high"]
    rows = []
    for i, name in enumerate(rk["order"]):
        fm = ev[name]["feature_metrics"]
        cand = results["candidates"][name]
        row = [i + 1, name, cand["model"], cand["diffaugment"], fm[rk["metric"]]["n_sets"]]
        for m in _SHOWN:
            r = fm.get(m, {})
            row += [r.get("value"), r.get("ci_low"), r.get("ci_high")]
        rows.append(row)
    return header, rows


def ranking_test_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m, t in results["ranking"]["tests"].items():
        a = t["anova"]
        rows.append([m, "anova", " vs ".join(a["groups"]), "", a["f"], f"{a['df_between']},{a['df_within']}", a["p"],
                     a["p"], None if a["p"] is None or a["p"] != a["p"] else a["p"] < results["config"]["ranking"]["alpha"]])
        for x in t["t_tests_bonferroni"]:
            rows.append([m, "t_test_bonferroni", x["a"], x["b"], x["statistic"], x["df"], x["p"], x["p_corrected"],
                         x["significant"]])
    return rows


CONDITIONING_HEADER = ["method", "class", "metric", "value", "ci_low", "ci_high", "n_sets", "rank", "winner"]
CONDITIONING_TESTS_HEADER = ["metric", "test", "term_or_a", "b", "statistic", "df", "p", "p_corrected",
                             "significant"]


def conditioning_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Stage (d) in long form: per method, class (``all`` = every class together) and metric."""
    c = results.get("conditioning")
    if not c:
        return []
    rk = c["ranking"]
    rows = []
    for i, method in enumerate(rk["order"]):
        ev = c["methods"][method]
        groups = {"all": ev["feature_metrics"], **(ev.get("per_class_feature_metrics") or {})}
        for cls, fm in groups.items():
            for m in _SHOWN:
                r = fm.get(m)
                if r is not None:
                    rows.append([method, cls, m, r.get("value"), r.get("ci_low"), r.get("ci_high"), r.get("n_sets"),
                                 i + 1, method == rk["winner"]])
    return rows


def conditioning_test_rows(results: dict[str, Any]) -> list[list[Any]]:
    c = results.get("conditioning")
    if not c:
        return []
    alpha = results["config"]["ranking"]["alpha"]
    rows = []
    for m, t in c["ranking"]["tests"].items():
        for term in t.get("two_way_anova", []):
            if term["term"] != "residual":
                res = next(x for x in t["two_way_anova"] if x["term"] == "residual")
                rows.append([m, "two_way_anova", term["term"], "", term["f"], f"{term['df']:g},{res['df']:g}",
                             term["p"], term["p"], None if term["p"] != term["p"] else term["p"] < alpha])
        a = t["anova"]
        rows.append([m, "one_way_anova_class_mean", " vs ".join(a["groups"]), "", a["f"],
                     f"{a['df_between']},{a['df_within']}", a["p"], a["p"],
                     None if a["p"] is None or a["p"] != a["p"] else a["p"] < alpha])
        for x in t["t_tests_bonferroni"]:
            rows.append([m, "t_test_bonferroni_class_mean", x["a"], x["b"], x["statistic"], x["df"], x["p"],
                         x["p_corrected"], x["significant"]])
    return rows


def sweep_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for sweep, s in results.get("sweeps", {}).get("summary", {}).items():
        for r in s["rows"]:
            rows.append([sweep, r["value"], r["composition"], len(r["seeds"]),
                         *[r[k][f] for k in ("auc_real", "auc_syn", "gap", "delta_syn") for f in ("mean", "sd")]])
    return rows


def sweep_test_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for sweep, s in results.get("sweeps", {}).get("summary", {}).items():
        for comp, t in s["mann_whitney"].items():
            for key in ("gap", "delta_syn"):
                x = t[key]
                rows.append([sweep, comp, key, t["first"], t["last"], x["n_first"], x["n_last"], x["u"],
                             x["p_two_sided"], x["p_less"], x["p_greater"]])
    return rows


def write_csvs(results: dict[str, Any], out: Path) -> None:
    header, rows = ranking_rows(results)
    write_text_atomic(out / "ranking.csv", csv_text(rows, header))
    write_text_atomic(out / "ranking_tests.csv", csv_text(ranking_test_rows(results), [
        "metric", "test", "a", "b", "statistic", "df", "p", "p_corrected", "significant"]))
    if "conditioning" in results:
        write_text_atomic(out / "conditioning.csv", csv_text(conditioning_rows(results), CONDITIONING_HEADER))
        write_text_atomic(out / "conditioning_tests.csv", csv_text(conditioning_test_rows(results),
                                                                CONDITIONING_TESTS_HEADER))
    if "sweeps" in results:
        write_text_atomic(out / "sweeps.csv", csv_text(sweep_rows(results), [
            "sweep", "value", "composition", "seeds", "auc_real_mean", "auc_real_sd", "auc_syn_mean", "auc_syn_sd",
            "gap_mean", "gap_sd", "delta_syn_mean", "delta_syn_sd"]))
        write_text_atomic(out / "sweep_tests.csv", csv_text(sweep_test_rows(results), [
            "sweep", "composition", "quantity", "first", "last", "n_first", "n_last", "u", "p_two_sided",
            "p_less", "p_greater"]))


def _setup(results: dict[str, Any]) -> list[Any]:
    cfg, d = results["config"], results["data"]
    return [KeyValues({
        "real data": f"{d['path']} ({d['n']} subjects, {d['class_counts']}, shape {tuple(d['shape'])})",
        "from": cfg["data"]["path"] + (f" (resampled to {cfg['data']['resolution']}, subsample "
                                       f"{cfg['data']['max_subjects'] or 'all'})"
                                       if cfg["data"]["resolution"] or cfg["data"]["max_subjects"] else ""),
        "stages": cfg["stages"], "device": results["device"], "seed": cfg["seed"],
        "synthmed": results["synthmed_version"]}, caption="What the protocol ran on")]


def _candidates(results: dict[str, Any], out: Path) -> list[Any]:
    rows = [[n, c["model"], c["diffaugment"], c["conditioning"], c["iterations"],
             ", ".join(f"{k}: {_rel(v, out)}" for k, v in c["runs"].items()), c.get("seconds")]
            for n, c in results["candidates"].items()]
    return [Table(["candidate", "model", "DiffAugment", "conditioning", "iterations", "runs",
                   "seconds"], rows, caption="Stage (a): every candidate architecture, with and without DiffAugment; "
                                             "seconds 0-ish: reused from an earlier (resumed) run")]


def _evaluation(results: dict[str, Any], out: Path) -> list[Any]:
    from synthmed.utility.figures import utility_bar_chart

    ev, rk = results["evaluation"], results["ranking"]
    space = next(iter(ev.values()))["feature_space"]
    rows = []
    for i, name in enumerate(rk["order"]):
        fm = ev[name]["feature_metrics"]
        rows.append([i + 1, name, fm[rk["metric"]]["n_sets"],
                     *[Estimate(fm[m]["value"], fm[m]["ci_low"], fm[m]["ci_high"])
                       if fm.get(m, {}).get("ci_low") is not None else fm.get(m, {}).get("value") for m in _SHOWN]])
    metric = rk["metric"]
    ivs = {n: Interval(**{k: _num(v) if k != "n" else v for k, v in rk["tests"][metric]["intervals"][n].items()})
           for n in rk["order"]}
    fig = utility_bar_chart(ivs, out / "figures" / f"ranking_{metric}.png", metric, None, (), baseline="")
    links = "\n".join(f"- {n}: {_rel(ev[n]['report'], out)} (synthetic sets in {_rel(ev[n]['pool'], out)})"
                      for n in rk["order"])
    return [
        Table(["rank", "candidate", "sets", *[m + (" (lower better)" if m in ("fid", "kid", "mmd_rbf") else "")
                                             for m in _SHOWN]], rows, caption=(
            f"Stage (b): mean over synthetic sets (each the size of the real set, every class in the real "
            f"proportion) with bootstrap 95% intervals over real and synthetic images; feature space {space['name']} "
            f"({space['feature_dim']}-d, weights {str(space.get('weights_sha256'))[:16]}). Ranked by {metric} "
            f"({'lower' if rk['lower_is_better'] else 'higher'} is better). {PRECISION_CAVEAT}.")),
        Figure(fig, caption=f"{metric} per candidate: mean with 95% CI over the synthetic sets"),
        Text("Each candidate's full evaluation report (fidelity, diversity, privacy, embeddings, slices):\n" + links),
    ]


def _ranking(results: dict[str, Any]) -> list[Any]:
    rk = results["ranking"]
    alpha = results["config"]["ranking"]["alpha"]
    slices = Path(results["evaluation"][rk["winner"]]["report"]).parent / "figures" / f"{rk['winner']}_slices.png"
    anova = [[m, f"F({t['anova']['df_between']},{t['anova']['df_within']})", t["anova"]["f"], t["anova"]["p"]]
             for m, t in rk["tests"].items()]
    pairs = [[m, x["a"], x["b"], x["mean_difference"], x["statistic"], x["df"], x["p"], x["p_corrected"],
              x["significant"]] for m, t in rk["tests"].items() for x in t["t_tests_bonferroni"]]
    how = "forced by ranking.winner" if rk["forced"] else f"best mean {rk['metric']}"
    return [
        Text(f"Winner: {rk['winner']} ({how}; {rk['metric']} {rk['means'][rk['winner']]:.4g}). Order: "
             + " > ".join(rk["order"]) + "."),
        Table(["metric", "df", "F", "p"], anova, caption="One-way fixed-effects ANOVA over the per-set scores "
                                                         "between candidate architectures (paper 000)"),
        Table(["metric", "a", "b", "mean a - b", "t", "df", "p", "p (Bonferroni)", "significant"], pairs,
              caption=f"Two-tailed unpaired t-tests between every pair of candidates, Bonferroni-corrected over the "
                      f"pairs of one metric (alpha {alpha})"),
        *([Figure(slices, caption=f"Real (left) and synthetic (right) images of the winner {rk['winner']}, per class "
                                  "(from its evaluation report)")] if slices.is_file() else []),
    ]


def conditioning_figure(results: dict[str, Any], path: Path) -> Path:
    """The ranking metric per conditioning method and class, mean with 95% CI over the synthetic
    sets (paper 000 Fig. 4)."""
    import numpy as np

    from synthmed.report.figures import _new_figure, _save_figure

    rk = results["conditioning"]["ranking"]
    t = rk["tests"][rk["metric"]]
    methods = rk["order"]
    per = t.get("per_class_intervals") or {m: {"all classes": t["intervals"][m]} for m in methods}
    classes = list(next(iter(per.values())))
    fig = _new_figure(max(4.0, 1.4 * len(methods) + 1.5), 3.4)
    ax = fig.subplots()
    x = np.arange(len(methods))
    width = 0.8 / max(1, len(classes))
    for j, cls in enumerate(classes):
        iv = [per[m][cls] for m in methods]
        mean = np.array([_num(d["mean"]) for d in iv])
        err = np.array([[_num(d["mean"]) - _num(d["low"]) for d in iv], [_num(d["high"]) - _num(d["mean"]) for d in iv]])
        ax.bar(x - 0.4 + width * (j + 0.5), mean, width, yerr=np.nan_to_num(err), capsize=3, label=str(cls))
    ax.set_xticks(x, methods)
    ax.set_ylabel(rk["metric"] + (" (lower is better)" if rk["lower_is_better"] else " (higher is better)"))
    ax.legend(fontsize=7, title="class", title_fontsize=7)
    return _save_figure(fig, path)


def _conditioning(results: dict[str, Any], out: Path) -> list[Any]:
    c = results["conditioning"]
    rk = c["ranking"]
    alpha = results["config"]["ranking"]["alpha"]
    how = "forced by conditioning.winner" if rk["forced"] else f"best mean {rk['metric']}"
    basis = ("averaged over the classes (each class's synthetic images against that class's real images)"
             if rk["basis"] == "per-class" else "over all images (some method had no per-class values)")
    rows = []
    for i, method in enumerate(rk["order"]):
        ev = c["methods"][method]
        groups = {"all": ev["feature_metrics"], **(ev.get("per_class_feature_metrics") or {})}
        for cls, fm in groups.items():
            rows.append([i + 1 if cls == "all" else "", method if cls == "all" else "", cls,
                         *[Estimate(fm[m]["value"], fm[m]["ci_low"], fm[m]["ci_high"])
                           if fm.get(m, {}).get("ci_low") is not None else fm.get(m, {}).get("value")
                           for m in _SHOWN]])
    tests = [[r[0], r[2], r[5], r[4], r[6]] for r in conditioning_test_rows(results) if r[1] != "t_test_bonferroni_class_mean"]
    pairs = [[m, x["a"], x["b"], x["mean_difference"], x["statistic"], x["df"], x["p"], x["p_corrected"],
              x["significant"]] for m, t in rk["tests"].items() for x in t["t_tests_bonferroni"]]
    skipped = {m: ev.get("per_class_skipped") for m, ev in c["methods"].items() if ev.get("per_class_skipped")}
    win = c["methods"][rk["winner"]]
    slices = Path(win["report"]).parent / "figures" / f"{rk['winner']}_slices.png"
    links = "\n".join(f"- {m}: {_rel(c['methods'][m]['report'], out)} (runs: "
                      f"{', '.join(sorted({_rel(v, out) for v in c['methods'][m]['runs'].values()}))}"
                      f"{'; the candidate runs' if c['methods'][m].get('reused_candidate_runs') else ''})"
                      for m in rk["order"])
    return [
        Text(f"Stage (d): the winner {c['candidate']} extended with {len(rk['order'])} conditioning method(s) "
             f"(paper 000: one GAN per class, an auxiliary classifier trained on the real data and frozen, a "
             f"projection discriminator). Chosen: {rk['winner']} ({how}; {rk['metric']} {basis}: "
             f"{rk['means'][rk['winner']]:.4g}). Order: " + " > ".join(rk["order"]) + "."),
        Table(["rank", "method", "class", *[m + (" (lower better)" if m in ("fid", "kid", "mmd_rbf") else "")
                                            for m in _SHOWN]], rows,
              caption="Mean over the labelled synthetic sets with bootstrap 95% intervals, for every class together "
                      f"(all) and per class. {PRECISION_CAVEAT}."),
        Figure(conditioning_figure(results, out / "figures" / f"conditioning_{rk['metric']}.png"),
               caption=f"{rk['metric']} per conditioning method and class, mean with 95% CI over the synthetic sets "
                       "(paper 000 Fig. 4)"),
        Table(["metric", "test or term", "df", "F", "p"], tests,
              caption="Two-way ANOVA (method x class) over the per-set, per-class values (paper 000: F(2,54) and "
                      "F(1,54)), and a one-way ANOVA over the class-averaged per-set values"),
        Table(["metric", "a", "b", "mean a - b", "t", "df", "p", "p (Bonferroni)", "significant"], pairs,
              caption=f"Two-tailed unpaired t-tests between every pair of methods on the class-averaged per-set "
                      f"values, Bonferroni-corrected over the pairs of one metric (alpha {alpha})"),
        *([Text("Per-class metrics skipped: " + "; ".join(f"{m}: {v}" for m, v in skipped.items()))] if skipped else []),
        *([Figure(slices, caption=f"Real (left) and synthetic (right) images of {rk['winner']}, per class")]
          if slices.is_file() else []),
        Text("Each method's full evaluation report:\n" + links),
    ]


def _utility(results: dict[str, Any], out: Path) -> list[Any]:
    from synthmed.utility.report import utility_sections

    u = results["utility"]
    res = copy.deepcopy(u["results"])
    for by in res["summary"]["intervals"].values():  # metrics.json stores NaN as null
        for c, iv in by.items():
            by[c] = {k: (_num(v) if k not in ("n",) else v) for k, v in iv.items()}
    try:
        sections = utility_sections(res, Path(u["report"]).parent)
    except (KeyError, TypeError, ValueError) as e:  # keep the protocol report even if the layout changed
        log.warning("utility sections could not be embedded (%s); linking the report", e)
        return [Text(f"Stage (e): see {_rel(u['report'], out)}")]
    how = u.get("conditioning", "per-class")
    blocks: list[Any] = [Text(f"Stage (e): the utility protocol with the winner {u['winner']} ({how}"
                              f"{': one run per class' if how == 'per-class' else ': one conditional model'}) as "
                              f"synthetic source; the full report: {_rel(u['report'], out)}")]
    for sec in sections:
        blocks.append(Text(sec.title))
        blocks.extend(sec.blocks)
    return blocks


def _sweeps(results: dict[str, Any], out: Path) -> list[Any]:
    from synthmed.protocol.sweeps import sweep_figure

    sw = results["sweeps"]
    summary = sw["summary"]
    blocks: list[Any] = [Text(
        f"Stage (f): paper 004's benchmark with the winner ({results.get('selected', {}).get('conditioning', 'per-class')}). "
        "Every point derives a dataset (classes: the k most "
        "frequent classes; samples per class: a seeded subsample of n subjects per class; resolution: images "
        "resampled to r per edge), trains the generators (one per class, or one conditional model) on fold 0's "
        "training subjects only, and trains "
        "the classifier on real and on synthetic images, both tested on fold 0's real test subjects. AUC_real - "
        "AUC_syn: the AUC lost by training on synthetic data; Delta_syn = AUC_syn(synthetic test) - "
        "AUC_syn(real test). Mean, SD and 95% CI over the seeds.")]
    rows = []
    for s in summary.values():
        for r in s["rows"]:
            rows.append([s["title"], r["value"], r["composition"], len(r["seeds"]), _est(r["auc_real"]),
                         _est(r["auc_syn"]), _est(r["gap"]), r["gap"]["sd"], _est(r["delta_syn"])])
    blocks.append(Table(["sweep", "value", "synthetic set", "seeds", "AUC real", "AUC syn", "AUC real - AUC syn",
                         "SD", "Delta_syn"], rows, caption="Per point: mean [95% CI] over seeds"))
    tests = []
    for s in summary.values():
        for comp, t in s["mann_whitney"].items():
            for key, label in (("gap", "AUC real - AUC syn"), ("delta_syn", "Delta_syn")):
                x = t[key]
                tests.append([s["title"], comp, label, f"{t['first']} vs {t['last']}", x["n_first"], x["n_last"],
                              x["u"], x["p_two_sided"], x["p_less"], x["p_greater"]])
    blocks.append(Table(["sweep", "synthetic set", "quantity", "extremes", "n", "n", "U", "p two-sided",
                         "p (first < last)", "p (first > last)"], tests,
                        caption="Mann-Whitney U tests between the extreme settings over the seeds (paper 004: "
                                "one-sided)"))
    if summary:
        blocks.append(Figure(sweep_figure(summary, out / "figures" / "sweeps.png"),
                             caption="AUC on real test data after training on real (line, ±SD) or synthetic "
                                     "(bars, ±SD) images, per sweep (paper 004 Fig. 2)"))
    leak = [p for p in sw["points"] if not p.get("generators_trained_on_fold0_train_only", True)]
    if leak:
        blocks.append(Text(f"Caution: in {len(leak)} point(s) the generators' training subjects differ from fold "
                           "0's training subjects."))
    return blocks


def write_protocol_report(results: dict[str, Any], out: Path) -> Path:
    write_csvs(results, out)
    report = Report("synthmed protocol: " + results["ranking"]["winner"] + " wins")
    report.add("Setup", *_setup(results))
    report.add("(a) Candidate architectures", *_candidates(results, out))
    report.add("(b) Evaluation of every candidate", *_evaluation(results, out))
    report.add("(c) Ranking and statistics between architectures", *_ranking(results))
    if "conditioning" in results:
        report.add("(d) Conditional architectures (paper 000 Fig. 4)", *_conditioning(results, out))
    if "utility" in results:
        report.add("(e) Downstream utility of the winner", *_utility(results, out))
    if "sweeps" in results:
        report.add("(f) Benchmark sweeps (paper 004)", *_sweeps(results, out))
    t = results["timing"]
    report.add("Run", KeyValues({"stages (s)": t["stages_s"], "total (s)": t["total_s"],
                                 "peak memory (MB)": t["peak_memory_mb"]}))
    return write_report(report, out, results=results)
