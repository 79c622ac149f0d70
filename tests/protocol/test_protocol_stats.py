"""Ranking statistics between candidate architectures and the sweeps' Mann-Whitney U tests, each
checked against an independent computation (formulas by hand, exact permutation distributions)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from protocol_helpers import tiny_raw
from scipy import stats

from synthmed.errors import SynthmedError
from synthmed.protocol import build_protocol_config
from synthmed.protocol.candidates import rank_candidates
from synthmed.protocol.sweeps import mann_whitney_extremes, summarize_sweeps


def _evaluations(values: dict[str, dict[str, list[float]]]) -> dict[str, dict]:
    return {n: {"feature_metrics": {m: {"per_set": v, "n_sets": len(v)} for m, v in by.items()}}
            for n, by in values.items()}


def _cfg(**ranking: object):
    return build_protocol_config(tiny_raw(Path("/x"), ranking={"metric": "fid", "tested_metrics": ["fid", "precision"], **ranking}))


def _anova_by_hand(groups: list[np.ndarray]) -> tuple[float, float]:
    allv = np.concatenate(groups)
    k, n = len(groups), len(allv)
    ssb = sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups)
    ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
    f = (ssb / (k - 1)) / (ssw / (n - k))
    return f, float(stats.f.sf(f, k - 1, n - k))


def _pooled_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    df = len(a) + len(b) - 2
    sp2 = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
    t = (a.mean() - b.mean()) / math.sqrt(sp2 * (1 / len(a) + 1 / len(b)))
    return t, float(2 * stats.t.sf(abs(t), df))


def test_ranking_anova_and_bonferroni_by_hand() -> None:
    rng = np.random.default_rng(3)
    fid = {"A": rng.normal(10, 1, 10), "B": rng.normal(12, 1, 10), "C": rng.normal(10.5, 1.5, 10)}
    prec = {"A": rng.uniform(0.2, 0.4, 10), "B": rng.uniform(0.5, 0.7, 10), "C": rng.uniform(0.1, 0.3, 10)}
    ev = _evaluations({n: {"fid": fid[n].tolist(), "precision": prec[n].tolist()} for n in fid})
    res = rank_candidates(ev, _cfg())
    assert res["winner"] == min(fid, key=lambda n: fid[n].mean())  # FID: lower is better
    assert res["order"] == sorted(fid, key=lambda n: fid[n].mean())
    for metric, groups in (("fid", fid), ("precision", prec)):
        f, p = _anova_by_hand(list(groups.values()))
        a = res["tests"][metric]["anova"]
        assert a["f"] == pytest.approx(f, rel=1e-10) and a["p"] == pytest.approx(p, rel=1e-8)
        assert (a["df_between"], a["df_within"]) == (2, 27)
        pairs = res["tests"][metric]["t_tests_bonferroni"]
        assert [(x["a"], x["b"]) for x in pairs] == list(itertools.combinations(groups, 2))
        for x in pairs:
            t, p = _pooled_t(groups[x["a"]], groups[x["b"]])
            assert x["statistic"] == pytest.approx(t, rel=1e-10) and x["p"] == pytest.approx(p, rel=1e-8)
            assert x["p_corrected"] == pytest.approx(min(1.0, 3 * p), rel=1e-8)
            assert x["significant"] == (min(1.0, 3 * p) < 0.05)
        iv = res["tests"][metric]["intervals"]["A"]
        half = stats.t.ppf(0.975, 9) * groups["A"].std(ddof=1) / math.sqrt(10)
        assert (iv["low"], iv["high"]) == pytest.approx((groups["A"].mean() - half, groups["A"].mean() + half))


def test_ranking_direction_and_forced_winner() -> None:
    ev = _evaluations({"A": {"fid": [1.0, 1.1], "precision": [0.2, 0.3]},
                       "B": {"fid": [2.0, 2.2], "precision": [0.8, 0.9]}})
    assert rank_candidates(ev, _cfg())["winner"] == "A"
    assert rank_candidates(ev, _cfg(metric="precision"))["winner"] == "B"  # higher is better
    assert rank_candidates(ev, _cfg(metric="fid", higher_is_better=True))["winner"] == "B"
    forced = rank_candidates(ev, _cfg(winner="B"))
    assert forced["winner"] == "B" and forced["forced"] and forced["order"][0] == "A"
    with pytest.raises(SynthmedError, match="ranking.winner"):
        rank_candidates(ev, _cfg(winner="Z"))


def _exact_u_p(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """U of a (pairs a > b, ties 1/2) and exact permutation p-values (no ties)."""
    def u(x: list[float], y: list[float]) -> float:
        return sum(1.0 if xi > yi else 0.5 if xi == yi else 0.0 for xi in x for yi in y)

    obs = u(a, b)
    pooled = a + b
    dist = []
    for idx in itertools.combinations(range(len(pooled)), len(a)):
        x = [pooled[i] for i in idx]
        y = [pooled[i] for i in range(len(pooled)) if i not in idx]
        dist.append(u(x, y))
    dist = np.array(dist)
    less, greater = float(np.mean(dist <= obs)), float(np.mean(dist >= obs))
    return obs, min(1.0, 2 * min(less, greater)), less, greater


def test_mann_whitney_between_extremes_exact() -> None:
    a, b = [0.31, 0.12, 0.25, 0.4], [0.05, -0.02, 0.08, 0.2]
    res = mann_whitney_extremes(a, b)
    u, two, less, greater = _exact_u_p(a, b)
    assert res["u"] == u
    assert (res["p_two_sided"], res["p_less"], res["p_greater"]) == pytest.approx((two, less, greater))
    assert mann_whitney_extremes([None, 0.1], [])["p_two_sided"] is None  # undefined, not a crash


def test_sweep_summary_over_seeds() -> None:
    cfg = build_protocol_config(tiny_raw(Path("/x")))
    points = []
    gaps = {3: [0.3, 0.25], 6: [0.1, 0.05]}
    for v, gs in gaps.items():
        for seed, g in enumerate(gs):
            points.append({"sweep": "samples_per_class", "value": v, "seed": seed, "auc_real": 0.9,
                           "by_composition": {"synthetic-small": {"auc": 0.9 - g, "gap": g, "delta_syn": 2 * g}}})
    s = summarize_sweeps(points, cfg)["samples_per_class"]
    row = next(r for r in s["rows"] if r["value"] == 3)
    assert row["gap"]["mean"] == pytest.approx(0.275) and row["gap"]["sd"] == pytest.approx(np.std([0.3, 0.25], ddof=1))
    assert row["auc_syn"]["mean"] == pytest.approx(0.625)
    mw = s["mann_whitney"]["synthetic-small"]
    assert (mw["first"], mw["last"]) == (3, 6)
    assert mw["gap"]["u"] == 4.0 and mw["gap"]["p_greater"] == pytest.approx(1 / 6)


def _two_way_by_hand(y: np.ndarray) -> dict[str, tuple[float, int, float, float]]:
    """Balanced two-factor ANOVA with interaction from the textbook sums of squares; ``y`` is
    (levels of A, levels of B, replicates).  term -> (SS, df, F, p)."""
    a, b, n = y.shape
    grand = y.mean()
    ma, mb, mab = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=2)
    ss_a = b * n * ((ma - grand) ** 2).sum()
    ss_b = a * n * ((mb - grand) ** 2).sum()
    ss_ab = n * ((mab - ma[:, None] - mb[None, :] + grand) ** 2).sum()
    ss_e = ((y - mab[:, :, None]) ** 2).sum()
    df_e = a * b * (n - 1)
    out = {}
    for term, ss, df in (("method", ss_a, a - 1), ("class", ss_b, b - 1), ("method:class", ss_ab, (a - 1) * (b - 1))):
        f = (ss / df) / (ss_e / df_e)
        out[term] = (ss, df, f, float(stats.f.sf(f, df, df_e)))
    out["residual"] = (ss_e, df_e, math.nan, math.nan)
    return out


def test_two_way_anova_matches_textbook_sums_of_squares() -> None:
    from synthmed.utility.stats import two_way_anova

    rng = np.random.default_rng(7)
    # 3 methods x 2 classes x 10 sets: paper 000's F(2, 54) and F(1, 54)
    y = rng.normal(0, 1, (3, 2, 10)) + np.array([0.0, 1.0, 0.3])[:, None, None] + np.array([0.0, 0.8])[None, :, None]
    meth = [m for m in "ABC" for _ in range(20)]
    cls = [c for _ in "ABC" for c in ("hc", "scz") for _ in range(10)]
    got = {t.term: t for t in two_way_anova(y.reshape(-1), meth, cls, ("method", "class"))}
    want = _two_way_by_hand(y)
    assert got["method"].df == 2 and got["class"].df == 1 and got["residual"].df == 54
    for term, (ss, df, f, p) in want.items():
        assert got[term].sum_sq == pytest.approx(ss, rel=1e-9) and got[term].df == df
        if term != "residual":
            assert got[term].f == pytest.approx(f, rel=1e-9) and got[term].p == pytest.approx(p, rel=1e-7)
    # one level of a factor, or no replicates: undefined, not an exception
    assert all(math.isnan(t.f) for t in two_way_anova([1.0, 2.0, 3.0], ["A"] * 3, ["x", "y", "x"]))
    assert all(math.isnan(t.f) for t in two_way_anova([1.0, 2.0, 3.0, 4.0], list("AABB"), list("xyxy")))


def test_conditioning_methods_ranked_by_class_mean_per_set() -> None:
    from synthmed.protocol.conditioning import rank_methods

    rng = np.random.default_rng(11)
    fid = {m: {c: rng.normal(mu + d, 1.0, 4) for c, d in (("hc", 0.0), ("scz", 2.0))}
           for m, mu in (("per-class", 12.0), ("frozen-classifier", 9.0), ("projection", 10.0))}
    ev = {m: {"feature_metrics": {"fid": {"per_set": (0.5 * (v["hc"] + v["scz"]) + 5).tolist()},
                                  "precision": {"per_set": [0.5] * 4}},
              "per_class_feature_metrics": {c: {"fid": {"per_set": x.tolist()}, "precision": {"per_set": [0.4] * 4}}
                                            for c, x in v.items()},
              "per_class_skipped": {}} for m, v in fid.items()}
    cfg = _cfg()
    cfg.conditioning.winner = ""  # tiny_raw forces one
    res = rank_methods(ev, cfg)
    assert not res["forced"]
    mean = {m: float(np.mean(0.5 * (v["hc"] + v["scz"]))) for m, v in fid.items()}
    assert res["basis"] == "per-class" and res["means"] == pytest.approx(mean)
    assert res["order"] == sorted(mean, key=mean.get) and res["winner"] == res["order"][0]
    f, p = _anova_by_hand([0.5 * (v["hc"] + v["scz"]) for v in fid.values()])
    assert res["tests"]["fid"]["anova"]["f"] == pytest.approx(f, rel=1e-10)
    want = _two_way_by_hand(np.array([[v["hc"], v["scz"]] for v in fid.values()]))
    got = {t["term"]: t for t in res["tests"]["fid"]["two_way_anova"]}
    assert got["class"]["f"] == pytest.approx(want["class"][2], rel=1e-9)
    assert got["method"]["p"] == pytest.approx(want["method"][3], rel=1e-7)
    # a method without per-class values: every method is ranked on the overall metric instead
    del ev["projection"]["per_class_feature_metrics"]
    res = rank_methods(ev, cfg)
    assert res["basis"] == "overall"
    assert res["means"]["per-class"] == pytest.approx(mean["per-class"] + 5)
    assert "two_way_anova" not in res["tests"]["fid"]
    cfg.conditioning.winner = "projection"
    assert rank_methods(ev, cfg)["winner"] == "projection"
