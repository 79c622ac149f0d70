"""Atomic, self-describing checkpoints and the run-folder layout.

A checkpoint holds everything needed to continue a killed run exactly: network weights,
optimiser and loss-scaler state, the step, the data-stream position and every process's RNG
state, plus the model name and parameters so that loading it into another model fails with a
clear message instead of a shape error.

Every checkpoint ``NAME.pt`` has a sidecar ``NAME.pt.sha256.json`` with the SHA-256 of its bytes,
written (atomically) just before the checkpoint is renamed into place.  Loading checks it, so a
checkpoint with flipped bits is an error naming the file instead of silently wrong weights.  The
sidecar also lists the digest of the checkpoint it replaces, because a process killed between the two
renames leaves the new sidecar beside the old (intact) checkpoint.  Checkpoints written before the
sidecar existed still load, with a warning.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthmed.errors import CheckpointError
from synthmed.io_utils import atomic_path, sha256_bytes, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

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


def checksum_path(path: str | Path) -> Path:
    """The SHA-256 sidecar of the checkpoint ``path`` (``NAME.pt.sha256.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256.json")


def _recorded_digests(path: Path) -> list[str] | None:
    """The digests the sidecar of ``path`` accepts (current first), or None without a sidecar."""
    side = checksum_path(path)
    if not side.is_file():
        return None
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
        digests = [d["sha256"], *([d["previous_sha256"]] if d.get("previous_sha256") else [])]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{side}: unreadable checksum file of {path.name} ({type(e).__name__}: {e})") from None
    if not all(isinstance(v, str) and len(v) == 64 for v in digests):
        raise CheckpointError(f"{side}: not a SHA-256 checksum file")
    return digests


def verify_checkpoint(path: str | Path, data: bytes | None = None) -> bool | None:
    """Check the checkpoint ``path`` (or its bytes ``data``) against its sidecar.

    Returns:
        True if it matches, None if it has no sidecar (an older run).

    Raises:
        CheckpointError: naming the file when the bytes do not match (a corrupt file) or the sidecar is
        unreadable.
    """
    path = Path(path)
    digests = _recorded_digests(path)
    if digests is None:
        return None
    have = sha256_bytes(data) if data is not None else sha256_file(path)
    if have not in digests:
        raise CheckpointError(f"{path}: corrupt checkpoint: its SHA-256 is {have[:16]}..., but "
                              f"{checksum_path(path).name} records {digests[0][:16]}... (a damaged disk or an "
                              "incomplete copy); restore the file, or train again")
    return True


def save_checkpoint(path: Path, *, model: str, params: Any, spatial_dims: int, shape: tuple[int, ...],
                    step: int, nets: dict[str, nn.Module], extra: dict[str, Any]) -> None:
    """Write a checkpoint and its SHA-256 sidecar atomically (temporary files, then renames).

    The written bytes are read back and checked before they replace the previous checkpoint, so a
    failed write keeps the previous checkpoint.
    """
    path = Path(path)
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
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    digest = sha256_bytes(data)
    previous = None  # the digest of the checkpoint being replaced, unless it is known to be corrupt
    if path.is_file():
        try:
            recorded = _recorded_digests(path)
        except CheckpointError:
            recorded = []
        have = sha256_file(path)
        previous = have if recorded is None or have in recorded else None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        if sha256_file(tmp) != digest:
            raise CheckpointError(f"{path}: the checkpoint read back differs from what was written (a disk or "
                                  "file-system error); the previous checkpoint is kept")
        write_json_atomic(checksum_path(path), {"file": path.name, "sha256": digest, "bytes": len(data),
                                                "previous_sha256": previous})
    del data
    buf.close()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a synthmed checkpoint (CheckpointError if missing, corrupt or foreign).

    The bytes are checked against the SHA-256 sidecar; a checkpoint without one (written by an older
    synthmed) loads with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    data = path.read_bytes()  # one read: the checked bytes are the loaded bytes
    if verify_checkpoint(path, data) is None:
        log.warning("%s: no checksum file (%s) beside the checkpoint (written by an older synthmed), so it "
                    "cannot be checked for corruption", path, checksum_path(path).name)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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
