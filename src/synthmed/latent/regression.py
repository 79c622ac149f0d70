"""How much a measured property can be predicted from latent codes, and its direction in latent space.

* :func:`cross_validated_r2`: ridge regression from codes to a property, R^2 on held-out folds
  (paper 001, Table VI: ridge with lambda = 1e-4, logarithm of the measurement, R^2 on held-out data;
  there on thousands of subjects, so with tens of subjects we cross-validate and add a permutation
  test, which says whether an R^2 is distinguishable from chance).
* :func:`fit_linear_direction`: the linear model ``y ~ w . z + b`` whose weight vector is the latent
  direction of the property (paper 001, Sec. IV-E), and :meth:`LinearDirection.move_to`, which moves a
  latent code along it until the model predicts a target value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from synthmed.errors import ConfigError, DataError

#: Ridge penalties searched by ``alpha="cv"`` (inner efficient leave-one-out CV of RidgeCV).
CV_ALPHAS = tuple(float(a) for a in np.logspace(-4, 6, 21))


def _check_xy(codes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(codes, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"codes (N, D) and y (N,) expected, got {x.shape} and {y.shape}")
    return x, y


def _model(alpha: float | str) -> Any:
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reg = RidgeCV(alphas=CV_ALPHAS) if alpha == "cv" else Ridge(alpha=float(alpha))
    return make_pipeline(StandardScaler(), reg)


@dataclass
class RidgeResult:
    """Cross-validated ridge regression of one property on the latent codes.

    Attributes:
        property: the property's name.
        n: subjects with a value.
        alpha: the ridge penalty (a number, or ``"cv"`` for one chosen inside each training fold).
        log: whether the logarithm of the property was predicted (as paper 001).
        folds: number of folds.
        r2: R^2 of the pooled out-of-fold predictions.
        r2_folds: R^2 on each held-out fold.
        p_value: permutation p-value of ``r2`` (None without permutations).
        n_permutations: permutations run.
    """

    property: str
    n: int
    alpha: float | str
    log: bool
    folds: int
    r2: float
    r2_folds: list[float]
    p_value: float | None
    n_permutations: int

    @property
    def r2_mean(self) -> float:
        return float(np.mean(self.r2_folds))

    @property
    def r2_std(self) -> float:
        return float(np.std(self.r2_folds))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "r2_mean": self.r2_mean, "r2_std": self.r2_std}


def check_alpha(alpha: float | str) -> float | str:
    """A ridge penalty: a number >= 0 or ``"cv"``; ConfigError naming ``--alpha`` otherwise."""
    if alpha == "cv":
        return alpha
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"--alpha: expected a number >= 0 or cv, got {alpha!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"--alpha: expected a number >= 0 or cv, got {alpha!r}")
    return value


def _oof_r2(x: np.ndarray, y: np.ndarray, alpha: float | str, splits: list[tuple[np.ndarray, np.ndarray]]
            ) -> tuple[float, list[float]]:
    from sklearn.metrics import r2_score

    pred = np.zeros_like(y)
    per_fold = []
    for tr, te in splits:
        pred[te] = _model(alpha).fit(x[tr], y[tr]).predict(x[te])
        per_fold.append(float(r2_score(y[te], pred[te])) if len(te) > 1 else float("nan"))
    return float(r2_score(y, pred)), per_fold


def cross_validated_r2(codes: np.ndarray, y: np.ndarray, name: str = "property", alpha: float | str = 1e-4,
                       folds: int = 5, log: bool = False, seed: int = 0, n_permutations: int = 0) -> RidgeResult:
    """R^2 of ridge regression from latent codes to ``y`` on held-out folds.

    Codes are standardised on each training fold.  Subjects whose value is NaN are left out.

    Args:
        codes: (N, D) latent codes.
        y: (N,) property values.
        alpha: ridge penalty (paper 001: 1e-4) or ``"cv"`` (chosen by RidgeCV within each training fold).
        folds: K of the shuffled K-fold split (seeded).
        log: predict ``log(y)`` (paper 001 Table VI); needs positive values.
        n_permutations: > 0 adds a permutation test: the same CV with shuffled ``y``; p = (1 + #{R^2_perm >=
            R^2}) / (1 + n_permutations).
    """
    from sklearn.model_selection import KFold

    check_alpha(alpha)
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds: cross-validation needs at least 2 folds, got {folds}")
    x, y = _check_xy(codes, y)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if log:
        if (y <= 0).any():
            raise DataError(f"{name}: --log needs positive values; {int((y <= 0).sum())} subject(s) have values <= 0 "
                            f"(smallest {float(y.min()):g})")
        y = np.log(y)
    if len(y) < max(folds, 3):
        raise DataError(f"{name}: {len(y)} subject(s) with a numeric value, too few for {folds}-fold cross-validation")
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(x))
    r2, per_fold = _oof_r2(x, y, alpha, splits)
    p_value = None
    if n_permutations > 0:
        rng = np.random.default_rng(seed)
        null = [_oof_r2(x, rng.permutation(y), alpha, splits)[0] for _ in range(n_permutations)]
        p_value = (1 + sum(v >= r2 for v in null)) / (1 + n_permutations)
    return RidgeResult(name, int(len(y)), alpha, log, folds, r2, per_fold, p_value, n_permutations)


@dataclass
class LinearDirection:
    """A property's linear model on latent codes, ``y ≈ weights . z + intercept`` (paper 001, Sec. IV-E).

    Attributes:
        property: name of the property.
        weights: (D,) the direction in latent space (in the units of z, not standardised).
        intercept: the model's intercept.
        r2_train: R^2 of the fit on the codes it was fitted to.
        alpha: ridge penalty of the fit.
    """

    property: str
    weights: np.ndarray
    intercept: float
    r2_train: float
    alpha: float

    def predict(self, z: np.ndarray) -> np.ndarray:
        """Predicted property (N,) for codes (N, D)."""
        return np.asarray(z, dtype=np.float64) @ self.weights + self.intercept

    def move_to(self, z: np.ndarray, target: float | np.ndarray) -> np.ndarray:
        """Move codes (N, D) along the direction until the model predicts ``target``: the smallest such move,
        ``z + (target - predict(z)) w / |w|^2``."""
        z = np.asarray(z, dtype=np.float64)
        w = self.weights
        step = (np.asarray(target, dtype=np.float64) - self.predict(z)) / float(w @ w)
        return z + np.asarray(step).reshape(-1, 1) * w


def fit_linear_direction(codes: np.ndarray, y: np.ndarray, name: str = "property", alpha: float = 1e-4) -> LinearDirection:
    """Least-squares fit of ``y`` on the codes (paper 001, Sec. IV-E), with a small ridge penalty because the
    codes usually have more dimensions than there are subjects (then it is the minimum-norm solution as
    ``alpha`` -> 0).  NaN values are left out."""
    from sklearn.linear_model import Ridge

    alpha = float(check_alpha(alpha))
    x, y = _check_xy(codes, y)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) < 2:
        raise DataError(f"{name}: need at least 2 subjects with a numeric value to fit a direction, got {len(y)}")
    reg = Ridge(alpha=alpha).fit(x, y)
    if not np.any(reg.coef_):
        raise DataError(f"{name}: the fitted direction is zero (a constant property?)")
    return LinearDirection(name, reg.coef_.astype(np.float64), float(reg.intercept_), float(reg.score(x, y)), alpha)
