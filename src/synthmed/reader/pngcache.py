"""The study's PNGs, rendered once, compressed, and padded to one common byte length.

``synthmed reader create`` writes two files into the study folder::

    images_png.bin   every PNG of the study, one fixed-size record per (image, plane), in the
                     row order of images.npy (itself random) and the plane order of study.json
    images_png.json  the record length, the planes, a key of what was rendered (cache version,
                     item ids, plane layouts) and summary sizes (none per item)

Every PNG is compressed (:func:`synthmed.reader.render.encode_png`) and then padded with a private
ancillary chunk (:func:`synthmed.reader.render.pad_png`) to the same length: the largest
compressed PNG of the study plus room for the chunk, rounded up to a KiB.  So every image
response of a study has the same size, whatever its content or source, and the web app serves
bytes without rendering anything.  A study written before the cache existed, or by a version
that renders differently (:data:`CACHE_VERSION`), gets its cache built when the app starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.errors import DataError
from synthmed.io_utils import atomic_path, write_json_atomic
from synthmed.reader.render import (
    DISPLAY_CONVENTION,
    PNG_COMPRESS_LEVEL,
    PlaneLayout,
    encode_png,
    mosaic,
    pad_png,
    padded_length,
)

log = logging.getLogger(__name__)

CACHE_BIN = "images_png.bin"
CACHE_JSON = "images_png.json"
CACHE_FORMAT = "synthmed-reader-png-cache"
#: raised whenever the pixels of the PNGs change (orientation, mosaic, encoding): older caches are rebuilt
CACHE_VERSION = 1


def cache_key(items: Sequence[str], layouts: Sequence[PlaneLayout]) -> str:
    """What a cache must have been rendered from to be used: the cache version, the display
    convention, the item ids (in images.npy row order) and the plane layouts."""
    blob = json.dumps({"version": CACHE_VERSION, "convention": DISPLAY_CONVENTION, "items": list(items),
                       "planes": [lay.to_dict() for lay in layouts]}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class PngCache:
    """A study's rendered PNGs (read-only, memory-mapped).

    Attributes:
        record_bytes: the byte length of every PNG.
        planes: plane names in record order.
        data: the records, (n_items, n_planes, record_bytes) uint8.
    """

    record_bytes: int
    planes: list[str]
    data: np.ndarray

    def get(self, row: int, plane: str) -> bytes:
        """The PNG of plane ``plane`` of images.npy row ``row`` (KeyError / IndexError when unknown)."""
        try:
            k = self.planes.index(plane)
        except ValueError:
            raise KeyError(plane) from None
        return self.data[row, k].tobytes()


def write_png_cache(folder: str | os.PathLike[str], pixels: np.ndarray, items: Sequence[str],
                    layouts: Sequence[PlaneLayout], *, bucket: int = 1024) -> dict[str, Any]:
    """Render, compress and pad every PNG of a study into ``folder`` (each file written atomically).

    Args:
        folder: the study folder.
        pixels: the windowed uint8 images (N, *spatial), row ``i`` is item ``items[i]``.
        items: item ids in row order.
        layouts: the study's plane layouts.
        bucket: the common length is rounded up to a multiple of this many bytes.

    Returns:
        The content of ``images_png.json``.
    """
    folder = Path(folder)
    n = len(pixels)
    if n != len(items) or n == 0:
        raise ValueError(f"{n} images but {len(items)} item ids")
    lengths = np.zeros((n, len(layouts)), dtype=np.int64)
    fd, name = tempfile.mkstemp(prefix=f".{CACHE_BIN}.", suffix=".unpadded", dir=folder)
    spill = Path(name)
    try:
        # pass 1: compress each PNG once, spilled to disk so that a large study never sits in memory
        with os.fdopen(fd, "wb") as f:
            for i in range(n):
                image = np.asarray(pixels[i])
                for k, lay in enumerate(layouts):
                    data = encode_png(mosaic(image, lay))
                    lengths[i, k] = len(data)
                    f.write(data)
        record = padded_length(int(lengths.max()), bucket)
        # pass 2: pad every PNG to the common length
        with atomic_path(folder / CACHE_BIN) as tmp:
            with open(spill, "rb") as src, open(tmp, "wb") as dst:
                for i in range(n):
                    for k in range(len(layouts)):
                        dst.write(pad_png(src.read(int(lengths[i, k])), record))
    finally:
        spill.unlink(missing_ok=True)
    raw = [lay.grid_rows * lay.rows * lay.grid_cols * lay.cols for lay in layouts]
    info = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": cache_key(items, layouts),
        "convention": DISPLAY_CONVENTION, "compress_level": PNG_COMPRESS_LEVEL, "n_items": n,
        "planes": [lay.name for lay in layouts], "record_bytes": record,
        # summaries over the whole study only: nothing here tells one image from another
        "sizes": {"pixel_bytes_per_item": int(sum(raw)), "record_bytes_per_item": record * len(layouts),
                  "compressed_min": int(lengths.min()), "compressed_median": int(np.median(lengths)),
                  "compressed_max": int(lengths.max())},
    }
    write_json_atomic(folder / CACHE_JSON, info)
    return info


def size_summary(info: dict[str, Any]) -> str:
    """One line on the PNG sizes of a cache (for the log)."""
    s = info["sizes"]
    return (f"{info['n_items']} x {len(info['planes'])} PNGs: compressed {s['compressed_min'] / 1024:.1f}-"
            f"{s['compressed_max'] / 1024:.1f} KiB (median {s['compressed_median'] / 1024:.1f}), each padded to "
            f"{info['record_bytes'] / 1024:.1f} KiB; {s['record_bytes_per_item'] / 2**20:.2f} MiB per image "
            f"(uncompressed pixels: {s['pixel_bytes_per_item'] / 2**20:.2f} MiB)")


def load_png_cache(folder: str | os.PathLike[str], items: Sequence[str],
                   layouts: Sequence[PlaneLayout]) -> PngCache | None:
    """The study's PNG cache, or None when it is missing, incomplete or was rendered from anything
    else than ``items`` and ``layouts`` by this version."""
    folder = Path(folder)
    try:
        info = json.loads((folder / CACHE_JSON).read_text(encoding="utf-8"))
        record = int(info["record_bytes"])
        planes = [str(p) for p in info["planes"]]
        ok = (info.get("format") == CACHE_FORMAT and info.get("key") == cache_key(items, layouts)
              and planes == [lay.name for lay in layouts] and record > 0
              and (folder / CACHE_BIN).stat().st_size == len(items) * len(planes) * record)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok:
        return None
    data = np.memmap(folder / CACHE_BIN, dtype=np.uint8, mode="r", shape=(len(items), len(planes), record))
    return PngCache(record_bytes=record, planes=planes, data=data)


def ensure_png_cache(folder: str | os.PathLike[str], pixels: np.ndarray, items: Sequence[str],
                     layouts: Sequence[PlaneLayout]) -> PngCache:
    """The study's PNG cache, built first when it is missing or stale.

    Raises:
        DataError: the cache cannot be written (the study folder must be writable anyway, for the answers).
    """
    cache = load_png_cache(folder, items, layouts)
    if cache is not None:
        return cache
    log.info("%s: rendering the study's PNGs once (%d images)", folder, len(items))
    try:
        info = write_png_cache(folder, pixels, items, layouts)
    except OSError as e:
        raise DataError(f"{folder}: cannot write the rendered images ({e})") from None
    log.info("%s: %s", folder, size_summary(info))
    cache = load_png_cache(folder, items, layouts)
    if cache is None:  # cannot happen: it was just written
        raise DataError(f"{Path(folder) / CACHE_BIN}: the rendered images just written cannot be read back")
    return cache
