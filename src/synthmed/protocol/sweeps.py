"""Stage (f): paper 004's benchmark sweeps with the winning architecture.

What each sweep varies (everything else stays at its base setting):

- ``classes``: the number of classes (label combinations in paper 004); the ``k`` most frequent
  classes are kept with all their subjects (or ``base_samples_per_class``), at ``base_resolution``;
- ``samples_per_class``: a seeded subsample of ``n`` subjects of every class, at
  ``base_resolution``;
- ``resolution``: every image resampled to ``r``^d (area averaging when shrinking), all classes
  with ``base_samples_per_class``.

One point (sweep, value, seed): derive the dataset, partition it with the utility protocol's
stratified k-fold (seed = the repetition's seed) and write fold 0's validation and test subjects as
the dataset's held-out test set, so the generators (the winner's config, ``train.subset:
trainval``; one per class, or one conditional model with the method stage (d) chose) see exactly
fold 0's training subjects; then the utility protocol on fold 0 with
``sweeps.compositions`` (real first).  Per point: AUC_real, AUC_syn, AUC_real - AUC_syn and
Delta_syn (paper 004).  Per sweep: one-sided and two-sided Mann-Whitney U tests of AUC_real -
AUC_syn (and of Delta_syn) between the two extreme values over the seeds (paper 004, S.5).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.prepared import PreparedDataset, load_prepared
from synthmed.protocol.config import Candidate, ProtocolConfig, utility_mapping
from synthmed.protocol.data import (
    balanced_rows,
    dataset_summary,
    is_complete,
    most_frequent_classes,
    write_derived,
)
from synthmed.utility.compositions import make_partition
from synthmed.utility.stats import t_interval

SWEEP_TITLES = {"classes": "number of classes", "samples_per_class": "samples per class",
                "resolution": "resolution (edge length)"}


def point_dataset(ds: PreparedDataset, cfg: ProtocolConfig, sweep: str, value: int, seed: int,
                  out: Path) -> PreparedDataset:
    """The derived dataset of one sweep point, with fold 0's validation + test subjects held out."""
    from synthmed.data.splits import make_splits

    s = cfg.sweeps
    assert ds.labels is not None
    labels = ds.labels
    n_classes = len(set(labels.tolist()))
    classes = most_frequent_classes(labels, value) if sweep == "classes" else most_frequent_classes(labels, n_classes)
    per_class = value if sweep == "samples_per_class" else s.base_samples_per_class
    size = value if sweep == "resolution" else s.base_resolution
    rows = balanced_rows(labels, per_class, classes, seed)
    ids = [ds.subject_ids[i] for i in rows]
    new_labels = [classes.index(int(labels[i])) for i in rows]
    part = make_partition(ids, new_labels, s.folds, seed)
    held = part["folds"][0]["val"] + part["folds"][0]["test"]
    splits = make_splits(ids, new_labels, n_folds=2, seed=seed, fixed_test=held)
    if is_complete(out):
        have = load_prepared(out)
        if have.subject_ids == ids and (have.splits or {}).get("test") == splits["test"]:
            return have
        shutil.rmtree(out)
    return write_derived(ds, rows, out, size=size if size and size != ds.shape[0] else 0, classes=classes,
                         splits=splits, note=f"sweep {sweep}={value}, seed {seed}")


