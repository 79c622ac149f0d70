"""Metrics, statistics and the GAN-train SVM against hand-computed and scipy/sklearn references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from synthmed.utility.metrics import classification_metrics, majority_rate, sensitivity_specificity
from synthmed.utility.stats import mann_whitney, one_sample_t, one_way_anova, pairwise_t_tests, t_interval
from synthmed.utility.svm import GANTrainSVM, SVMParams


def test_sensitivity_specificity_harmonic_mean_by_hand() -> None:
    # TP = 3, FN = 1, TN = 4, FP = 2
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    sen, spe, hm = sensitivity_specificity(y_true, y_pred)
    assert sen == pytest.approx(3 / 4) and spe == pytest.approx(4 / 6)
    assert hm == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))  # = 12/17
    assert hm == pytest.approx(12 / 17)
    assert sensitivity_specificity([1, 0], [0, 1])[2] == 0.0  # both rates 0
    assert math.isnan(sensitivity_specificity([0, 0], [0, 1])[0])  # no positives: sensitivity undefined


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    m = classification_metrics(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    sen, spe, hm = sensitivity_specificity(y, pred)
    assert (m["sensitivity"], m["specificity"], m["harmonic_mean"]) == pytest.approx((sen, spe, hm))
    assert math.isnan(classification_metrics(np.zeros(5, int), np.linspace(0, 1, 5))["auc"])
    assert majority_rate(np.array([0, 0, 0, 1])) == 0.75


def test_multiclass_metrics() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[[0, 1, 2, 0, 2, 2]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, p, n_classes=3)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    assert m["sensitivity"] == pytest.approx(np.mean([1, 0.5, 1]))


def test_t_interval_by_hand() -> None:
    x = [0.5, 0.6, 0.7, 0.55, 0.65]
    iv = t_interval(x)
    sd = np.std(x, ddof=1)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((0.6, 0.6 - half, 0.6 + half, 5))
    assert math.isnan(t_interval([0.4]).low) and t_interval([]).n == 0
    assert t_interval([0.1, math.nan, 0.3]).n == 2  # NaN folds are skipped


def test_anova_by_hand_and_scipy() -> None:
    g = {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "c": [7.0, 8.0, 9.0]}
    # grand mean 5; SSB = 3 * (9 + 0 + 9) = 54, df 2; SSW = 3 * 2 = 6, df 6 -> F = 27 / 1 = 27
    a = one_way_anova(g)
    assert (a.f, a.df_between, a.df_within) == pytest.approx((27.0, 2, 6))
    assert a.p == pytest.approx(sps.f.sf(27.0, 2, 6))
    assert a.p == pytest.approx(sps.f_oneway(*g.values()).pvalue)
    assert math.isnan(one_way_anova({"a": [1.0]}).f)


def test_pairwise_t_tests_bonferroni() -> None:
    g = {"real": [0.60, 0.55, 0.65, 0.58, 0.62], "mixed": [0.75, 0.80, 0.78, 0.82, 0.79], "syn": [0.61, 0.57, 0.66,
                                                                                                   0.59, 0.60]}
    res = pairwise_t_tests(g)
    assert [(r.a, r.b) for r in res] == [("real", "mixed"), ("real", "syn"), ("mixed", "syn")]
    ref = sps.ttest_ind(g["real"], g["mixed"])
    assert res[0].statistic == pytest.approx(ref.statistic) and res[0].p == pytest.approx(ref.pvalue)
    assert res[0].df == 8  # paper 000 reports t_8 for 5 vs 5 folds
    assert res[0].p_corrected == pytest.approx(min(1.0, 3 * ref.pvalue))
    assert res[0].significant and not res[1].significant
    assert res[1].p_corrected == 1.0 or res[1].p_corrected == pytest.approx(3 * res[1].p)


def test_mann_whitney_and_one_sample() -> None:
    g = {"real": [0.1, 0.2, 0.3, 0.4], "x": [0.5, 0.6, 0.7, 0.8], "y": [0.15, 0.25, 0.35, 0.45]}
    res = mann_whitney(g, "real")
    ref = sps.mannwhitneyu(g["x"], g["real"], alternative="two-sided")
    assert res[0].a == "x" and res[0].statistic == pytest.approx(ref.statistic)
    assert res[0].p == pytest.approx(ref.pvalue) and res[0].p_corrected == pytest.approx(min(1, 2 * ref.pvalue))
    t, p, df = one_sample_t([0.6, 0.65, 0.7, 0.55, 0.62], 0.5)
    ref1 = sps.ttest_1samp([0.6, 0.65, 0.7, 0.55, 0.62], 0.5)
    assert (t, p, df) == pytest.approx((ref1.statistic, ref1.pvalue, 4))


def test_gan_train_svm_sensitivity_specificity() -> None:
    rng = np.random.default_rng(0)
    train_x = np.concatenate([rng.normal(-2, 0.5, (20, 3)), rng.normal(2, 0.5, (20, 3))])
    train_y = np.repeat([0, 1], 20)
    svm = GANTrainSVM(SVMParams(kernel="linear")).fit(train_x, train_y)
    # test points: 3 positives on the positive side and 1 on the negative side; 4 negatives, 1 of them
    # on the positive side -> TP 3, FN 1, TN 3, FP 1
    test_x = np.array([[2, 2, 2], [3, 2, 1], [1.5, 2, 2], [-2, -2, -2], [-2, -2, -1], [-3, -1, -2], [-1, -2, -2],
                       [2, 2.5, 2]], dtype=float)
    test_y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    pred = svm.predict(test_x)
    assert pred.tolist() == [1, 1, 1, 0, 0, 0, 0, 1]
    sen, spe, hm = sensitivity_specificity(test_y, pred)
    assert (sen, spe, hm) == pytest.approx((0.75, 0.75, 0.75))
    m = classification_metrics(test_y, svm.scores(test_x), pred)
    assert (m["sensitivity"], m["specificity"], m["harmonic_mean"]) == pytest.approx((0.75, 0.75, 0.75))
    assert m["auc"] == pytest.approx(roc_auc_score(test_y, svm.scores(test_x)))
