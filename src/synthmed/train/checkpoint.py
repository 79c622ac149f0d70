"""Atomic, self-describing checkpoints and the run-folder layout.

A checkpoint holds everything needed to continue a killed run exactly: network weights,
optimiser and loss-scaler state, the step, the data-stream position and every process's RNG
state, plus the model name and parameters so that loading it into another model fails with a
clear message instead of a shape error.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthmed.errors import CheckpointError
from synthmed.io_utils import atomic_path

CHECKPOINT_FORMAT = 1


class RunFolder:
    """Paths inside a run folder (``synthmed train --out RUN_DIR``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    run_json = property(lambda self: self.root / "run.json")
    data_json = property(lambda self: self.root / "data.json")
    metrics_csv = property(lambda self: self.root / "metrics.csv")
    logs = property(lambda self: self.root / "logs")
    samples = property(lambda self: self.root / "samples")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA, NumPy, Python) as plain, safely loadable data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, *, model: str, params: Any, spatial_dims: int, shape: tuple[int, ...],
                    step: int, nets: dict[str, nn.Module], extra: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    payload = {
        "synthmed_checkpoint": CHECKPOINT_FORMAT,
        "model": model,
        "params": dataclasses.asdict(params),
        "spatial_dims": spatial_dims,
        "shape": list(shape),
        "step": step,
        "nets": {k: m.state_dict() for k, m in nets.items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a synthmed checkpoint (CheckpointError if missing, corrupt or foreign)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("synthmed_checkpoint") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a synthmed checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return ckpt


def check_compatible(ckpt: dict[str, Any], path: Path, model: str, params: Any,
                     spatial_dims: int, shape: tuple[int, ...]) -> None:
    """Raise CheckpointError when ``ckpt`` was written by another model/parameters/data shape."""
    if ckpt["model"] != model:
        raise CheckpointError(f"{path}: checkpoint of model {ckpt['model']!r}, but the config names model {model!r}")
    want = dataclasses.asdict(params)
    diff = [k for k in sorted(set(want) | set(ckpt["params"])) if want.get(k) != ckpt["params"].get(k)]
    if diff:
        details = ", ".join(f"model.{k}: checkpoint {ckpt['params'].get(k)!r} vs config {want.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: checkpoint parameters differ from the config ({details})")
    if ckpt["spatial_dims"] != spatial_dims or list(ckpt["shape"]) != list(shape):
        raise CheckpointError(f"{path}: checkpoint is for {ckpt['spatial_dims']}D images of shape {ckpt['shape']}, "
                              f"but the data are {spatial_dims}D of shape {list(shape)}")


def load_nets(ckpt: dict[str, Any], path: Path, nets: dict[str, nn.Module]) -> None:
    """Load weights into ``nets`` (un-wrapped modules), naming the file on any mismatch."""
    missing = sorted(set(nets) - set(ckpt["nets"]))
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no weights for network(s) {', '.join(missing)}")
    for k, m in nets.items():
        try:
            m.load_state_dict(ckpt["nets"][k])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights of network {k!r} do not fit the model ({first})") from None