def run_point(ds: PreparedDataset, winner: Candidate, method: str, cfg: ProtocolConfig, sweep: str, value: int,
              seed: int, out: Path, device: str, progress: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """One sweep point end to end with the winner trained with conditioning ``method`` (per-class or
    a conditional method); returns its numbers (JSON-ready)."""
    from synthmed.protocol.candidates import class_sources, train_runs

    data = point_dataset(ds, cfg, sweep, value, seed, out / "data")
    extra = _flat(cfg.sweeps.generator_set)
    if method not in ("per-class", "none"):  # a conditional model: stage (d)'s overrides, then the sweep's
        extra = {**_flat(cfg.conditioning.set), **extra}
    runs = train_runs(winner, method, data, out / "runs", progress, seed=seed, extra=extra, say=say)
    from synthmed.utility import build_utility_config, run_utility

    ucfg = build_utility_config(utility_mapping(cfg, class_sources(runs), str(data.root), sweep=True))
    ucfg.seed = seed
    if ucfg.train.device == "auto":
        ucfg.train.device = device
    say(f"sweep {sweep}={value}, seed {seed}: utility ({', '.join(ucfg.compositions)})")
    run_utility(ucfg, out / "utility", resume=(out / "utility").exists(), progress=progress)
    results = json.loads((out / "utility" / "metrics.json").read_text(encoding="utf-8"))["results"]
    train_ids: set[str] = set()
    for run in set(runs.values()):
        train_ids |= set(json.loads((Path(run) / "data.json").read_text(encoding="utf-8"))["train_subject_ids"])
    part = json.loads((out / "utility" / "partition.json").read_text(encoding="utf-8"))
    fold0 = set(part["folds"][0]["train"])
    recs = {r["composition"]: r for r in results["records"] if r["fold"] == 0}
    real = recs.get("real", {}).get("metrics", {}).get("auc")
    point: dict[str, Any] = {"sweep": sweep, "value": value, "seed": seed, "conditioning": method,
                             "dataset": dataset_summary(data),
                             "runs": runs, "utility": str(out / "utility" / "report.html"),
                             "generator_train_subjects": len(train_ids),
                             "auc_real": real, "by_composition": {}}
    point["generators_trained_on_fold0_train_only"] = train_ids == fold0
    for comp in cfg.sweeps.compositions[1:]:
        r = recs.get(comp)
        if r is None:
            continue
        auc = r["metrics"].get("auc")
        point["by_composition"][comp] = {
            "auc": auc, "gap": None if auc is None or real is None else real - auc,
            "delta_syn": r.get("delta_syn"), "accuracy": r["metrics"].get("accuracy"),
            "balanced_accuracy": r["metrics"].get("balanced_accuracy")}
    return point


def _flat(mapping: dict[str, Any]) -> dict[str, Any]:
    """Nested or dotted overrides as one flat ``{"a.b": value}`` mapping."""
    from synthmed.protocol.config import overrides_from_mapping

    return {k: json.loads(v) for k, v in (o.split("=", 1) for o in overrides_from_mapping(mapping))}


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mann_whitney_extremes(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mann-Whitney U of ``a`` (first extreme) vs ``b`` (last extreme): U of ``a`` and the p-values of
    the two-sided and both one-sided alternatives (``less``: a tends to be smaller than b)."""
    from scipy import stats

    a, b = _finite(a), _finite(b)
    out: dict[str, Any] = {"n_first": len(a), "n_last": len(b)}
    if not a or not b:
        return {**out, "u": None, "p_two_sided": None, "p_less": None, "p_greater": None}
    out["u"] = float(stats.mannwhitneyu(a, b, alternative="two-sided").statistic)
    for alt in ("two-sided", "less", "greater"):
        out[f"p_{alt.replace('-', '_')}"] = float(stats.mannwhitneyu(a, b, alternative=alt).pvalue)
    return out


def summarize_sweeps(points: list[dict[str, Any]], cfg: ProtocolConfig) -> dict[str, Any]:
    """Per sweep and value: mean, SD and 95% CI over seeds; Mann-Whitney U between the extremes."""
    out: dict[str, Any] = {}
    for sweep, values in cfg.sweeps.dimensions().items():
        pts = [p for p in points if p["sweep"] == sweep]
        rows = []
        for comp in cfg.sweeps.compositions[1:]:
            for v in values:
                at = [p for p in pts if p["value"] == v]

                def col(key: str, at: list[dict[str, Any]] = at, comp: str = comp) -> dict[str, Any]:
                    if key == "auc_real":
                        vals = _finite([p["auc_real"] for p in at])
                    else:
                        vals = _finite([p["by_composition"].get(comp, {}).get(key) for p in at])
                    iv = t_interval(vals).as_dict()
                    return {**iv, "values": vals}

                rows.append({"composition": comp, "value": v, "seeds": [p["seed"] for p in at],
                             "auc_real": col("auc_real"), "auc_syn": col("auc"), "gap": col("gap"),
                             "delta_syn": col("delta_syn")})
        tests = {}
        if len(values) >= 2:
            first, last = values[0], values[-1]
            for comp in cfg.sweeps.compositions[1:]:
                def vals(v: int, key: str, comp: str = comp, pts: list[dict[str, Any]] = pts) -> list[Any]:
                    return [p["by_composition"].get(comp, {}).get(key) for p in pts if p["value"] == v]

                tests[comp] = {"first": first, "last": last,
                               "gap": mann_whitney_extremes(vals(first, "gap"), vals(last, "gap")),
                               "delta_syn": mann_whitney_extremes(vals(first, "delta_syn"), vals(last, "delta_syn"))}
        out[sweep] = {"title": SWEEP_TITLES[sweep], "values": values, "rows": rows, "mann_whitney": tests}
    return out


def sweep_figure(summary: dict[str, Any], path: Path) -> Path:
    """AUC_real and AUC_syn (mean +- SD over seeds) per value, one panel per sweep (paper 004 Fig. 2)."""
    from synthmed.report.figures import _new_figure, _save_figure

    sweeps = list(summary)
    fig = _new_figure(4.2 * max(1, len(sweeps)), 3.4)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(sweeps))))
    for ax, sweep in zip(axes, sweeps, strict=False):
        s = summary[sweep]
        x = np.arange(len(s["values"]))
        comps = sorted({r["composition"] for r in s["rows"]})
        real = [next(r for r in s["rows"] if r["value"] == v)["auc_real"] for v in s["values"]]
        rm = np.array([d["mean"] for d in real], dtype=float)
        rsd = np.nan_to_num(np.array([d["sd"] for d in real], dtype=float))
        ax.plot(x, rm, color="black", label="AUC real")
        ax.fill_between(x, rm - rsd, rm + rsd, color="black", alpha=0.15)
        width = 0.8 / max(1, len(comps))
        for j, comp in enumerate(comps):
            rows = [next(r for r in s["rows"] if r["value"] == v and r["composition"] == comp) for v in s["values"]]
            m = np.array([r["auc_syn"]["mean"] for r in rows], dtype=float)
            sd = np.nan_to_num(np.array([r["auc_syn"]["sd"] for r in rows], dtype=float))
            ax.bar(x - 0.4 + width * (j + 0.5), m, width, yerr=sd, capsize=3, alpha=0.8, label=f"AUC {comp}")
        ax.set_xticks(x, [str(v) for v in s["values"]])
        ax.set_xlabel(s["title"])
        ax.set_ylabel("AUC on real test data")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, loc="lower right")
    return _save_figure(fig, path)
