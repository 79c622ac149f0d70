"""Test helpers importable from any test module (a unique module name, unlike ``conftest``, which
pytest imports once per folder under the same name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_tiny_prepared(root: Path, spatial_dims: int = 3, size: int = 16, n: int = 8, seed: int = 0,
                       texture: float = 0.0) -> Path:
    """A tiny labelled prepared dataset (bright blobs whose radius depends on the class); ``texture`` > 0 adds
    a smooth random field of that amplitude to each image, so images differ in many directions, as real
    images do, not only in the blob's position and the noise."""
    from synthmed.data.prepared import Record, write_prepared
    from synthmed.data.splits import make_splits

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * spatial_dims, indexing="ij"))
    images, records = [], []
    for i in range(n):
        label = i % 2
        centre = rng.uniform(-0.2, 0.2, size=spatial_dims).reshape(-1, *[1] * spatial_dims)
        r = np.sqrt(((grid - centre) ** 2).sum(0))
        img = np.where(r < 0.5 + 0.2 * label, 0.8, -1.0) + rng.normal(0, 0.05, r.shape)
        if texture > 0:
            from scipy.ndimage import gaussian_filter

            field = gaussian_filter(rng.normal(size=r.shape), 1.5)
            img = img + texture * field / field.std()
        images.append(np.clip(img, -1, 1)[None])
        records.append(Record(f"sub-{i:02d}", label, ["a", "b"][label], f"synthetic://{i}", "0" * 64))
    affine = np.diag([2.0] * 3 + [1.0])
    affine[:3, 3] = [-10.0, 20.0, -30.0]
    ids = [r.subject_id for r in records]
    splits = make_splits(ids, [r.label for r in records], n_folds=2, test_fraction=0.25, seed=0)
    meta = {"spacing": [2.0] * spatial_dims, "affine": affine, "classes": ["a", "b"], "source": "test"}
    return write_prepared(root, np.stack(images).astype(np.float32), records, meta, splits)
