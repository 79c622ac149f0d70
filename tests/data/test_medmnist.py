"""MedMNIST reader (2D, 3D, label shapes), prepared output and the offline-tested downloader."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from synthmed.data import medmnist
from synthmed.data.medmnist import download_medmnist, medmnist_url, read_medmnist
from synthmed.data.prepared import load_prepared
from synthmed.data.preprocess import PreprocessOptions, run_preprocess
from synthmed.data.readers import detect_reader
from synthmed.errors import DataError


def _npz(path: Path, spatial: tuple[int, ...], flat_labels: bool, n: tuple[int, int, int] = (12, 4, 6)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, *spatial), dtype=np.uint8)
        lab = (np.arange(k) % 2).astype(np.uint8)
        arrays[f"{split}_labels"] = lab if flat_labels else lab[:, None]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("spatial,flat", [((8, 8), True), ((6, 6, 6), False)])
def test_medmnist_reader(tmp_path: Path, spatial: tuple[int, ...], flat: bool) -> None:
    f = _npz(tmp_path / "x.npz", spatial, flat)
    subs = read_medmnist(f)
    assert len(subs) == 22 and subs[0].array.shape == spatial and subs[0].label_name == "0"
    assert [s.split for s in subs].count("test") == 6 and subs[-1].subject_id == "test_00005"
    assert detect_reader(f) == "medmnist"


def test_medmnist_prepared_keeps_test_split(tmp_path: Path) -> None:
    f = _npz(tmp_path / "x3d.npz", (6, 6, 6), False)
    ds = load_prepared(run_preprocess(PreprocessOptions(input=f, out=tmp_path / "p", size=None, n_folds=2,
                                                        progress=False)))
    assert ds.images.shape == (22, 1, 6, 6, 6) and ds.classes == ["0", "1"]
    raw = np.load(f)["train_images"][0].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(ds.images[0, 0], raw, atol=1e-6)
    assert ds.splits["test"] == [f"test_{i:05d}" for i in range(6)]
    assert len(ds.indices("test")) == 6 and len(ds.indices("trainval")) == 16
    ds2 = load_prepared(run_preprocess(PreprocessOptions(input=_npz(tmp_path / "x2d.npz", (8, 8), True),
                                                         out=tmp_path / "p2", size=16, n_folds=2, progress=False)))
    assert ds2.images.shape == (22, 1, 16, 16) and ds2.meta["spacing"] == [0.5, 0.5]
    assert -1.0 <= ds2.images.min() and ds2.images.max() <= 1.0


def test_medmnist_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: cannot read"):
        read_medmnist(tmp_path / "junk.npz")
    np.savez(tmp_path / "nokeys.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"nokeys\.npz: no 'train_images'"):
        read_medmnist(tmp_path / "nokeys.npz")
    np.savez(tmp_path / "multi.npz", train_images=np.zeros((2, 4, 4), np.uint8),
             train_labels=np.zeros((2, 3), np.uint8))
    with pytest.raises(DataError, match="multi-label"):
        read_medmnist(tmp_path / "multi.npz")


def test_url_pattern() -> None:
    assert medmnist_url("breastmnist") == "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
    assert medmnist_url("AdrenalMNIST3D", 64).endswith("/adrenalmnist3d_64.npz?download=1")


def test_download_from_file_url(tmp_path: Path) -> None:
    src = _npz(tmp_path / "served.npz", (8, 8), True)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    got = download_medmnist("breastmnist", 28, tmp_path / "cache", url=src.as_uri(), md5=md5)
    assert got == tmp_path / "cache" / "breastmnist.npz" and got.read_bytes() == src.read_bytes()
    # a valid existing file is reused without touching the network
    assert download_medmnist("breastmnist", None, tmp_path / "cache", url="file:///nonexistent", md5=md5) == got


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    src = _npz(tmp_path / "served.npz", (8, 8), True)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_medmnist("breastmnist", 64, tmp_path / "cache", url=src.as_uri(), md5="0" * 32)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_: object, **__: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(medmnist.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download https://zenodo\.org/.*offline"):
        download_medmnist("adrenalmnist3d", 28, tmp_path)
    assert list(tmp_path.iterdir()) == []
