"""2-D embeddings of real and synthetic feature vectors, and their scatter plots.

Paper 000 (Supplementary Figs. S7/S8) plots the first two principal components of the image features
used for its quantitative evaluation, fitted on all real samples and an equal number of synthetic ones;
paper 001 (Fig. 4) embeds medical-ResNet features of real and synthetic volumes with multidimensional
scaling (MDS). Synthetic points that overlap the real cloud indicate a similar distribution; a tight
synthetic cluster indicates mode collapse. Features are ``(N, D)`` arrays (NumPy or torch) from one
feature space (see :mod:`synthmed.features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthmed.io_utils import atomic_path
from synthmed.metrics.feature import ArrayLike, as_float64

#: Embedding method.
Method = Literal["pca", "mds"]
#: Marker of each set in :func:`embedding_figure`.
_MARKERS = {"real": "o", "synthetic": "^"}


def _pooled(real: ArrayLike, synthetic: ArrayLike) -> tuple[np.ndarray, int]:
    """Validated float64 rows of real then synthetic features, and the number of real rows."""
    x, y = as_float64(real), as_float64(synthetic)
    for name, a in (("real", x), ("synthetic", y)):
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"{name} features must be a non-empty (N, D) array, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} features contain NaN or Inf")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and synthetic feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] + y.shape[0] < 3:
        raise ValueError("a 2-D embedding needs at least 3 points in total")
    return np.concatenate([x, y]), x.shape[0]


def embed(
    real_features: ArrayLike, synthetic_features: ArrayLike, method: Method = "pca", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Embed real and synthetic features jointly in 2-D.

    * ``"pca"``: PCA fitted on the pooled features (paper 000, Figs. S7/S8, which pools all real samples
      with an equal number of synthetic ones, so that neither set dominates the axes); exact SVD
      (``svd_solver="full"``), deterministic including signs, ``seed`` unused.
    * ``"mds"``: metric MDS on Euclidean distances of the pooled features (paper 001, Fig. 4), sklearn
      ``MDS(metric_mds=True, init="classical_mds", random_state=seed)``; O((N + M)^2) memory, fine for
      cohorts of a few thousand points. MDS axes have no meaning beyond relative distances.

    Args:
        real_features: (N, D) real features.
        synthetic_features: (M, D) synthetic features from the same feature space.
        method: "pca" or "mds".
        seed: random state of MDS.

    Returns:
        ``(real_2d (N, 2), synthetic_2d (M, 2), info)``; ``info`` holds ``method``, ``n_real``,
        ``n_synthetic`` and, for PCA, ``explained_variance_ratio`` (2 floats, decreasing) or, for MDS,
        ``stress`` (sklearn's raw stress of the embedding).
    """
    pooled, n = _pooled(real_features, synthetic_features)
    info: dict[str, Any] = {"method": method, "n_real": n, "n_synthetic": pooled.shape[0] - n}
    if method == "pca":
        from sklearn.decomposition import PCA  # imported here: sklearn is slow to import

        if min(pooled.shape) < 2:
            raise ValueError(f"PCA to 2 components needs >= 2 points and >= 2 dims, got {pooled.shape}")
        pca = PCA(n_components=2, svd_solver="full")
        z = pca.fit_transform(pooled)
        info["explained_variance_ratio"] = [float(v) for v in pca.explained_variance_ratio_]
    elif method == "mds":
        from sklearn.manifold import MDS

        mds = MDS(n_components=2, metric_mds=True, n_init=1, init="classical_mds", random_state=seed)
        z = mds.fit_transform(pooled)
        info["stress"] = float(mds.stress_)
    else:
        raise ValueError(f"method must be 'pca' or 'mds', got {method!r}")
    return z[:n], z[n:], info


def _labels(labels: Sequence[Any] | np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"{name} must have one label per sample ({n}), got shape {lab.shape}")
    return lab


def _class_name(c: Any, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(c, (int, np.integer)) and 0 <= int(c) < len(class_names):
        return str(class_names[int(c)])
    return str(c)


def _scatter(
    ax: Any,
    points: dict[str, np.ndarray],
    labels: dict[str, np.ndarray | None],
    class_names: Sequence[str] | None,
) -> None:
    """Draw each set with its marker, coloured by class where it has labels (grey otherwise)."""
    present = [lab for lab in labels.values() if lab is not None]
    classes = sorted(set(np.concatenate(present).tolist())) if present else []
    colours = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    for kind, z in points.items():
        lab = labels[kind]
        if lab is None:
            ax.scatter(z[:, 0], z[:, 1], marker=_MARKERS[kind], c="0.4", s=18, alpha=0.7, label=kind)
            continue
        for c in classes:
            sel = lab == c
            if sel.any():
                ax.scatter(
                    z[sel, 0],
                    z[sel, 1],
                    marker=_MARKERS[kind],
                    c=colours[c],
                    s=18,
                    alpha=0.7,
                    label=f"{kind}: {_class_name(c, class_names)}",
                )


def embedding_figure(
    real_features: ArrayLike,
    synthetic_features: ArrayLike,
    path: str | Path,
    method: Method = "pca",
    real_labels: Sequence[Any] | np.ndarray | None = None,
    synthetic_labels: Sequence[Any] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Scatter PNG of the joint 2-D embedding of real and synthetic features (papers 000 S7/S8, 001 Fig. 4).

    Real samples are drawn as circles, synthetic as triangles; with labels each class has its colour
    (shared by both sets), sets without labels are grey. PCA axes state their explained variance.
    Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global backend change.

    Args:
        real_features: (N, D) real features.
        synthetic_features: (M, D) synthetic features.
        path: output PNG (parent folders created; written atomically).
        method: "pca" or "mds" (see :func:`embed`).
        real_labels: optional (N,) class labels (ints index ``class_names``; other values are printed).
        synthetic_labels: optional (M,) class labels (e.g. the conditioning labels).
        class_names: optional names of integer labels.
        seed: random state of MDS.
        title: optional axes title (default: the method and sample counts).

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: slow, and keeps
    from matplotlib.figure import Figure  # matplotlib's global state untouched at import

    labels = {
        "real": _labels(real_labels, len(real_features), "real_labels"),
        "synthetic": _labels(synthetic_labels, len(synthetic_features), "synthetic_labels"),
    }
    real_2d, syn_2d, info = embed(real_features, synthetic_features, method, seed)
    fig = Figure(figsize=(5.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _scatter(ax, {"real": real_2d, "synthetic": syn_2d}, labels, class_names)
    if method == "pca":
        evr = info["explained_variance_ratio"]
        ax.set_xlabel(f"PC1 ({100 * evr[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC2 ({100 * evr[1]:.1f}% of variance)")
    else:
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
    ax.set_title(title or f"{method.upper()}: {info['n_real']} real, {info['n_synthetic']} synthetic")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
