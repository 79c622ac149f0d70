"""Fidelity and diversity of a synthetic cohort against real prepared data, in a declared feature space.

``evaluate_fidelity`` extracts features of real and synthetic images with a registered extractor and
computes FID, KID, MMD (RBF and linear), precision/recall (Kynkäänniemi et al. 2019, as paper 000)
and density/coverage (Naeem et al. 2020), averaged over several synthetic sets as paper 000 does (ten
sets the size of the real set per model), with bootstrap 95% intervals over the real and synthetic
images together, plus the image-space metrics of paper 002 Sec. 3.3.  Every result records the extractor (name, weights SHA-256,
preprocessing) and the sample counts: a value without its feature space is meaningless.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.prepared import PreparedDataset
from synthmed.features.base import FeatureExtractor, build_extractor
from synthmed.features.cache import cached_features
from synthmed.metrics import feature as fm
from synthmed.metrics import image as im


@dataclass
class FidelityOptions:
    """Metric settings (defaults: k = 3 for precision/recall as in paper 000's k-NN manifolds,
    k = 5 for density/coverage as Naeem et al.)."""

    extractor: str = "indomain-ae"
    weights: str | None = None
    extractor_iterations: int = 1000
    #: largest side of the in-domain autoencoder's input (None: 32 for volumes, 64 for 2D; 0: native
    #: size); see :func:`synthmed.features.indomain.capped_size`.
    extractor_size: int | None = None
    k_pr: int = 3
    k_dc: int = 5
    #: bootstrap replicates of the intervals (fewer with many sets, see :func:`n_replicates`)
    n_boot: int = 100
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    progress: bool = True


def indomain_weights(ds: PreparedDataset, opts: FidelityOptions) -> Path:
    """The in-domain extractor of a prepared dataset, trained once on its training rows and kept in
    ``PREPARED/extractors/`` so every evaluation against this dataset shares one feature space."""
    from synthmed.features.indomain import capped_size, train_indomain_extractor

    rows = ds.indices("trainval") if ds.splits is not None else ds.indices("all")
    size = capped_size(ds.shape, opts.extractor_size)
    path = (ds.root / "extractors" /
            f"indomain-ae_{'x'.join(map(str, size))}_it{opts.extractor_iterations}_seed{opts.seed}.pt")
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        train_indomain_extractor(np.asarray(ds.images[rows]), path, size=size,
                                 iterations=opts.extractor_iterations, seed=opts.seed, device=opts.device,
                                 progress=opts.progress)
    return path


def make_extractor(ds: PreparedDataset, opts: FidelityOptions) -> FeatureExtractor:
    weights = opts.weights
    if opts.extractor in ("indomain-ae", "planes:indomain-ae") and weights is None:
        weights = str(indomain_weights(ds, opts)) if opts.extractor == "indomain-ae" else None
    return build_extractor(opts.extractor, weights=weights).to(opts.device).eval()


def features(extractor: FeatureExtractor, images: np.ndarray, cache_dir: Path, key: str | None,
             opts: FidelityOptions) -> np.ndarray:
    return cached_features(extractor, images, cache_dir, dataset_key=key, batch_size=opts.batch_size,
                           device=opts.device, progress=opts.progress)


def metric_values(real: np.ndarray, fake: np.ndarray, opts: FidelityOptions,
                  bandwidth: float | None = None) -> dict[str, float]:
    """FID, KID, MMD (RBF, linear), precision, recall, density and coverage of one synthetic set.

    Args:
        real: (N, D) real features.  fake: (M, D) synthetic features.
        bandwidth: RBF bandwidth; None uses the median heuristic on the pooled sample.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-sample condition is reported once by the caller
        pr = fm.precision_recall(real, fake, k=opts.k_pr)
        dc = fm.density_coverage(real, fake, k=opts.k_dc)
        rbf = fm.mmd_rbf(real, fake, bandwidth=bandwidth)
        return {
            "fid": float(fm.fid(real, fake)),
            "kid": float(fm.kid(real, fake, subset_size=min(1000, len(real), len(fake)), seed=opts.seed).mean),
            "mmd_rbf": float(rbf.value), "mmd_linear": float(fm.mmd_linear(real, fake).value),
            "precision": float(pr.precision), "recall": float(pr.recall),
            "density": float(dc.density), "coverage": float(dc.coverage),
        }


#: the range of each feature metric: interval ends are clipped to it (None: unbounded on that side; the
#: unbiased KID and MMD estimates can be negative)
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "fid": (0.0, None), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, None),
    "coverage": (0.0, 1.0), "kid": (None, None), "mmd_rbf": (None, None), "mmd_linear": (None, None)}

