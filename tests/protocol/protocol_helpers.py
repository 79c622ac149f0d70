"""Tiny protocol configs and cohorts for the protocol tests (a unique module name, not ``conftest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

TINY_GAN = {"model.latent_dim": 8, "model.base_channels": 4, "model.max_channels": 8}


def tiny_raw(prep: Path, **sections: Any) -> dict[str, Any]:
    """A protocol config that runs every stage in seconds on a 16^3 cohort of ~24 subjects."""
    raw: dict[str, Any] = {
        "data": {"path": str(prep)},
        "candidates": {"models": [{"config": "alpha_sngan", "set": {**TINY_GAN, "model.code_hidden_dim": 8}},
                                  {"config": "sngan", "set": TINY_GAN}],
                       "diffaugment": [False, True],
                       "set": {"train.iterations": 2, "train.n_preview": 1, "train.batch_size": 2}},
        "evaluation": {"n_sets": 3, "extractor_iterations": 5, "image_metrics": False, "privacy": False,
                       "embeddings": ["pca"], "ssim_queries": 0},
        # stage (d): the per-class candidate runs against one conditional model; the conditional model is
        # forced so that the utility stage and the sweeps always exercise it
        "conditioning": {"methods": ["per-class", "frozen-classifier"], "winner": "frozen-classifier",
                         "set": {"model.classifier_iterations": 2}},
        "utility": {"compositions": ["real", "synthetic-small"], "folds": 3, "run_folds": [0],
                    "classifier": {"name": "diagnosis-cnn", "channels": [2, 4], "hidden": [8]},
                    "train": {"lr": 1e-3, "max_epochs": 1, "batch_size": 6, "threads": 1},
                    "occlusion": {"enabled": False}},
        "sweeps": {"seeds": [0, 1], "samples_per_class": [3, 6], "resolution": [12, 16], "folds": 3,
                   "generator_set": {"train.iterations": 1}},
        "device": "cpu",
    }
    raw.update(sections)
    return raw


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def make_multiclass(root: Path, counts: list[int], size: int = 16, seed: int = 0) -> Path:
    """A prepared 3D dataset with ``len(counts)`` classes of the given sizes (blobs, radius by class)."""
    from synthmed.data.prepared import Record, write_prepared
    from synthmed.data.splits import make_splits

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    images, records = [], []
    names = [f"c{k}" for k in range(len(counts))]
    for label, n in enumerate(counts):
        for _ in range(n):
            r = np.sqrt(((grid - rng.uniform(-0.2, 0.2, (3, 1, 1, 1))) ** 2).sum(0))
            img = np.where(r < 0.3 + 0.15 * label, 0.8, -1.0) + rng.normal(0, 0.05, r.shape)
            images.append(np.clip(img, -1, 1)[None])
            records.append(Record(f"sub-{len(records):03d}", label, names[label], "synthetic://", "0" * 64))
    splits = make_splits([r.subject_id for r in records], [r.label for r in records], n_folds=3, seed=0)
    meta = {"spacing": [2.0] * 3, "affine": np.diag([2.0, 2.0, 2.0, 1.0]), "classes": names, "source": "test"}
    return write_prepared(root, np.stack(images).astype(np.float32), records, meta, splits)
