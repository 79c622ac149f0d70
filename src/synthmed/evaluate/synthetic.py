"""Load a synthetic cohort to evaluate: a folder written by ``synthmed sample`` or a run folder.

A run folder is sampled on the fly (sample ``i`` from seed ``seed + i``, exactly as
``synthmed sample`` would write it), so ``--synthetic RUN_DIR`` and ``--synthetic SAMPLED_DIR``
give identical numbers for the same seeds.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from synthmed.errors import DataError


@dataclass
class SyntheticSet:
    """Synthetic images and where they came from.

    Attributes:
        images: (M, 1, *spatial) float32 in [-1, 1].
        labels: (M,) int labels or None.
        provenance: model, checkpoint SHA-256, seeds, source path.
        train_subject_ids: the subjects the generating run was trained on (its ``data.json``), when known.
        ids: (M,) names of the samples (file names of a sampled folder, ``seed N`` of a run folder).
    """

    images: np.ndarray
    labels: np.ndarray | None
    provenance: dict[str, Any] = field(default_factory=dict)
    train_subject_ids: list[str] | None = None
    ids: list[str] | None = None


def is_run_folder(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "data.json").is_file()


def _read_image(path: Path) -> np.ndarray:
    try:
        if path.name.endswith((".nii", ".nii.gz")):
            return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / 127.5 - 1.0
    except Exception as e:  # noqa: BLE001 - nibabel/PIL raise many types for bad files
        raise DataError(f"{path}: cannot read synthetic image ({type(e).__name__}: {e})") from None


def load_sampled_folder(folder: Path) -> SyntheticSet:
    """Read a ``synthmed sample`` output folder (its ``manifest.csv`` lists the files)."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{folder}: no manifest.csv; expected a folder written by `synthmed sample` or a run folder")
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{manifest}: lists no images")
    images = np.stack([_read_image(folder / r["file"])[None] for r in rows]).astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{folder}: synthetic images contain NaN or Inf")
    labels = None
    if all(r.get("label", "") != "" for r in rows):
        labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    meta = json.loads((folder / "sample.json").read_text(encoding="utf-8")) if (folder / "sample.json").is_file() else {}
    runs = generating_runs(folder, meta)
    train_ids = training_subjects(runs)
    prov = {"source": str(folder.resolve()), "kind": "sampled folder", "n": len(rows),
            "model": meta.get("model"), "checkpoint_sha256": meta.get("checkpoint_sha256"),
            "seeds": [int(r["seed"]) for r in rows if r.get("seed", "") != ""],
            "training_warnings": list(meta.get("training_warnings") or []),
            "runs": [str(r) for r in runs]}
    return SyntheticSet(np.clip(images, -1, 1), labels, prov, train_ids, [r["file"] for r in rows])


def generating_runs(folder: Path, meta: dict[str, Any]) -> list[Path]:
    """The run folders a sampled folder was generated from, as far as they still exist: ``sample.json``'s
    ``run`` (``synthmed sample``), its ``runs`` (a protocol's pooled samples, one run per class), or the
    run folder holding its ``checkpoint`` (folders sampled before ``run`` was recorded)."""
    named = [meta.get("run")] + [v.get("run") for v in (meta.get("runs") or {}).values() if isinstance(v, dict)]
    found = []
    for p in [Path(str(n)) for n in named if n]:
        p = p if p.is_absolute() else (folder / p)
        if (p / "data.json").is_file() and p.resolve() not in found:
            found.append(p.resolve())
    if not found and meta.get("checkpoint"):
        for parent in Path(str(meta["checkpoint"])).parents:
            if (parent / "data.json").is_file() and (parent / "config.yaml").is_file():
                found.append(parent.resolve())
                break
    return found


def training_subjects(runs: list[Path]) -> list[str] | None:
    """The union of the runs' training subjects (``data.json`` ``train_subject_ids``); None when no run
    records them."""
    ids: list[str] = []
    for run in runs:
        try:
            data = json.loads((run / "data.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{run / 'data.json'}: cannot read the run's training subjects ({e})") from None
        ids += [str(i) for i in data.get("train_subject_ids") or [] if str(i) not in ids]
    return ids or None


def sample_run(run_dir: Path, n: int, seed: int = 0, device: str = "auto", batch_size: int = 8) -> SyntheticSet:
    """Generate ``n`` images from a run folder (seeds ``seed .. seed+n-1``)."""
    from synthmed.generate.sample import generate_batch, load_run, training_warnings

    run = load_run(run_dir, device=device)
    parts = [generate_batch(run, list(range(s, min(seed + n, s + batch_size)))) for s in range(seed, seed + n, batch_size)]
    prov = {"source": str(run_dir.resolve()), "kind": "run folder (sampled on the fly)", "n": n,
            "model": run.cfg.model.name, "checkpoint_sha256": run.checkpoint_sha256, "step": run.step,
            "seeds": list(range(seed, seed + n)), "ema": run.ema,
            "training_warnings": training_warnings(run_dir)}
    return SyntheticSet(np.concatenate(parts).astype(np.float32), None, prov, run.data.get("train_subject_ids"),
                        [f"seed {s}" for s in range(seed, seed + n)])


def load_synthetic(path: str | Path, n: int, seed: int = 0, device: str = "auto") -> SyntheticSet:
    """A sampled folder, or ``n`` fresh samples from a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: synthetic folder or run folder does not exist")
    if is_run_folder(path):
        return sample_run(path, n, seed, device)
    return load_sampled_folder(path)
