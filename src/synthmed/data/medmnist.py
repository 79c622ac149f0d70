"""MedMNIST ``.npz`` files: reader (2D and 3D) and an optional downloader for users with internet.

A MedMNIST file holds ``{train,val,test}_images`` (uint8, (N, H, W), (N, H, W, 3) or
(N, D, H, W)) and ``{train,val,test}_labels`` ((N, 1) or (N,)).  Labels become class names
``"0"``, ``"1"`` ... so the prepared label index equals the official label.  The official test
split is kept as the held-out test set of ``splits.json``.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from synthmed.data.readers import RawSubject
from synthmed.errors import DataError
from synthmed.io_utils import atomic_path, sha256_bytes
from synthmed.registry import READERS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: MedMNIST v3 files on Zenodo (record 10519652); ``{suffix}`` is ``""`` for 28 px or ``"_64"`` ...
ZENODO_URL = "https://zenodo.org/records/10519652/files/{flag}{suffix}.npz?download=1"
#: MD5 of official files we could verify (MedMNIST publishes MD5s; extend as needed).
KNOWN_MD5 = {
    ("adrenalmnist3d", 28): "bbd3c5a5576322bc4cdfea780653b1ce",
    ("adrenalmnist3d", 64): "17721accfe9fb005146a47d33bc54b2f",
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load and validate a MedMNIST file.

    Returns:
        ``{"train_images": (N, *spatial) uint8, "train_labels": (N,) int64, ...}`` for the splits
        present (``train`` is required); RGB images are converted to grayscale.

    Raises:
        DataError: unreadable file, missing keys, multi-label or mismatched lengths.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read MedMNIST .npz ({type(e).__name__}: {e})") from None
    if "train_images" not in raw:
        raise DataError(f"{path}: no 'train_images' key; keys are {', '.join(sorted(raw)) or '(none)'}")
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in raw:
            continue
        if lk not in raw:
            raise DataError(f"{path}: key {ik!r} has no matching {lk!r}")
        images, labels = raw[ik], raw[lk]
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise DataError(f"{path}: {lk} has shape {labels.shape}; multi-label MedMNIST sets are not supported")
        labels = labels.reshape(-1).astype(np.int64)
        if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
            images = np.round(images.astype(np.float32) @ _LUMA).astype(np.uint8)  # RGB -> gray
        if images.ndim not in (3, 4) or len(images) != len(labels):
            raise DataError(f"{path}: {ik} shape {images.shape} does not fit {lk} shape {raw[lk].shape}")
        out[ik], out[lk] = images, labels
    return out


@READERS.register("medmnist")
def read_medmnist(path: str | Path, **_: object) -> list[RawSubject]:
    """A MedMNIST .npz (2D or 3D, official train/val/test splits kept)."""
    path = Path(path)
    data = load_npz(path)
    subjects = []
    for split in SPLITS:
        if f"{split}_images" not in data:
            continue
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
        for i in range(len(images)):
            arr = images[i]
            subjects.append(RawSubject(f"{split}_{i:05d}", str(int(labels[i])), f"{path}:{split}_images[{i}]",
                                       arr, np.eye(4), sha256_bytes(arr.tobytes()), split))
    if not subjects:
        raise DataError(f"{path}: the file holds no images")
    return subjects


def medmnist_url(flag: str, size: int | None = None) -> str:
    """Zenodo URL of a MedMNIST v3 file (``size`` None or 28: the original size)."""
    suffix = "" if size in (None, 28) else f"_{int(size)}"
    return ZENODO_URL.format(flag=flag.lower(), suffix=suffix)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_medmnist(flag: str, size: int | None, root: str | Path, url: str | None = None,
                      md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download a MedMNIST file (needs internet) to ``root/{flag}[_{size}].npz``.

    The file is streamed to a temporary name, its MD5 checked (``md5`` or the known one for
    ``(flag, size)``), its keys validated, and only then renamed into place.  An existing valid
    file is reused.

    Args:
        flag: dataset name, e.g. ``adrenalmnist3d`` or ``breastmnist``.
        size: 28 (or None), 64, 128 or 224.
        root: destination folder.
        url: override the Zenodo URL (e.g. a mirror or ``file://`` path).
        md5: expected MD5 hex digest; None uses :data:`KNOWN_MD5` when it has one.
        timeout: socket timeout in seconds.

    Returns:
        The path of the verified file.

    Raises:
        DataError: no network / HTTP error, checksum mismatch or a file that is not MedMNIST.
    """
    dest = Path(root) / f"{flag.lower()}{'' if size in (None, 28) else f'_{int(size)}'}.npz"
    expected = md5 or KNOWN_MD5.get((flag.lower(), int(size or 28)))
    if dest.is_file() and (expected is None or _md5(dest) == expected):
        return dest
    src = url or medmnist_url(flag, size)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(src, timeout=timeout) as resp, open(tmp, "wb") as f:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    f.write(block)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DataError(f"cannot download {src} ({e}); are you offline? Download the file by hand "
                            f"and pass its path to `synthmed preprocess`") from None
        got = _md5(tmp)
        if expected is not None and got != expected:
            raise DataError(f"{src}: checksum mismatch (md5 {got}, expected {expected}); file discarded")
        load_npz(tmp)
    log.info("downloaded %s to %s", src, dest)
    return dest
