"""Reader-study statistics against published worked examples and independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from synthmed.reader.stats import (
    binomial_test,
    cohen_kappa,
    confusion,
    fleiss_kappa,
    rating_table,
    wilcoxon_vs_chance,
)

# Fleiss (1971), Psychological Bulletin 76(5):378-382, Table 1: 30 patients, 6 psychiatrists each,
# counts per diagnosis (depression, personality disorder, schizophrenia, neurosis, other).
FLEISS_1971 = np.array([
    [0, 0, 0, 6, 0], [0, 3, 0, 0, 3], [0, 1, 4, 0, 1], [0, 0, 0, 0, 6], [0, 3, 0, 3, 0],
    [2, 0, 4, 0, 0], [0, 0, 4, 0, 2], [2, 0, 3, 1, 0], [2, 0, 0, 4, 0], [0, 0, 0, 0, 6],
    [1, 0, 0, 5, 0], [1, 1, 0, 4, 0], [0, 3, 3, 0, 0], [1, 0, 0, 5, 0], [0, 2, 0, 3, 1],
    [0, 0, 5, 0, 1], [3, 0, 0, 1, 2], [5, 1, 0, 0, 0], [0, 2, 0, 4, 0], [1, 0, 2, 0, 3],
    [0, 0, 0, 0, 6], [0, 1, 0, 5, 0], [0, 2, 0, 1, 3], [2, 0, 0, 4, 0], [1, 0, 0, 4, 1],
    [0, 5, 0, 1, 0], [4, 0, 0, 0, 2], [0, 2, 0, 4, 0], [1, 0, 5, 0, 0], [0, 0, 0, 0, 6],
])

# The worked example of the Wikipedia article "Fleiss' kappa": 10 subjects, 14 raters, 5 categories.
WIKIPEDIA = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_reproduces_fleiss_1971() -> None:
    fk = fleiss_kappa(FLEISS_1971)
    # published: P_bar = .5556, P_e = .2201 (from the rounded p_j = .144 .144 .167 .306 .239), kappa = .430
    assert fk.p_observed == pytest.approx(0.5556, abs=5e-5)
    assert fk.p_expected == pytest.approx(0.2201, abs=5e-4)
    assert fk.p_expected == pytest.approx(sum(p ** 2 for p in (26 / 180, 26 / 180, 30 / 180, 55 / 180, 43 / 180)))
    assert fk.kappa == pytest.approx(0.430, abs=5e-4)
    # published per-category kappas (Fleiss 1971, Table 2)
    assert np.round(fk.category_kappas, 3).tolist() == [0.245, 0.245, 0.520, 0.471, 0.566]
    # z with the null variance of Fleiss, Nee & Landis (1979), as R's irr::kappam.fleiss reports: 17.65
    assert fk.z == pytest.approx(17.65, abs=0.01)
    assert fk.p_value < 1e-10
    assert (fk.n_subjects, fk.n_raters) == (30, 6)


def test_fleiss_kappa_reproduces_the_wikipedia_example() -> None:
    fk = fleiss_kappa(WIKIPEDIA)
    assert fk.p_observed == pytest.approx(0.378, abs=5e-4)
    assert fk.p_expected == pytest.approx(0.213, abs=5e-4)
    assert fk.kappa == pytest.approx(0.210, abs=5e-4)


def test_fleiss_observed_agreement_is_the_mean_pairwise_agreement() -> None:
    # an independent route: raw ratings -> fraction of agreeing rater pairs per subject
    rng = np.random.default_rng(3)
    ratings = rng.integers(0, 2, size=(40, 4))
    ratings[:20] = ratings[:20, :1]  # some subjects with full agreement
    table = rating_table([["real" if v == 0 else "synthetic" for v in row] for row in ratings])
    fk = fleiss_kappa(table)
    pairs = list(itertools.combinations(range(4), 2))
    p_bar = np.mean([np.mean([row[a] == row[b] for a, b in pairs]) for row in ratings])
    p1 = ratings.mean()
    p_e = p1 ** 2 + (1 - p1) ** 2
    assert fk.p_observed == pytest.approx(p_bar)
    assert fk.kappa == pytest.approx((p_bar - p_e) / (1 - p_e))


def test_fleiss_with_two_raters_is_scotts_pi() -> None:
    a = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0])
    b = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    table = np.stack([(a == 0).astype(int) + (b == 0), (a == 1).astype(int) + (b == 1)], axis=1)
    po = np.mean(a == b)
    pm = (a.mean() + b.mean()) / 2
    pi = (po - (pm ** 2 + (1 - pm) ** 2)) / (1 - (pm ** 2 + (1 - pm) ** 2))
    assert fleiss_kappa(table).kappa == pytest.approx(pi)


def test_fleiss_edge_cases() -> None:
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]).kappa == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]).kappa)  # one category only: undefined
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="non-negative integers"):
        fleiss_kappa([[2, -1], [0, 1]])
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 0]])  # a single rater


def test_cohen_kappa_reproduces_the_textbook_example() -> None:
    # 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = .7, p_e = .5, kappa = .4
    a = ["real"] * 25 + ["synthetic"] * 25
    b = ["real"] * 20 + ["synthetic"] * 5 + ["real"] * 10 + ["synthetic"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["real"] * 4, ["real"] * 4) is None  # chance agreement 1: undefined
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["real"], [])


def test_binomial_test_matches_direct_summation() -> None:
    k, n = 33, 50
    pmf = [math.comb(n, i) * 0.5 ** n for i in range(n + 1)]
    greater = sum(pmf[k:])
    two = min(1.0, sum(p for p in pmf if p <= pmf[k] * (1 + 1e-7)))
    b = binomial_test(k, n)
    assert b["accuracy"] == pytest.approx(k / n)
    assert b["p_greater"] == pytest.approx(greater, rel=1e-9)
    assert b["p_two_sided"] == pytest.approx(two, rel=1e-9)
    # Clopper-Pearson bounds are beta quantiles
    assert b["ci_low"] == pytest.approx(sps.beta.ppf(0.025, k, n - k + 1))
    assert b["ci_high"] == pytest.approx(sps.beta.ppf(0.975, k + 1, n - k))
    assert binomial_test(0, 0)["accuracy"] is None
    with pytest.raises(ValueError):
        binomial_test(5, 3)


def test_wilcoxon_reproduces_paper_004_reader_studies() -> None:
    # paper 004, Tables S2 and S3: per-radiologist accuracies at 128 x 128; the paper reports
    # p < 0.05 (chest x-rays) and p < 0.01 (brain CT) for the one-sided test
    chest = [0.45, 0.52, 0.45, 0.52, 0.50, 0.25, 0.49, 0.39, 0.40, 0.55, 0.39]
    brain = [0.51, 0.45, 0.44, 0.44, 0.46, 0.50, 0.48, 0.36, 0.40]
    w_chest, w_brain = wilcoxon_vs_chance(chest), wilcoxon_vs_chance(brain)
    assert w_chest is not None and w_brain is not None
    assert 0.01 < w_chest["p_less"] < 0.05
    assert w_brain["p_less"] < 0.01
    assert w_chest["n_nonzero"] == 10 and w_brain["n_nonzero"] == 8  # exact 0.5s are dropped
    assert w_brain["p_greater"] > 0.9


def _exact_signed_rank_p_greater(d: np.ndarray) -> float:
    """P(W+ >= observed) by enumerating every sign assignment (no ties or zeros in ``d``)."""
    ranks = sps.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    count = sum(ranks[list(signs)].sum() >= observed
                for r in range(len(d) + 1) for signs in itertools.combinations(range(len(d)), r))
    return count / 2 ** len(d)


def test_wilcoxon_matches_exact_enumeration() -> None:
    acc = np.array([0.62, 0.55, 0.47, 0.71, 0.58, 0.66, 0.435])
    w = wilcoxon_vs_chance(acc)
    assert w is not None
    assert w["p_greater"] == pytest.approx(_exact_signed_rank_p_greater(acc - 0.5))
    assert w["min_p_one_sided"] == pytest.approx(0.5 ** 7)
    assert wilcoxon_vs_chance([0.5, 0.5]) is None


def test_confusion_counts() -> None:
    c = confusion([True, True, False, False, False], [True, False, True, False, False])
    assert c == {"tp": 1, "fn": 1, "fp": 1, "tn": 2}


def test_wilcoxon_ties_from_floating_point_noise_are_ties() -> None:
    # 23/40 - 0.5 and 17/40 - 0.5 are +0.075 and -0.075, but in floating point their magnitudes
    # differ in the 17th digit; unrounded they get ranks 1 and 2 instead of the tied 1.5 and 1.5.
    # Exactly: W+ takes 0, 1.5, 1.5, 3 with probability 1/4 each and is 1.5, so
    # P(W+ <= 1.5) = P(W+ >= 1.5) = 3/4 and the two-sided p is 1.
    w = wilcoxon_vs_chance([23 / 40, 17 / 40])
    assert w is not None and w["n_nonzero"] == 2
    assert w["p_less"] == pytest.approx(0.75)
    assert w["p_greater"] == pytest.approx(0.75)
    assert w["p_two_sided"] == pytest.approx(1.0)
    assert w["statistic"] == pytest.approx(1.5)
