"""DDP through torchrun: 2 gloo processes on CPU train one run with synchronised replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synthmed.train.checkpoint import load_checkpoint


def test_torchrun_two_gloo_processes(tiny3d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synthmed", "train", "alpha_sngan", "--data", str(tiny3d), "--out", str(run), "--no-progress",
           "--set", "train.iterations=3", "--set", "train.device=cpu", "--set", "model.latent_dim=16",
           "--set", "model.base_channels=4", "--set", "model.max_channels=8", "--set", "model.code_hidden_dim=16",
           "--set", "train.batch_size=2", "--set", "augment.enabled=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert meta["world_size"] == 2 and meta["status"] == "finished"
    digests = meta["replica_param_sha256"]
    # each rank saw different images and latents; equal weights prove gradients were all-reduced
    assert len(digests) == 2 and digests[0] == digests[1]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    assert not torch_equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
