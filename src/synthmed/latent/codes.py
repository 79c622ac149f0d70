"""Latent codes of real images from a trained model's encoder: ``synthmed encode RUN --data D --out FILE``.

Paper 001 (Sec. IV-D) encodes whole real images into the latent space and uses the codes as
features for predicting clinical measurements.  Any family with an encoder works (``has_encoder``:
HA-GAN and alpha-HA-GAN through their non-overlapping sub-volumes, alpha-SN-GAN, the VAEs).

A codes file is ``.npz`` (``codes`` float32 (N, latent_dim), ``subject_ids``, ``labels`` (-1 when
unlabelled) and ``meta``, a JSON string with the run, checkpoint hash and data) or ``.csv``
(``subject_id, label, z0 ... z{latent_dim-1}``, meta in ``FILE.json``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed import __version__
from synthmed.data.prepared import load_prepared
from synthmed.errors import DataError
from synthmed.io_utils import atomic_path, write_json_atomic
from synthmed.progress import progress as progress_bar


@dataclass
class Codes:
    """Latent codes of a set of subjects.

    Attributes:
        codes: (N, latent_dim) float32.
        subject_ids: N subject ids (as in the prepared manifest).
        labels: (N,) int64 class labels, -1 where unlabelled.
        meta: provenance (run, checkpoint and its SHA-256, model, data folder and images hash, subset).
    """

    codes: np.ndarray
    subject_ids: list[str]
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.subject_ids)


def encode_dataset(run_dir: str | Path, data_dir: str | Path, subset: str = "all", fold: int = 0,
                   batch_size: int = 4, checkpoint: str | Path | None = None, device: str = "auto",
                   progress: bool = True) -> Codes:
    """Encode the real images of a prepared dataset with a trained run's encoder (eval mode, no gradients).

    Args:
        run_dir: run folder written by ``synthmed train`` (a family with an encoder).
        data_dir: prepared dataset with the run's image shape.
        subset: ``all``, ``trainval``, ``test``, ``train`` or ``val`` (saved splits).
        fold: fold for ``train``/``val``.
        batch_size: images per forward pass (the codes do not depend on it).
        checkpoint: checkpoint file (default ``RUN/checkpoints/last.pt``).
        device: ``auto``, ``cpu``, ``cuda`` ...

    Raises:
        ConfigError: if the model has no encoder.  DataError: if the data do not fit the run.
    """
    from synthmed.generate.sample import load_run

    run = load_run(run_dir, checkpoint, device)
    run.family._require_encoder()
    ds = load_prepared(data_dir)
    if ds.spatial_dims != run.data["spatial_dims"] or list(ds.shape) != list(run.data["shape"]):
        raise DataError(f"{data_dir}: images are {ds.spatial_dims}D of shape {list(ds.shape)}, but run {run_dir} was "
                        f"trained on {run.data['spatial_dims']}D images of shape {run.data['shape']}")
    rows = ds.indices(subset, fold)
    out = []
    with torch.no_grad():
        for s in progress_bar(range(0, len(rows), batch_size), disable=not progress, desc="encode", unit="batch"):
            x = torch.as_tensor(np.asarray(ds.images[rows[s:s + batch_size]]), dtype=torch.float32, device=run.device)
            out.append(run.family.encode(run.nets, x).float().cpu().numpy())
    codes = np.concatenate(out) if out else np.zeros((0, run.family.latent_dim(run.cfg.model.params)), np.float32)
    labels = np.array([-1 if ds.records[i].label is None else ds.records[i].label for i in rows], dtype=np.int64)
    meta = {"synthmed_version": __version__, "run": str(Path(run_dir).resolve()), "model": run.cfg.model.name,
            "checkpoint": str(run.checkpoint.resolve()), "checkpoint_sha256": run.checkpoint_sha256, "step": run.step,
            "data": str(ds.root.resolve()), "images_sha256": ds.meta.get("images_sha256"), "subset": subset,
            "fold": fold, "classes": ds.classes}
    return Codes(codes.astype(np.float32), [ds.subject_ids[i] for i in rows], labels, meta)


def save_codes(codes: Codes, path: str | Path) -> Path:
    """Write ``.npz`` or ``.csv`` (+ ``.json`` provenance) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["subject_id", "label", *(f"z{i}" for i in range(codes.codes.shape[1]))])
            for sid, lab, z in zip(codes.subject_ids, codes.labels, codes.codes, strict=True):
                w.writerow([sid, int(lab), *(f"{v:.7g}" for v in z)])
        write_json_atomic(path.with_suffix(".json"), codes.meta)
    elif path.suffix == ".npz":
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, codes=codes.codes, subject_ids=np.array(codes.subject_ids, dtype=str), labels=codes.labels,
                     meta=np.array(json.dumps(codes.meta)))
    else:
        raise DataError(f"{path}: codes file must end in .npz or .csv")
    return path


def load_codes(path: str | Path) -> Codes:
    """Read a codes file written by :func:`save_codes`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: codes file not found (write one with `synthmed encode`)")
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            zcols = [k for k in (rows[0] if rows else {}) if k.startswith("z")]
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
            return Codes(np.array([[float(r[k]) for k in zcols] for r in rows], dtype=np.float32).reshape(len(rows), -1),
                         [r["subject_id"] for r in rows], np.array([int(r["label"]) for r in rows], dtype=np.int64),
                         meta)
        with np.load(path, allow_pickle=False) as z:
            return Codes(z["codes"].astype(np.float32), [str(s) for s in z["subject_ids"]], z["labels"].astype(np.int64),
                         json.loads(str(z["meta"])))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a readable codes file ({type(e).__name__}: {e})") from None
