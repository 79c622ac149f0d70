"""Tiny cohorts and synthetic folders for the utility tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from synthmed.generate.writers import write_nifti, write_png


def blob_images(n: int, label: int, spatial_dims: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    """(n, 1, *size) blobs whose radius depends on the class (as tests/conftest.make_tiny_prepared)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * spatial_dims, indexing="ij"))
    out = []
    for _ in range(n):
        centre = rng.uniform(-0.2, 0.2, size=spatial_dims).reshape(-1, *[1] * spatial_dims)
        r = np.sqrt(((grid - centre) ** 2).sum(0))
        img = np.where(r < 0.5 + 0.2 * label, 0.8, -1.0) + rng.normal(0, 0.05, r.shape)
        out.append(np.clip(img, -1, 1)[None])
    return np.stack(out).astype(np.float32)


def write_sampled_folder(folder: Path, images: np.ndarray, labels: list[int] | None = None) -> Path:
    """A folder as `synthmed sample` writes it (NIfTI/PNG files + manifest.csv)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(images):
        name = f"synthetic_{i:05d}" + (".nii.gz" if img.ndim == 4 else ".png")
        if img.ndim == 4:
            write_nifti(img[0], np.eye(4), folder / name)
        else:
            write_png(img[0], folder / name)
        rows.append({"file": name, "label": "" if labels is None else labels[i], "label_name": "", "seed": i})
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "label_name", "seed"])
        w.writeheader()
        w.writerows(rows)
    return folder


def make_cohort(root: Path, n: int = 30, spatial_dims: int = 3, size: int = 16) -> Path:
    """A labelled prepared dataset of ``n`` blob images (classes a/b alternating)."""
    from synthmed.data.prepared import Record, write_prepared

    images, records = [], []
    for i in range(n):
        label = i % 2
        images.append(blob_images(1, label, spatial_dims, size, seed=1000 + i)[0])
        records.append(Record(f"sub-{i:03d}", label, ["a", "b"][label], f"synthetic://{i}", "0" * 64))
    meta = {"spacing": [2.0] * spatial_dims, "affine": np.eye(4), "classes": ["a", "b"], "source": "test"}
    return write_prepared(root, np.stack(images), records, meta, None)
