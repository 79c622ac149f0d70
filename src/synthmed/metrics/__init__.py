"""synthmed.metrics: pure functions on features or images (importing fills ``METRICS``).

Feature metrics take ``real: (N, D)`` and ``fake: (M, D)`` vectors from one declared feature space;
image metrics take ``(N, C, *spatial)`` batches in [-1, 1]. See :mod:`synthmed.metrics.feature`,
:mod:`synthmed.metrics.image` and :mod:`synthmed.metrics.stats`; the Inception score takes a
classifier's class probabilities (:mod:`synthmed.metrics.inception_score`).
"""

from synthmed.metrics.feature import (
    DensityCoverage,
    FIDResult,
    KIDResult,
    MMDResult,
    PrecisionRecall,
    SmallSampleWarning,
    density_coverage,
    fid,
    kid,
    median_heuristic,
    mmd,
    mmd_linear,
    mmd_rbf,
    precision_recall,
)
from synthmed.metrics.image import (
    dataset_similarity,
    intra_sample_diversity,
    laplacian_sharpness,
    min_intra_sample_diversity,
    ms_ssim_diversity,
    reconstruction_mse,
)
from synthmed.metrics.inception_score import InceptionScorePlanes, inception_score, inception_score_planes
from synthmed.metrics.stats import BootstrapCI, bootstrap_ci

__all__ = [
    "BootstrapCI",
    "DensityCoverage",
    "FIDResult",
    "InceptionScorePlanes",
    "KIDResult",
    "MMDResult",
    "PrecisionRecall",
    "SmallSampleWarning",
    "bootstrap_ci",
    "dataset_similarity",
    "density_coverage",
    "fid",
    "inception_score",
    "inception_score_planes",
    "intra_sample_diversity",
    "kid",
    "laplacian_sharpness",
    "median_heuristic",
    "min_intra_sample_diversity",
    "mmd",
    "mmd_linear",
    "mmd_rbf",
    "ms_ssim_diversity",
    "precision_recall",
    "reconstruction_mse",
]
