"""Figures of the utility report: paper 000 Fig. 6-style bars with 95% CIs, occlusion maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from synthmed.report.figures import _new_figure, _save_figure
from synthmed.utility.stats import Interval

_SMALL_COLOUR, _LARGE_COLOUR = "#4c72b0", "#dd8452"


def utility_bar_chart(intervals: Mapping[str, Interval], path: str | os.PathLike[str], metric: str,
                      chance: float | None = None, significant: Sequence[str] = (), baseline: str = "real",
                      infinite: Sequence[str] = ("synthetic-infinite",), large: Sequence[str] = ()) -> Path:
    """Mean per composition with its 95% CI as error bars (paper 000, Fig. 6).

    Args:
        intervals: composition -> :class:`Interval` over folds, in display order.
        path: output PNG.
        metric: the metric's name (y-axis label).
        chance: chance level drawn as a dotted line (None: no line).
        significant: compositions marked with ``*`` (differ from ``baseline`` after Bonferroni).
        infinite: compositions drawn as a diamond instead of a bar (Fig. 6's infinite set).
        large: compositions coloured as "large" training sets.
    """
    names = list(intervals)
    fig = _new_figure(max(4.0, 1.0 + 0.9 * len(names)), 3.6)
    ax = fig.subplots()
    for i, name in enumerate(names):
        iv = intervals[name]
        lo = iv.mean - iv.low if np.isfinite(iv.low) else 0.0
        hi = iv.high - iv.mean if np.isfinite(iv.high) else 0.0
        colour = _LARGE_COLOUR if name in large else _SMALL_COLOUR
        if name in infinite:
            ax.errorbar([i], [iv.mean], yerr=[[lo], [hi]], fmt="D", color=colour, capsize=4, markersize=8)
        else:
            ax.bar([i], [iv.mean], color=colour, alpha=0.85, width=0.7)
            ax.errorbar([i], [iv.mean], yerr=[[lo], [hi]], fmt="none", ecolor="black", capsize=4)
        if name in significant and name != baseline and np.isfinite(iv.mean):
            ax.text(i, (iv.high if np.isfinite(iv.high) else iv.mean) + 0.02, "*", ha="center", fontsize=14)
    if chance is not None and np.isfinite(chance):
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1.5, label=f"chance ({chance:.2f})")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{metric.replace('_', ' ')} on real test data (mean, 95% CI over folds)", fontsize=10)
    return _save_figure(fig, path)


def _axial(img: np.ndarray) -> np.ndarray:
    """A 2D view: the image itself, or the middle axial slice (last axis) of a volume, rows = axis 1."""
    a = np.asarray(img)
    a = a[0] if a.ndim in (3, 4) and a.shape[0] == 1 else a
    return a.T if a.ndim == 2 else a[:, :, a.shape[2] // 2].T


def occlusion_figure(images: np.ndarray, maps: Mapping[str, np.ndarray], path: str | os.PathLike[str],
                     titles: Sequence[str] | None = None) -> Path:
    """Rows: test images; columns: the image and each classifier's occlusion map (paper 004, Fig. 6).

    Args:
        images: (N, 1, *S) real test images.
        maps: classifier name -> (N, *S) normalised maps in [-1, 1].
        path: output PNG.
        titles: one label per image row.
    """
    n, cols = len(images), 1 + len(maps)
    fig = _new_figure(2.2 * cols, 2.2 * n + 0.4)
    axes = fig.subplots(n, cols, squeeze=False)
    im = None
    for r in range(n):
        axes[r, 0].imshow(_axial(images[r]), cmap="gray", vmin=-1, vmax=1, origin="lower")
        axes[r, 0].set_title(titles[r] if titles else f"image {r + 1}", fontsize=8)
        for c, (name, m) in enumerate(maps.items(), 1):
            axes[r, c].imshow(_axial(images[r]), cmap="gray", vmin=-1, vmax=1, origin="lower")
            im = axes[r, c].imshow(_axial(m[r]), cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.6, origin="lower")
            axes[r, c].set_title(f"trained on {name}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="normalised loss increase when masked")
    return _save_figure(fig, path)
