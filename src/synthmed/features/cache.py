"""On-disk cache of extracted features.

Features are stored as ``.npy`` files keyed by the data (the SHA-256 of the image array, or an
explicit key such as a prepared dataset's ``images_sha256`` plus its subset) and by the feature
space (the SHA-256 of :meth:`FeatureExtractor.describe`: name, weight hash, preprocessing), so a
changed weight file or transform never reuses stale features.  Files are written atomically next to
a JSON sidecar that records what they contain.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.features.base import FeatureExtractor, extract_features
from synthmed.io_utils import atomic_path, write_json_atomic


def array_sha256(images: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order); memory maps are read in chunks."""
    h = hashlib.sha256(f"{images.dtype.str}{images.shape}".encode())
    for start in range(0, max(images.shape[0], 1), 64):
        h.update(np.ascontiguousarray(images[start:start + 64]).tobytes())
    return h.hexdigest()


def cache_path(extractor: FeatureExtractor, cache_dir: str | Path, dataset_key: str) -> Path:
    """Where the features of ``dataset_key`` in ``extractor``'s feature space are cached."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_key)
    if len(safe) > 80:  # cut, but keep distinct keys distinct (a long source name followed by a data hash)
        safe = f"{safe[:63]}-{hashlib.sha256(dataset_key.encode('utf-8')).hexdigest()[:16]}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", extractor.name)
    return Path(cache_dir) / f"{safe}__{name}__{extractor.describe_sha256()[:16]}.npy"


def cached_features(
    extractor: FeatureExtractor,
    images: np.ndarray,
    cache_dir: str | Path,
    dataset_key: str | None = None,
    **extract_kwargs: Any,
) -> np.ndarray:
    """Features of ``images``, read from the cache or extracted and stored.

    Args:
        extractor: the feature extractor.
        images: (N, 1, *spatial) in [-1, 1].
        cache_dir: folder of the cache (created).
        dataset_key: identifies ``images`` (e.g. ``f"{images_sha256}-test"``); default: the
            SHA-256 of the array (reads it once).
        **extract_kwargs: ``batch_size``, ``device``, ``progress`` for :func:`extract_features`.

    Returns:
        (N, D) float32 features.
    """
    key = dataset_key if dataset_key is not None else array_sha256(images)
    path = cache_path(extractor, cache_dir, key)
    if path.is_file():
        try:
            feats = np.load(path)
        except (OSError, ValueError):
            feats = None  # unreadable: recompute and overwrite
        if feats is not None and feats.shape == (images.shape[0], extractor.feature_dim):
            return feats
    feats = extract_features(extractor, images, **extract_kwargs)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, feats)
    write_json_atomic(path.with_suffix(".json"), {"dataset_key": key, "n": int(images.shape[0]),
                                                  "extractor": extractor.describe(),
                                                  "extractor_sha256": extractor.describe_sha256()})
    return feats
