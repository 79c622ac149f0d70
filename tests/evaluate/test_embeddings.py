"""2-D PCA / MDS embeddings of real and synthetic features, and their PNG scatter plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.evaluate.embeddings import embed, embedding_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic real features (variance 9, 4, 1, ...) and a shifted synthetic set."""
    rng = np.random.default_rng(seed)
    scale = np.array([3.0, 2.0] + [1.0] * 6)
    return rng.normal(size=(40, 8)) * scale, rng.normal(size=(30, 8)) * scale + 0.5


@pytest.mark.parametrize("method", ["pca", "mds"])
def test_embed_shapes_and_determinism(method: str) -> None:
    real, syn = _features()
    r1, s1, info = embed(real, syn, method, seed=3)
    r2, s2, _ = embed(torch.from_numpy(real), syn, method, seed=3)
    assert r1.shape == (40, 2) and s1.shape == (30, 2)
    assert (info["method"], info["n_real"], info["n_synthetic"]) == (method, 40, 30)
    np.testing.assert_allclose(r1, r2, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s1, s2, rtol=1e-10, atol=1e-10)


def test_pca_explained_variance_and_pooled_fit() -> None:
    real, syn = _features()
    r, s, info = embed(real, syn, "pca")
    evr = info["explained_variance_ratio"]
    assert len(evr) == 2 and evr[0] >= evr[1] > 0 and sum(evr) < 1
    pooled = np.concatenate([r, s])
    np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=1e-10)  # centred on the pooled mean
    var = pooled.var(axis=0, ddof=1)
    total = np.concatenate([real, syn]).var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(var / total, evr, rtol=1e-10)


def test_mds_preserves_distances_roughly() -> None:
    rng = np.random.default_rng(1)
    plane = rng.normal(size=(25, 2)) @ rng.normal(size=(2, 6))  # intrinsically 2-D: MDS is near exact
    r, s, info = embed(plane[:15], plane[15:], "mds", seed=0)
    z = np.concatenate([r, s])
    d_in = np.linalg.norm(plane[:, None] - plane[None], axis=2)
    d_out = np.linalg.norm(z[:, None] - z[None], axis=2)
    assert np.abs(d_in - d_out).max() < 1e-2 * d_in.max()
    assert info["stress"] >= 0.0


def test_embed_validation() -> None:
    real, syn = _features()
    with pytest.raises(ValueError, match="method"):
        embed(real, syn, "tsne")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dims differ"):
        embed(real, syn[:, :5])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        embed(real[:, 0], syn)


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("method", ["pca", "mds"])
def test_embedding_figure_without_labels(tmp_path: Path, method: str) -> None:
    real, syn = _features()
    out = embedding_figure(real, syn, tmp_path / "figs" / f"{method}.png", method)
    _assert_png(out)


def test_embedding_figure_with_labels(tmp_path: Path) -> None:
    real, syn = _features()
    real_labels, syn_labels = np.arange(40) % 2, np.arange(30) % 2
    out = embedding_figure(
        real, syn, tmp_path / "labelled.png", "pca", real_labels, syn_labels, class_names=["HC", "SZ"]
    )
    _assert_png(out)
    only_real = embedding_figure(real, syn, tmp_path / "real_only.png", real_labels=["a", "b"] * 20)
    _assert_png(only_real)
    with pytest.raises(ValueError, match="synthetic_labels"):
        embedding_figure(real, syn, tmp_path / "bad.png", synthetic_labels=[0, 1])


def test_import_leaves_matplotlib_global_state_alone() -> None:
    """Importing the figure modules must not pick a matplotlib backend for the user (MONAI itself
    imports matplotlib, so only the backend and interactive mode can be checked)."""
    import os
    import subprocess
    import sys

    code = (
        "import matplotlib; import sys, synthmed.evaluate.embeddings, synthmed.evaluate.privacy; "
        "print(matplotlib.get_backend(), matplotlib.is_interactive())"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.split() == ["svg", "False"]
