"""PNG figures for the report: real vs synthetic slice grids, training curves, embeddings and
nearest neighbours.

Slice grids are drawn with PIL through :func:`synthmed.data.preview.save_slice_grid`; plots use
matplotlib's Agg canvas directly (no pyplot, no global backend switch), imported only when a plot
is drawn.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.preview import save_slice_grid
from synthmed.io_utils import atomic_path

__all__ = [
    "PAPER_AXIAL_SLICES_64",
    "default_axial_slices",
    "read_metrics_csv",
    "slice_comparison_figure",
    "training_curves_figure",
]

#: Axial slice indices shown for 64^3 volumes in paper 000.
PAPER_AXIAL_SLICES_64: tuple[int, ...] = (16, 24, 32, 40, 48)


def default_axial_slices(depth: int) -> list[int]:
    """Axial slice indices for a volume with ``depth`` axial slices.

    The paper-000 positions (16, 24, 32, 40, 48 of 64) scaled proportionally, e.g. 32 -> 8..24;
    duplicates (tiny depths) are dropped.

    Args:
        depth: number of slices along Z.

    Returns:
        Increasing slice indices within ``[0, depth)``.
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    idx = [min(p * depth // 64, depth - 1) for p in PAPER_AXIAL_SLICES_64]
    return sorted(set(idx))


def _with_channel(x: np.ndarray, name: str) -> np.ndarray:
    """(N, 1, *spatial) view of (N, *spatial) or (N, 1, *spatial) images with 2 or 3 spatial dims."""
    x = np.asarray(x)
    if x.ndim == 3 or (x.ndim == 4 and x.shape[1] != 1):
        x = x[:, None]
    if x.ndim not in (4, 5) or x.shape[1] != 1:
        raise ValueError(f"{name}: expected (N, 1, *spatial) with 2 or 3 spatial dims, got {x.shape}")
    return x


def _groups(n_real: int, n_syn: int, labels_real: Sequence[int] | np.ndarray | None,
            labels_synthetic: Sequence[int] | np.ndarray | None,
            class_names: Sequence[str] | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, real indices, synthetic indices) per class present in either set."""
    if (labels_real is None) != (labels_synthetic is None):
        raise ValueError("give labels for both real and synthetic images, or for neither")
    if labels_real is None or labels_synthetic is None:
        return [("all", np.arange(n_real), np.arange(n_syn))]
    lr, ls = np.asarray(labels_real).reshape(-1), np.asarray(labels_synthetic).reshape(-1)
    if len(lr) != n_real or len(ls) != n_syn:
        raise ValueError(f"got {len(lr)} real / {len(ls)} synthetic labels for {n_real} / {n_syn} images")
    out = []
    for c in np.unique(np.concatenate([lr, ls])):
        name = class_names[int(c)] if class_names is not None and 0 <= int(c) < len(class_names) else str(c)
        out.append((str(name), np.flatnonzero(lr == c), np.flatnonzero(ls == c)))
    return out


def slice_comparison_figure(real: np.ndarray, synthetic: np.ndarray, path: str | os.PathLike[str],
                            axial_slices: Sequence[int] | None = None,
                            labels_real: Sequence[int] | np.ndarray | None = None,
                            labels_synthetic: Sequence[int] | np.ndarray | None = None,
                            class_names: Sequence[str] | None = None, n_per_class: int = 4,
                            view: str = "axial", zoom: int = 2,
                            spacing: Sequence[float] | None = None) -> Path:
    """Real and synthetic images side by side, per class, as one PNG.

    Each row holds one real image (left) and one synthetic image (right) of the same class; each
    class gets up to ``n_per_class`` rows.  The first images of each class are shown (no
    cherry-picking); a missing image is drawn as a black cell titled "none".

    Args:
        real: (N, 1, *spatial) or (N, *spatial) real images, intensities in [-1, 1].
        synthetic: (M, 1, *spatial) or (M, *spatial) synthetic images, same spatial shape.
        path: output PNG (written atomically).
        axial_slices: for 3D with ``view="axial"``, Z indices to show; default
            :func:`default_axial_slices` (16, 24, 32, 40, 48 for 64^3, as in paper 000).
        labels_real: (N,) class labels of ``real``, or None (then also None for synthetic).
        labels_synthetic: (M,) class labels of ``synthetic``.
        class_names: names indexed by label.
        n_per_class: images per class and per set.
        view: ``"axial"`` (several axial slices) or ``"three-plane"`` (middle axial, coronal and
            sagittal slices); ignored for 2D images.
        zoom: integer pixel magnification.
        spacing: voxel size per spatial axis, to draw panels in physical proportions.

    Returns:
        The written path.
    """
    r, s = _with_channel(real, "real"), _with_channel(synthetic, "synthetic")
    if r.shape[1:] != s.shape[1:]:
        raise ValueError(f"real {r.shape[1:]} and synthetic {s.shape[1:]} images differ in shape")
    if view not in ("axial", "three-plane"):
        raise ValueError(f"view must be 'axial' or 'three-plane', got {view!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    blank = np.full(r.shape[1:], -1.0, np.float32)
    cells: list[np.ndarray] = []
    titles: list[str] = []
    for name, ir, isyn in _groups(len(r), len(s), labels_real, labels_synthetic, class_names):
        for i in range(min(n_per_class, max(len(ir), len(isyn)))):
            for kind, src, idx in (("real", r, ir), ("synth", s, isyn)):
                cells.append(src[idx[i]].astype(np.float32) if i < len(idx) else blank)
                titles.append(f"{name} {kind} {i + 1}" if i < len(idx) else f"{name} {kind}: none")
    axial = None
    if r.ndim == 5 and view == "axial":
        axial = list(axial_slices) if axial_slices is not None else default_axial_slices(r.shape[-1])
        bad = [k for k in axial if not 0 <= int(k) < r.shape[-1]]
        if bad:
            raise ValueError(f"axial slices {bad} outside [0, {r.shape[-1]})")
    return save_slice_grid(np.stack(cells), path, titles=titles, axial_slices=axial, ncols=2, zoom=zoom,
                           spacing=spacing)


# ---------------------------------------------------------------------------------------------
# matplotlib plots


def _new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas, without touching pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # matplotlib is optional for the rest of synthmed
        raise ImportError("report plots need matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def read_metrics_csv(metrics_csv: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a run folder's ``metrics.csv`` (first column ``step``, then one column per scalar).

    Args:
        metrics_csv: the CSV file, or a run folder that contains ``metrics.csv``.

    Returns:
        (steps, {column: values}); empty or non-numeric cells are NaN, columns with no number at
        all are dropped.
    """
    p = Path(metrics_csv)
    p = p / "metrics.csv" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"no metrics.csv at {p}")
    with open(p, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2 or rows[0][0].strip() != "step":
        raise ValueError(f"{p}: expected a header starting with 'step' and at least one data row")

    def num(cell: str) -> float:
        try:
            return float(cell)
        except ValueError:
            return math.nan

    table = np.array([[num(c) for c in row[: len(rows[0])]] + [math.nan] * (len(rows[0]) - len(row))
                      for row in rows[1:]], dtype=np.float64)
    cols = {name: table[:, j] for j, name in enumerate(rows[0][1:], 1) if np.isfinite(table[:, j]).any()}
    return table[:, 0], cols


def training_curves_figure(metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str],
                           columns: Sequence[str] | None = None) -> Path:
    """Plot every scalar of a run's ``metrics.csv`` against ``step``, one panel per column.

    Args:
        metrics_csv: the CSV file, or a run folder that contains it.
        path: output PNG (written atomically).
        columns: columns to plot (default: every numeric column but ``step``).

    Returns:
        The written path.
    """
    steps, cols = read_metrics_csv(metrics_csv)
    names = list(columns) if columns is not None else list(cols)
    missing = [c for c in names if c not in cols]
    if missing or not names:
        raise ValueError(f"{metrics_csv}: no numeric column(s) {missing or ''} to plot; have {list(cols)}")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure(4.0 * ncols, 2.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        ok = np.isfinite(cols[name]) & np.isfinite(steps)
        ax.plot(steps[ok], cols[name][ok], lw=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return _save_figure(fig, path)
