"""Candidate runs of the protocol: reused when finished, continued when interrupted, never mixed up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from protocol_helpers import TINY_GAN
from synth_testdata import make_tiny_prepared

from synthmed.config import load_config
from synthmed.errors import SynthmedError
from synthmed.protocol.candidates import ensure_run
from synthmed.protocol.config import overrides_from_mapping


def test_ensure_run_reuses_resumes_and_refuses_other_configs(tmp_path: Path) -> None:
    prep = make_tiny_prepared(tmp_path / "prep", n=8)
    over = [*overrides_from_mapping(TINY_GAN), "train.iterations=2", "train.checkpoint_every=1", "train.n_preview=1",
            "train.label=a", "train.device=cpu"]
    cfg = load_config("sngan", over)
    run = tmp_path / "run"
    first = ensure_run(cfg, prep, run, progress=False)
    assert first["status"] == "finished" and not first["reused"]
    ckpt = run / "checkpoints" / "last.pt"
    mtime = ckpt.stat().st_mtime_ns
    again = ensure_run(cfg, prep, run, progress=False)
    assert again["reused"] and ckpt.stat().st_mtime_ns == mtime  # finished: not retrained

    # an interrupted run continues from its checkpoint (train's own --resume), it does not start over
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}), encoding="utf-8")
    resumed = ensure_run(cfg, prep, run, progress=False)
    assert resumed.get("resumed") and resumed["status"] == "finished"
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["step"] == 2

    other = load_config("sngan", [*over[:-2], "train.label=b", "train.device=cpu"])
    with pytest.raises(SynthmedError, match="another config"):
        ensure_run(other, prep, run, progress=False)


def test_overrides_from_mapping_nested_and_flat() -> None:
    got = overrides_from_mapping({"train.iterations": 3, "model": {"latent_dim": 8, "betas": [0.5, 0.9]}, "x": {}})
    assert got == ["train.iterations=3", "model.latent_dim=8", "model.betas=[0.5, 0.9]", "x={}"]
    assert overrides_from_mapping({}) == [] and overrides_from_mapping(None) == []