#: metrics a degenerate set can win: pure noise reached precision 0.96 and heavy blur 1.0 on AdrenalMNIST3D
#: in the in-domain feature space (docs/evaluation.md, python -m synthmed.evaluate.benchmark)
GAMEABLE = ("precision", "density")

#: what a reader must know about precision, for captions
PRECISION_CAVEAT = ("Precision and density can be high for sets that are no good: pure noise reached precision 0.96 and "
                    "heavily blurred images 1.0 on AdrenalMNIST3D (docs/evaluation.md); read them only with recall "
                    "and coverage, and rank by KID, which such sets do not win")


def n_replicates(n_boot: int, n_sets: int) -> int:
    """Bootstrap replicates for ``n_sets`` sets: ``n_boot``, but at most about 500 metric evaluations in all
    (each replicate evaluates every set) and at least 25 replicates."""
    return max(25, min(n_boot, 500 // max(1, n_sets)))


def feature_metric_rows(real: np.ndarray, fake_sets: list[np.ndarray], opts: FidelityOptions,
                        bandwidth: float | None = None) -> list[dict[str, Any]]:
    """Metrics of every synthetic set against the same real features: the mean over sets, its bootstrap
    standard error and 95% interval (:func:`synthmed.metrics.stats.bootstrap_sets`: real and synthetic
    resampled together, an interval also with one set, clipped to :data:`BOUNDS`), and the per-set values
    (for the protocol's tests between candidates).

    Args:
        real: (N, D) real features.
        fake_sets: R arrays (M_r, D) of synthetic features (R synthetic sets).
        bandwidth: RBF bandwidth of MMD; None: the median heuristic on ``real`` alone, so every source
            compared with these real features is measured with one kernel (pass the same value to
            compare other comparisons, e.g. the floor, with the same kernel).
    """
    from synthmed.metrics.stats import bootstrap_sets

    bandwidth = fm.median_heuristic(real, seed=opts.seed) if bandwidth is None else float(bandwidth)
    b = n_replicates(opts.n_boot, len(fake_sets))
    res = bootstrap_sets(lambda r, f: metric_values(r, f, opts, bandwidth), real, fake_sets, n_boot=b,
                         seed=opts.seed, bounds=BOUNDS)
    small = min(len(real), *(len(f) for f in fake_sets)) <= real.shape[1]
    rows = []
    for name, r in res.items():
        row: dict[str, Any] = {"metric": name, "value": r.value, "ci_low": r.low, "ci_high": r.high, "se": r.se,
                               "n_sets": len(r.per_set), "per_set": r.per_set, "n_boot": r.n_boot,
                               "interval": "bootstrap over real and synthetic images, value -/+ 1.96 se, clipped "
                                           "to the metric's range"}
        row["k"] = opts.k_pr if name in ("precision", "recall") else opts.k_dc if name in ("density", "coverage") else None
        if name == "mmd_rbf":
            row["bandwidth"] = bandwidth
        row["note"] = ("fewer samples than feature dimensions: biased upwards and can rank sets wrongly; "
                       "compare only at equal sample sizes and rank by KID"
                       if name == "fid" and small else "")
        rows.append(row)
    return rows


def image_metric_rows(real: np.ndarray, fake: np.ndarray, max_pairs: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Paper 002 Sec. 3.3 metrics on (N, 1, *spatial) images in [-1, 1]."""
    sharp_r, sharp_f = im.laplacian_sharpness(real), im.laplacian_sharpness(fake)
    rows = [
        {"metric": "dataset_similarity", "value": float(im.dataset_similarity(real, fake))},
        {"metric": "isd_synthetic", "value": float(im.intra_sample_diversity(fake))},
        {"metric": "isd_real", "value": float(im.intra_sample_diversity(real))},
        {"metric": "min_isd_synthetic", "value": float(im.min_intra_sample_diversity(fake))},
        {"metric": "min_isd_real", "value": float(im.min_intra_sample_diversity(real))},
        {"metric": "laplacian_sharpness_synthetic", "value": float(np.mean(sharp_f))},
        {"metric": "laplacian_sharpness_real", "value": float(np.mean(sharp_r))},
    ]
    if min(real.shape[2:]) >= 28:
        rows.append({"metric": "ms_ssim_diversity_synthetic",
                     "value": float(im.ms_ssim_diversity(fake, max_pairs=max_pairs, seed=seed))})
        rows.append({"metric": "ms_ssim_diversity_real",
                     "value": float(im.ms_ssim_diversity(real, max_pairs=max_pairs, seed=seed))})
    return rows
