"""Statistics of a reader study: tests against chance and inter-reader agreement.

- Per reader: the number of correct answers out of those given is tested against 50% with an
  exact binomial test (``scipy.stats.binomtest``), with a Clopper-Pearson interval.
- Over readers: the one-sample Wilcoxon signed-rank test of the per-reader accuracies against
  0.5, as in paper 004 (Sec. S.8; ``scipy.stats.wilcoxon``).
- Agreement: Cohen's kappa for two readers (``sklearn.metrics.cohen_kappa_score``) and
  Fleiss' kappa for more (Fleiss 1971, implemented here; the test of kappa = 0 uses the
  null variance of Fleiss, Nee & Landis 1979).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


def binomial_test(correct: int, n: int, chance: float = 0.5) -> dict[str, Any]:
    """Exact binomial test of ``correct`` successes in ``n`` answers against ``chance``.

    Returns:
        ``{"correct", "n", "accuracy", "ci_low", "ci_high", "p_two_sided", "p_greater"}``:
        the 95% Clopper-Pearson interval of the accuracy, the two-sided p-value and the
        one-sided p-value for "better than chance".  Values are None when ``n == 0``.
    """
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return {"correct": 0, "n": 0, "accuracy": None, "ci_low": None, "ci_high": None,
                "p_two_sided": None, "p_greater": None}
    two = stats.binomtest(correct, n, chance, alternative="two-sided")
    ci = two.proportion_ci(confidence_level=0.95, method="exact")
    greater = stats.binomtest(correct, n, chance, alternative="greater")
    return {"correct": int(correct), "n": int(n), "accuracy": correct / n, "ci_low": float(ci.low),
            "ci_high": float(ci.high), "p_two_sided": float(two.pvalue), "p_greater": float(greater.pvalue)}


def wilcoxon_vs_chance(values: Sequence[float], chance: float = 0.5) -> dict[str, Any] | None:
    """One-sample Wilcoxon signed-rank test of per-reader accuracies against ``chance``.

    The differences are rounded to 12 decimals before ranking, so that accuracies which differ
    from ``chance`` by the same amount tie as they should (``23/40 - 0.5`` and ``0.5 - 17/40``
    differ in the 17th digit in floating point, which would rank them 1 and 2 instead of 1.5 and
    1.5).  Differences of exactly zero are then dropped (Wilcoxon's original treatment), as
    SciPy's default does.  Paper 004 (S.8) used the one-sided form; all three alternatives are returned:
    ``greater`` (readers beat chance), ``less`` (readers are below chance, the direction
    paper 004 reports) and ``two-sided``.

    Args:
        values: one accuracy per reader.
        chance: the accuracy of guessing.

    Returns:
        ``{"n", "n_nonzero", "statistic", "p_two_sided", "p_greater", "p_less", "min_p_one_sided"}``
        or None when every difference is zero (no test is possible).
    """
    d = np.round(np.asarray(values, dtype=np.float64) - chance, 12)  # floating-point noise must not break ties
    d[d == 0] = 0.0  # -0.0 from rounding
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return None
    out: dict[str, Any] = {"n": int(d.size), "n_nonzero": nz}
    for alt, key in (("two-sided", "p_two_sided"), ("greater", "p_greater"), ("less", "p_less")):
        res = stats.wilcoxon(d, alternative=alt, zero_method="wilcox")
        out[key] = float(res.pvalue)
        if alt == "two-sided":
            out["statistic"] = float(res.statistic)
    out["min_p_one_sided"] = 0.5 ** nz  # the smallest p any outcome could give with this many readers
    return out


def cohen_kappa(a: Sequence[str], b: Sequence[str], labels: Sequence[str] = ("real", "synthetic")) -> float | None:
    """Cohen's kappa of two readers' answers on the same items (None when undefined:
    no items, or both readers gave one and the same answer throughout)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError(f"both readers must answer the same items, got {len(a)} and {len(b)} answers")
    if len(a) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa: sklearn warns and returns NaN
        k = float(cohen_kappa_score(list(a), list(b), labels=list(labels)))
    return k if math.isfinite(k) else None


@dataclass(frozen=True)
class FleissKappa:
    """Fleiss' kappa and its parts (Fleiss 1971).

    Attributes:
        kappa: (P_bar - P_e) / (1 - P_e).
        p_observed: P_bar, the mean proportion of agreeing rater pairs per subject.
        p_expected: P_e = sum_j p_j^2, the agreement expected by chance.
        category_kappas: kappa_j per category (Fleiss 1971), NaN for unused categories.
        z: kappa / SE_0 with the null standard error of Fleiss, Nee & Landis (1979).
        p_value: one-sided p-value of z (agreement above chance).
        n_subjects: N.
        n_raters: m, raters per subject.
    """

    kappa: float
    p_observed: float
    p_expected: float
    category_kappas: tuple[float, ...]
    z: float
    p_value: float
    n_subjects: int
    n_raters: int


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> FleissKappa:
    """Fleiss' kappa of an (N subjects, k categories) table of rating counts.

    Args:
        table: ``table[i, j]`` = number of raters who put subject ``i`` into category ``j``;
            every row must sum to the same number of raters m >= 2.

    Returns:
        :class:`FleissKappa` (kappa is NaN when P_e = 1, i.e. every rating is one category).
    """
    n = np.asarray(table, dtype=np.float64)
    if n.ndim != 2 or n.shape[0] < 1 or n.shape[1] < 2:
        raise ValueError(f"expected an (N subjects, k >= 2 categories) table, got shape {n.shape}")
    if np.any(n < 0) or np.any(n != np.round(n)):
        raise ValueError("rating counts must be non-negative integers")
    m_per_row = n.sum(axis=1)
    m = float(m_per_row[0])
    if not np.all(m_per_row == m) or m < 2:
        raise ValueError(f"every subject needs the same number (>= 2) of ratings, got {sorted(set(m_per_row))}")
    n_subj = n.shape[0]
    p = n.sum(axis=0) / (n_subj * m)  # category proportions p_j
    q = 1.0 - p
    p_i = ((n * n).sum(axis=1) - m) / (m * (m - 1))
    p_bar = float(p_i.mean())
    p_e = float((p * p).sum())
    kappa = (p_bar - p_e) / (1.0 - p_e) if p_e < 1.0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa_j = 1.0 - (n * (m - n)).sum(axis=0) / (n_subj * m * (m - 1) * p * q)
    pq = float((p * q).sum())
    if pq > 0:
        var0 = 2.0 / (n_subj * m * (m - 1) * pq ** 2) * (pq ** 2 - float((p * q * (q - p)).sum()))
        z = kappa / math.sqrt(var0) if var0 > 0 else math.nan
    else:
        z = math.nan
    p_val = float(stats.norm.sf(z)) if math.isfinite(z) else math.nan
    return FleissKappa(float(kappa), p_bar, p_e, tuple(float(x) for x in kappa_j), float(z), p_val, n_subj, int(m))


def rating_table(answers: Sequence[Sequence[str]], categories: Sequence[str] = ("real", "synthetic")) -> np.ndarray:
    """(N, k) count table from one row of answers per subject (one answer per rater)."""
    index = {c: j for j, c in enumerate(categories)}
    out = np.zeros((len(answers), len(categories)), dtype=np.int64)
    for i, row in enumerate(answers):
        for a in row:
            out[i, index[a]] += 1
    return out


def confusion(is_real: Sequence[bool], said_real: Sequence[bool]) -> dict[str, int]:
    """Counts with "judged real" as the positive call (paper 002, Table 2).

    Returns:
        ``tp`` real judged real, ``fn`` real judged synthetic, ``fp`` synthetic judged real,
        ``tn`` synthetic judged synthetic.
    """
    t = np.asarray(is_real, dtype=bool)
    s = np.asarray(said_real, dtype=bool)
    if t.shape != s.shape:
        raise ValueError(f"{t.shape} truths for {s.shape} answers")
    return {"tp": int((t & s).sum()), "fn": int((t & ~s).sum()), "fp": int((~t & s).sum()), "tn": int((~t & ~s).sum())}
