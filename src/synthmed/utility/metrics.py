"""Per-fold classification metrics on the real test set.

Paper 000 reports accuracy (Fig. 6) and, in Fig. S11, further measures; paper 003 sensitivity,
specificity and their harmonic mean; paper 004 the AUC.  For two classes the positive class is label
1 (the second class in the prepared dataset's sorted class list, e.g. ``depr`` of ``control``/``depr``);
with more classes sensitivity, specificity and F1 are macro averages over one-vs-rest problems and
the AUC is the one-vs-rest macro AUC.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

#: Metric names in reporting order.
METRIC_NAMES = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "harmonic_mean", "f1")


def sensitivity_specificity(y_true: np.ndarray, y_pred: np.ndarray, positive: int = 1) -> tuple[float, float, float]:
    """Sensitivity TP/(TP+FN), specificity TN/(TN+FP) and their harmonic mean (paper 003).

    Args:
        y_true: (N,) true labels.
        y_pred: (N,) predicted labels.
        positive: the positive label.

    Returns:
        ``(sensitivity, specificity, harmonic_mean)``; a rate whose denominator is 0 is NaN, and the
        harmonic mean of two zero rates is 0.
    """
    t = np.asarray(y_true) == positive
    p = np.asarray(y_pred) == positive
    tp, fn = int(np.sum(t & p)), int(np.sum(t & ~p))
    tn, fp = int(np.sum(~t & ~p)), int(np.sum(~t & p))
    sen = tp / (tp + fn) if tp + fn else math.nan
    spe = tn / (tn + fp) if tn + fp else math.nan
    return sen, spe, harmonic_mean(sen, spe)


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b) (paper 003's HM); 0 when both are 0, NaN when either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, y_pred: np.ndarray | None = None,
                           n_classes: int = 2) -> dict[str, float]:
    """Accuracy, balanced accuracy, AUC, sensitivity, specificity, their harmonic mean and F1.

    Args:
        y_true: (N,) integer labels in ``0 .. n_classes-1``.
        scores: (N,) scores of class 1 for two classes (probabilities or SVM decision values),
            (N, n_classes) class probabilities otherwise.
        y_pred: (N,) predicted labels; default: score >= 0.5 (two classes) or the arg-max.
        n_classes: the number of classes.

    Returns:
        ``{name: value}`` for :data:`METRIC_NAMES`; the AUC is NaN when the test set holds one class.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    y_true = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if y_pred is None:
        y_pred = (scores >= 0.5).astype(np.int64) if n_classes == 2 else scores.argmax(axis=1)
    y_pred = np.asarray(y_pred).astype(np.int64)
    present = np.unique(y_true)
    out: dict[str, float] = {"accuracy": float(np.mean(y_true == y_pred))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class predicted but absent from a small test fold
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else math.nan
    if n_classes == 2:
        out["auc"] = float(roc_auc_score(y_true, scores)) if len(present) == 2 else math.nan
        sen, spe, hm = sensitivity_specificity(y_true, y_pred, 1)
        f1 = float(f1_score(y_true, y_pred, pos_label=1, zero_division=0))
    else:
        out["auc"] = (float(roc_auc_score(y_true, scores, multi_class="ovr", average="macro",
                                          labels=list(range(n_classes))))
                      if len(present) == n_classes else math.nan)
        rates = [sensitivity_specificity(y_true, y_pred, k) for k in present]
        sen = float(np.nanmean([r[0] for r in rates]))
        spe = float(np.nanmean([r[1] for r in rates]))
        hm = harmonic_mean(sen, spe)
        f1 = float(f1_score(y_true, y_pred, labels=list(present), average="macro", zero_division=0))
    out.update(sensitivity=sen, specificity=spe, harmonic_mean=hm, f1=f1)
    return {k: out[k] for k in METRIC_NAMES}


def auc_only(y_true: np.ndarray, scores: np.ndarray, n_classes: int = 2) -> float:
    """The (macro one-vs-rest) AUC, NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(np.int64)
    if len(np.unique(y_true)) < n_classes:
        return math.nan
    if n_classes == 2:
        return float(roc_auc_score(y_true, scores))
    return float(roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def majority_rate(y_true: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class (the chance level of accuracy)."""
    y = np.asarray(y_true)
    return float(np.bincount(y).max() / len(y)) if len(y) else math.nan


def jsonable_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """NaN -> None for JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
