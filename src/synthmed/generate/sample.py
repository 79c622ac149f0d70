"""Sampling from a trained run: ``synthmed sample RUN_DIR --n N --out DIR``.

Every sample ``i`` is generated from its own seed (``seed + i``), so a cohort is reproducible
and independent of the batch size, and any single image can be regenerated from the manifest.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthmed import __version__
from synthmed.config import RunConfig, load_config
from synthmed.errors import DataError, SynthmedError
from synthmed.generate.writers import write_nifti, write_png
from synthmed.io_utils import sha256_file, write_json_atomic
from synthmed.models.base import ModelFamily, get_family
from synthmed.progress import progress as progress_bar
from synthmed.train.checkpoint import RunFolder, check_compatible, load_checkpoint, load_nets
from synthmed.train.distributed import DistInfo, resolve_device


@dataclass
class LoadedRun:
    """A trained run ready to generate."""

    cfg: RunConfig
    family: ModelFamily
    nets: dict[str, nn.Module]
    data: dict[str, Any]
    checkpoint: Path
    checkpoint_sha256: str
    step: int
    device: torch.device


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto") -> LoadedRun:
    """Rebuild a run's networks from its config and checkpoint (eval mode)."""
    run = RunFolder(run_dir)
    if not run.root.is_dir():
        raise SynthmedError(f"{run.root}: run folder does not exist")
    for p in (run.config, run.data_json):
        if not p.is_file():
            raise SynthmedError(f"{p}: missing; {run.root} is not a synthmed run folder")
    cfg = load_config(run.config)
    data = json.loads(run.data_json.read_text(encoding="utf-8"))
    family = get_family(cfg.model.name)
    ckpt_path = Path(checkpoint) if checkpoint else run.last
    ckpt = load_checkpoint(ckpt_path)
    shape = tuple(data["shape"])
    check_compatible(ckpt, ckpt_path, cfg.model.name, cfg.model.params, data["spatial_dims"], shape)
    dev = resolve_device(device, DistInfo())
    nets = family.build(cfg.model.params, data["spatial_dims"], shape)
    load_nets(ckpt, ckpt_path, nets)
    for m in nets.values():
        m.to(dev).eval()
    return LoadedRun(cfg, family, nets, data, ckpt_path, sha256_file(ckpt_path), int(ckpt["step"]), dev)


def generate_batch(run: LoadedRun, seeds: list[int]) -> np.ndarray:
    """Images (len(seeds), 1, *spatial) in [-1, 1], one latent per seed."""
    z = torch.stack([run.family.sample_latent(run.cfg.model.params, 1, torch.Generator().manual_seed(s))[0]
                     for s in seeds]).to(run.device)
    return run.family.generate_images(run.nets, z)


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SynthmedError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def sample(run_dir: str | Path, n: int, out: str | Path, seed: int = 0, batch_size: int = 8,
           checkpoint: str | Path | None = None, device: str = "auto", overwrite: bool = False,
           progress: bool = True) -> Path:
    """Generate ``n`` images from a run into ``out`` (NIfTI for 3D, PNG for 2D) with ``manifest.csv``.

    The folder appears complete or not at all (written to a temporary folder, then renamed).
    """
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    run = load_run(run_dir, checkpoint, device)
    out = Path(out)
    tmp = _prepare_out(out, overwrite)
    try:
        rows = _write_samples(run, n, tmp, seed, batch_size, progress)
        _write_manifest(run, rows, tmp, seed, n)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write_samples(run: LoadedRun, n: int, tmp: Path, seed: int, batch_size: int,
                   progress: bool) -> list[dict[str, Any]]:
    from synthmed.data.preview import save_slice_grid

    is3d = run.data["spatial_dims"] == 3
    affine = np.asarray(run.data["affine"], dtype=np.float64)
    rows: list[dict[str, Any]] = []
    preview: list[np.ndarray] = []
    for start in progress_bar(range(0, n, batch_size), disable=not progress, desc="sample", unit="batch"):
        seeds = [seed + i for i in range(start, min(n, start + batch_size))]
        imgs = generate_batch(run, seeds)
        for s, img in zip(seeds, imgs, strict=True):
            name = f"synthetic_{s - seed:05d}" + (".nii.gz" if is3d else ".png")
            if is3d:
                write_nifti(img[0], affine, tmp / name)
            else:
                write_png(img[0], tmp / name)
            rows.append({"file": name, "label": "", "label_name": "", "seed": s})
        if len(preview) < 8:
            preview.extend(imgs[: 8 - len(preview)])
    save_slice_grid(np.stack(preview), tmp / "preview.png", spacing=run.data.get("spacing"))
    return rows


def _write_manifest(run: LoadedRun, rows: list[dict[str, Any]], tmp: Path, seed: int, n: int) -> None:
    extra = {"model": run.cfg.model.name, "checkpoint": str(run.checkpoint.resolve()),
             "checkpoint_sha256": run.checkpoint_sha256, "step": run.step}
    cols = ["file", "label", "label_name", "seed", *extra]
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({**r, **extra})
    write_json_atomic(tmp / "sample.json", {
        "synthmed_version": __version__, "n": n, "seed": seed, **extra,
        "config": run.cfg.to_dict(), "spatial_dims": run.data["spatial_dims"], "shape": run.data["shape"],
        "affine": run.data["affine"], "spacing": run.data.get("spacing"), "trained_on": run.data.get("path"),
        "trained_on_sha256": run.data.get("images_sha256"),
    })


