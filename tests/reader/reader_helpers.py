"""Helpers of the reader-study tests: tiny sampled folders and studies (no conftest, to keep module
names unique)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from synth_testdata import make_tiny_prepared


def make_sample_folder(root: Path, spatial_dims: int = 3, size: int = 16, n: int = 6, seed: int = 1) -> Path:
    """A folder like `synthmed sample` writes (NIfTI for 3D, PNG for 2D, manifest.csv)."""
    from synthmed.generate.writers import write_nifti, write_png

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = np.clip(rng.normal(0, 0.5, (size,) * spatial_dims), -1, 1).astype(np.float32)
        name = f"sample_{i:05d}.nii.gz" if spatial_dims == 3 else f"sample_{i:05d}.png"
        if spatial_dims == 3:
            write_nifti(img, np.eye(4), root / name)
        else:
            write_png(img, root / name)
        rows.append({"file": name, "label": i % 2, "label_name": "ab"[i % 2], "seed": 100 + i})
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "label_name", "seed"])
        w.writeheader()
        w.writerows(rows)
    return root


def make_study(tmp: Path, spatial_dims: int = 3, n_real: int = 4, n_synthetic: int = 4, readers: int = 2,
               size: int = 16) -> Path:
    from synthmed.reader.study import create_study

    real = make_tiny_prepared(tmp / f"prep{spatial_dims}d", spatial_dims, size, max(n_real, 8))
    syn = make_sample_folder(tmp / f"syn{spatial_dims}d", spatial_dims, size, max(n_synthetic, 4))
    return create_study(real, syn, tmp / f"study{spatial_dims}d", n_real=n_real, n_synthetic=n_synthetic,
                        readers=readers, split="all", seed=0)  # the tiny data's test split is too small
