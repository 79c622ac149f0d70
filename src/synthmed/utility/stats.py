"""Statistics over per-fold results (paper 000, "Statistical analyses"; paper 004, S.5).

- :func:`t_interval`: mean with a t-based 95% confidence interval (paper 000 reports means with the
  distance to the CI bounds);
- :func:`one_way_anova`: fixed-effects one-way ANOVA across training-set compositions;
- :func:`two_way_anova`: two-factor ANOVA with interaction (paper 000 Fig. 4: conditional
  architecture x clinical group, F(2, 54) and F(1, 54) from ten synthetic sets per cell);
- :func:`pairwise_t_tests`: two-tailed unpaired (Student) t-tests for all pairs with Bonferroni
  correction over all of them (paper 000: "Bonferroni correction for all possible combinations");
- :func:`mann_whitney`: Mann-Whitney U tests against a baseline (paper 004 compares
  AUC_real - AUC_syn distributions this way);
- :func:`one_sample_t`: a one-sample t-test against a chance level (paper 000: "well above chance").

All functions skip NaN values and return NaN statistics where a test is undefined (fewer than two
values in a group, or zero variance everywhere).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class Interval:
    """Mean and t-based confidence interval of one group."""

    mean: float
    low: float
    high: float
    n: int
    sd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean +- t_{n-1, (1+confidence)/2} * sd / sqrt(n); one value gives an interval of zero width
    only in the sense that low = high = NaN (undefined)."""
    from scipy import stats

    a = _clean(values)
    n = len(a)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(a.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    sd = float(a.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class Anova:
    """One-way ANOVA result: F(df_between, df_within) and its p-value."""

    f: float
    p: float
    df_between: int
    df_within: int
    groups: tuple[str, ...]


def one_way_anova(groups: Mapping[str, Sequence[float]]) -> Anova:
    """Fixed-effects one-way ANOVA across groups (``scipy.stats.f_oneway``).

    Groups with fewer than one finite value are dropped; fewer than two groups, or no residual
    degrees of freedom, give NaN.
    """
    from scipy import stats

    clean = {k: _clean(v) for k, v in groups.items()}
    clean = {k: v for k, v in clean.items() if len(v) >= 1}
    names = tuple(clean)
    n = sum(len(v) for v in clean.values())
    dfb, dfw = len(clean) - 1, n - len(clean)
    if len(clean) < 2 or dfw < 1:
        return Anova(math.nan, math.nan, dfb, dfw, names)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant groups; the result is then NaN or inf
        res = stats.f_oneway(*clean.values())
    return Anova(float(res.statistic), float(res.pvalue), dfb, dfw, names)


@dataclass(frozen=True)
class AnovaTerm:
    """One row of a two-way ANOVA table."""

    term: str
    sum_sq: float
    df: float
    f: float
    p: float


def two_way_anova(values: Sequence[float], factor_a: Sequence[str], factor_b: Sequence[str],
                  names: tuple[str, str] = ("a", "b")) -> list[AnovaTerm]:
    """Two-factor fixed-effects ANOVA with interaction (type II sums of squares; for the balanced
    designs of the protocol, one value per synthetic set and cell, identical to type I and III),
    fitted with statsmodels' OLS (``C(a) * C(b)``) and ``anova_lm``.

    Args:
        values: one observation per row (NaN rows are dropped).
        factor_a, factor_b: the levels of the two factors per row.
        names: the factors' names in the returned ``term`` fields.

    Returns:
        Rows for ``names[0]``, ``names[1]``, ``names[0]:names[1]`` and ``residual`` (f and p NaN);
        NaN statistics when a factor has fewer than two levels or there are no residual degrees
        of freedom.
    """
    import pandas as pd
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    y = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(y)
    frame = pd.DataFrame({"y": y[keep], "a": np.asarray(factor_a, dtype=object)[keep],
                          "b": np.asarray(factor_b, dtype=object)[keep]})
    terms = [names[0], names[1], f"{names[0]}:{names[1]}", "residual"]
    cells = frame.groupby(["a", "b"]).size()
    if frame["a"].nunique() < 2 or frame["b"].nunique() < 2 or len(frame) - len(cells) < 1:
        return [AnovaTerm(t, math.nan, math.nan, math.nan, math.nan) for t in terms]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # perfect fits: statsmodels warns, F is then inf or NaN
        table = anova_lm(ols("y ~ C(a) * C(b)", data=frame).fit(), typ=2)
    rows = ["C(a)", "C(b)", "C(a):C(b)", "Residual"]
    return [AnovaTerm(t, float(table.loc[r, "sum_sq"]), float(table.loc[r, "df"]), float(table.loc[r, "F"]),
                      float(table.loc[r, "PR(>F)"])) for t, r in zip(terms, rows, strict=True)]


@dataclass(frozen=True)
class PairTest:
    """One two-group comparison."""

    a: str
    b: str
    statistic: float
    df: float
    p: float
    p_corrected: float
    significant: bool
    mean_difference: float


def pairwise_t_tests(groups: Mapping[str, Sequence[float]], alpha: float = 0.05,
                     pairs: Sequence[tuple[str, str]] | None = None) -> list[PairTest]:
    """Two-tailed unpaired Student t-tests (``scipy.stats.ttest_ind``) with Bonferroni correction.

    Args:
        groups: name -> values (per-fold metric values).
        alpha: family-wise significance level.
        pairs: the comparisons; default all unordered pairs of groups (the correction factor is
            the number of comparisons actually made).

    Returns:
        One :class:`PairTest` per pair; ``p_corrected = min(1, p * m)``, ``significant`` when
        ``p_corrected < alpha``; ``mean_difference`` = mean(a) - mean(b).
    """
    from scipy import stats

    names = list(groups)
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(names, 2))
    m = len(pairs)
    out = []
    for a, b in pairs:
        x, y = _clean(groups[a]), _clean(groups[b])
        diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        if len(x) < 2 or len(y) < 2:
            t, p = math.nan, math.nan
        else:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # nearly identical groups: scipy's precision notice
                res = stats.ttest_ind(x, y, equal_var=True, alternative="two-sided")
            t, p = float(res.statistic), float(res.pvalue)
        pc = min(1.0, p * m) if not math.isnan(p) else math.nan
        out.append(PairTest(a, b, t, float(len(x) + len(y) - 2), p, pc, bool(pc < alpha), diff))
    return out


def mann_whitney(groups: Mapping[str, Sequence[float]], baseline: str, alternative: str = "two-sided",
                 alpha: float = 0.05) -> list[PairTest]:
    """Mann-Whitney U tests (``scipy.stats.mannwhitneyu``) of every group against ``baseline``,
    Bonferroni-corrected over those comparisons; ``statistic`` is U of the group, ``df`` NaN."""
    from scipy import stats

    others = [k for k in groups if k != baseline]
    m = max(1, len(others))
    base = _clean(groups[baseline])
    out = []
    for k in others:
        x = _clean(groups[k])
        diff = float(x.mean() - base.mean()) if len(x) and len(base) else math.nan
        if len(x) < 1 or len(base) < 1:
            u, p = math.nan, math.nan
        else:
            res = stats.mannwhitneyu(x, base, alternative=alternative)
            u, p = float(res.statistic), float(res.pvalue)
        pc = min(1.0, p * m) if not math.isnan(p) else math.nan
        out.append(PairTest(k, baseline, u, math.nan, p, pc, bool(pc < alpha), diff))
    return out


def one_sample_t(values: Sequence[float] | np.ndarray, popmean: float) -> tuple[float, float, int]:
    """Two-tailed one-sample t-test of ``values`` against ``popmean``: (t, p, df)."""
    from scipy import stats

    a = _clean(values)
    if len(a) < 2:
        return math.nan, math.nan, max(0, len(a) - 1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.ttest_1samp(a, popmean)
    return float(res.statistic), float(res.pvalue), len(a) - 1
