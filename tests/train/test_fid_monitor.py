"""FID during training (paper 004 S.3): logged, best checkpoint kept, early stop, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.metrics.feature import fid
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.fid_monitor import FIDState
from synthmed.train.loop import train

FID = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "model.code_hidden_dim=16",
       "train.n_preview=2", "train.log_every=1", "train.fid_every=2", "train.fid_extractor_iterations=3",
       "train.fid_samples=6"]


def test_fid_logged_and_best_checkpoint_kept(tiny3d: Path, tmp_path: Path) -> None:
    cfg = load_config("alpha_sngan", [*FID, "train.iterations=6", "train.fid_patience=0"])
    run = train(cfg, tiny3d, tmp_path / "run", progress=False)
    rows = list(csv.DictReader(open(run / "fid.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    values = [float(r["fid"]) for r in rows]
    assert all(np.isfinite(values)) and all(v >= 0 for v in values)
    assert {r["extractor"] for r in rows} == {"indomain-ae"} and rows[0]["weights_sha256"]
    assert (run / "fid_extractor.pt").is_file()
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == [2, 4, 6][int(np.argmin(values))]
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert meta["best_fid"] == pytest.approx(min(values), rel=1e-5) and meta["status"] == "finished"


def test_early_stop_after_patience(tiny3d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthmed.train import fid_monitor

    seq = iter([5.0, 4.0, 4.5, 4.6, 1.0, 1.0])  # improves, improves, then two evaluations without improvement
    monkeypatch.setattr(fid_monitor, "fid", lambda a, b: next(seq))
    cfg = load_config("sngan", [*FID[:3], "train.n_preview=2", "train.log_every=1", "train.fid_every=1",
                                "train.fid_extractor_iterations=2", "train.fid_samples=4", "train.iterations=20",
                                "train.fid_patience=2"])
    run = train(cfg, tiny3d, tmp_path / "run", progress=False)
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert meta["status"] == "stopped_early" and meta["step"] == 4
    assert meta["best_fid"] == 4.0 and meta["best_fid_step"] == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert load_checkpoint(run / "checkpoints" / "best.pt")["step"] == 2


def test_fid_state_survives_resume(tiny3d: Path, tmp_path: Path) -> None:
    over = [*FID, "train.fid_patience=0", "train.checkpoint_every=2"]
    run = train(load_config("alpha_sngan", [*over, "train.iterations=4"]), tiny3d, tmp_path / "run", progress=False)
    state = FIDState.from_dict(load_checkpoint(run / "checkpoints" / "last.pt")["fid_state"])
    assert [s for s, _ in state.history] == [2, 4]
    train(load_config("alpha_sngan", [*over, "train.iterations=6"]), tiny3d, run, resume=True, progress=False)
    state = FIDState.from_dict(load_checkpoint(run / "checkpoints" / "last.pt")["fid_state"])
    assert [s for s, _ in state.history] == [2, 4, 6]
    assert [int(r["step"]) for r in csv.DictReader(open(run / "fid.csv"))] == [2, 4, 6]


def test_unknown_fid_extractor_is_named() -> None:
    with pytest.raises(ConfigError, match="train.fid_extractor"):
        load_config("sngan", ["train.fid_every=5", "train.fid_extractor=inception9"])


def test_monitor_value_matches_metric(tiny3d: Path, tmp_path: Path) -> None:
    """The logged value is fid() of the extractor's features of real and fixed-seed synthetic images."""
    import torch

    from synthmed.features.base import extract_features
    from synthmed.features.indomain import load_indomain_extractor
    from synthmed.generate.sample import load_run
    from synthmed.train.fid_monitor import FID_SEED

    cfg = load_config("sngan", [*FID[:3], "train.n_preview=2", "train.fid_every=2", "train.iterations=2",
                                "train.fid_extractor_iterations=2", "train.fid_samples=5", "train.fid_patience=0"])
    run = train(cfg, tiny3d, tmp_path / "run", progress=False)
    logged = float(next(csv.DictReader(open(run / "fid.csv")))["fid"])
    from synthmed.data.prepared import load_prepared

    ds = load_prepared(tiny3d)
    real = np.asarray(ds.images[ds.indices("trainval")])
    ext = load_indomain_extractor(run / "fid_extractor.pt")
    loaded = load_run(run, device="cpu")
    g = torch.Generator().manual_seed(FID_SEED)
    z = loaded.family.sample_latent(loaded.cfg.model.params, 5, g)
    with torch.no_grad():
        fake = loaded.family.generate(loaded.nets, z).clamp(-1, 1).numpy()
    with pytest.warns(UserWarning, match="feature dimensions"):  # 6 samples in 256 dims, as logged
        ref = float(fid(extract_features(ext, real, progress=False), extract_features(ext, fake, progress=False)))
    assert logged == pytest.approx(ref, rel=1e-4)
