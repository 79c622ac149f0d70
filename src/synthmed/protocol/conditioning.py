"""Stage (d) of the protocol: the winning architecture extended with each conditioning method,
evaluated per class and ranked (paper 000, "Architectures for conditional image synthetization",
"Conditional architecture selection", Fig. 4).

Paper 000 extends its best basic architecture (alpha-SN-GAN) three ways: one GAN per class, an
auxiliary classifier trained on the real data beforehand and frozen (``frozen-classifier``), and a
projection discriminator; it evaluates each method's ten synthetic sets per clinical group, tests
the methods and the groups with a two-way ANOVA (F(2, 54), F(1, 54)) and post-hoc t-tests, and
keeps the best method (there: the auxiliary classifier) to synthesise the diagnosis classifier's
training data.

Here every method in ``conditioning.methods`` is trained on the protocol's data (per-class runs
are the winner's candidate runs when the candidates were trained per class), sampled into
``evaluation.n_sets`` labelled sets the size of the real set (every class in the real
proportion) and evaluated with :func:`synthmed.evaluate.runner.evaluate`, which also reports every
metric per class.  :func:`rank_methods` ranks the methods by ``ranking.metric`` averaged over the
classes, per synthetic set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthmed.errors import SynthmedError
from synthmed.protocol.config import ProtocolConfig
from synthmed.utility.stats import one_way_anova, pairwise_t_tests, t_interval, two_way_anova


def per_class_sets(evaluation: dict[str, Any], metric: str) -> dict[str, list[float]] | None:
    """Per class, the per-set values of ``metric`` of one method's evaluation (None when the
    evaluation has no per-class metrics, e.g. a class too small for the k-NN metrics)."""
    per_class = evaluation.get("per_class_feature_metrics") or {}
    if not per_class or evaluation.get("per_class_skipped"):
        return None
    out = {}
    for cls, rows in per_class.items():
        row = rows.get(metric) if isinstance(rows, dict) else next((r for r in rows if r["metric"] == metric), None)
        if row is None:
            return None
        out[cls] = [float(v) for v in row["per_set"]]
    return out


def rank_methods(evaluations: dict[str, dict[str, Any]], cfg: ProtocolConfig) -> dict[str, Any]:
    """The best conditioning method and the statistics between methods.

    Per method and synthetic set, the score is ``ranking.metric`` averaged over the classes (each
    class's synthetic images against that class's real images; paper 000 Fig. 4).  When some
    method has no per-class values the overall metric of each set is used for every method
    (``basis: overall``).  Per tested metric: a two-way ANOVA method x class over the per-set,
    per-class values, a one-way ANOVA over the class-averaged per-set values and Bonferroni-
    corrected two-tailed t-tests between every pair of methods.

    Returns:
        ``{"metric", "lower_is_better", "basis", "order", "means", "winner", "forced", "tests"}``.
    """
    r, k = cfg.ranking, cfg.conditioning
    lower = r.lower_is_better()
    names = list(evaluations)
    if not names:
        raise SynthmedError("no conditioning method was evaluated")
    basis = "per-class" if all(per_class_sets(evaluations[n], r.metric) for n in names) else "overall"

    def scores(name: str, metric: str) -> list[float]:
        pcs = per_class_sets(evaluations[name], metric) if basis == "per-class" else None
        if pcs:
            return np.mean(np.array(list(pcs.values()), dtype=np.float64), axis=0).tolist()
        return [float(v) for v in evaluations[name]["feature_metrics"][metric]["per_set"]]

    means = {n: float(np.mean(scores(n, r.metric))) for n in names}
    order = sorted(names, key=lambda n: (means[n] if lower else -means[n], names.index(n)))
    winner = k.winner or order[0]
    tests: dict[str, Any] = {}
    for m in dict.fromkeys([r.metric, *r.tested_metrics]):
        groups = {n: scores(n, m) for n in names}
        anova = one_way_anova(groups)
        entry: dict[str, Any] = {
            "intervals": {n: t_interval(v).as_dict() for n, v in groups.items()},
            "anova": {"f": anova.f, "p": anova.p, "df_between": anova.df_between, "df_within": anova.df_within,
                      "groups": list(anova.groups)},
            "t_tests_bonferroni": [t.__dict__ for t in pairwise_t_tests(groups, r.alpha)]}
        cells = {n: per_class_sets(evaluations[n], m) for n in names}
        if all(cells.values()):
            vals, meth, cls = [], [], []
            for n, pcs in cells.items():
                assert pcs is not None
                for c, v in pcs.items():
                    vals += v
                    meth += [n] * len(v)
                    cls += [c] * len(v)
            entry["per_class_intervals"] = {n: {c: t_interval(v).as_dict() for c, v in pcs.items()}
                                            for n, pcs in cells.items() if pcs}
            entry["two_way_anova"] = [t.__dict__ for t in two_way_anova(vals, meth, cls, ("method", "class"))]
        tests[m] = entry
    return {"metric": r.metric, "lower_is_better": lower, "basis": basis, "order": order, "means": means,
            "winner": winner, "forced": bool(k.winner), "tests": tests}
