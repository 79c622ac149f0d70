"""From per-fold records to the protocol's numbers: means with CIs, tests, AUC gaps, Delta_syn."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from synthmed.utility.compositions import COMPOSITIONS, SMALL
from synthmed.utility.config import UtilityConfig
from synthmed.utility.folds import Cohort
from synthmed.utility.metrics import METRIC_NAMES
from synthmed.utility.stats import mann_whitney, one_sample_t, one_way_anova, pairwise_t_tests, t_interval

#: Metrics that get ANOVA and post-hoc tests (paper 000 tests accuracy; paper 004 uses the AUC).
TESTED_METRICS = ("accuracy", "balanced_accuracy", "auc")


def _value(rec: dict[str, Any], metric: str) -> float:
    v = rec["metrics"].get(metric) if metric in METRIC_NAMES else rec.get(metric)
    return math.nan if v is None else float(v)


def per_composition(records: list[dict[str, Any]], metric: str, order: list[str]) -> dict[str, list[float]]:
    """composition -> per-fold values of ``metric`` (sorted by fold), in ``order``."""
    out: dict[str, list[float]] = {}
    for name in order:
        recs = sorted((r for r in records if r["composition"] == name), key=lambda r: r["fold"])
        if recs:
            out[name] = [_value(r, metric) for r in recs]
    return out


def auc_gaps(records: list[dict[str, Any]], baseline: str = "real") -> dict[str, list[float]]:
    """Per composition, AUC(baseline) - AUC(composition) paired by fold (paper 004's AUC_real - AUC_syn)."""
    base = {r["fold"]: _value(r, "auc") for r in records if r["composition"] == baseline}
    out: dict[str, list[float]] = {}
    for r in sorted(records, key=lambda r: r["fold"]):
        if r["composition"] != baseline and r["fold"] in base:
            out.setdefault(r["composition"], []).append(base[r["fold"]] - _value(r, "auc"))
    return out


def summarize(records: list[dict[str, Any]], cfg: UtilityConfig, cohort: Cohort) -> dict[str, Any]:
    """Every number of the report from the per-fold records (JSON-ready)."""
    st = cfg.statistics
    order = [c for c in cfg.compositions if any(r["composition"] == c for r in records)]
    intervals = {m: {c: t_interval(v, st.confidence).as_dict() for c, v in per_composition(records, m, order).items()}
                 for m in METRIC_NAMES}
    tests: dict[str, Any] = {}
    for m in TESTED_METRICS:
        groups = per_composition(records, m, order)
        small = {k: v for k, v in groups.items() if k in SMALL}
        tests[m] = {
            "anova_all": asdict(one_way_anova(groups)),
            "anova_small": asdict(one_way_anova(small)) if len(small) >= 2 else None,
            "t_tests_bonferroni": [asdict(t) for t in pairwise_t_tests(groups, st.alpha)],
            "mann_whitney_vs_baseline": ([asdict(t) for t in mann_whitney(groups, st.baseline, alpha=st.alpha)]
                                         if st.baseline in groups else []),
        }
    majority = per_composition(records, "majority_rate", order)
    chance = {}
    for c in order:
        acc = per_composition(records, "accuracy", [c])[c]
        bal = per_composition(records, "balanced_accuracy", [c])[c]
        chance[c] = {"accuracy_vs_majority_rate": dict(zip(("t", "p", "df"), one_sample_t(
                         np.asarray(acc) - np.asarray(majority[c]), 0.0), strict=True)),
                     "balanced_accuracy_vs_0.5": dict(zip(("t", "p", "df"), one_sample_t(bal, 0.5), strict=True))}
    gaps = {c: t_interval(v, st.confidence).as_dict() for c, v in auc_gaps(records, st.baseline).items()}
    delta = {c: t_interval(v, st.confidence).as_dict()
             for c, v in per_composition(records, "delta_syn", order).items() if np.isfinite(v).any()}
    first_fold = min((r["fold"] for r in records), default=0)
    table1 = {r["composition"]: r["counts"] for r in records if r["fold"] == first_fold}
    overlap = [r["generator_overlap"]["test"] for r in records if r.get("generator_overlap")]
    return {
        "compositions": order, "folds": sorted({r["fold"] for r in records}), "intervals": intervals, "tests": tests,
        "chance_tests": chance, "auc_real_minus_auc": gaps, "delta_syn": delta,
        "chance_level": {"accuracy": float(np.mean([r["majority_rate"] for r in records])) if records else math.nan,
                         "balanced_accuracy": 1.0 / cohort.n_classes, "auc": 0.5},
        "training_sets_first_fold": {"fold": first_fold, "counts": table1},
        "generator_saw_test_subjects": int(max(overlap)) if overlap else 0,
        "large": [c for c in order if COMPOSITIONS[c].total_multiple > 1],
    }
