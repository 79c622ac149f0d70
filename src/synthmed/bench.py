"""``synthmed bench``: seconds per training iteration and peak memory per model, size and batch.

Each configuration runs in a fresh subprocess so its peak memory is its own: peak resident set
size on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on a GPU.  Iterations are full
training iterations of the family's ``Step`` (all networks, all updates) on random data in
[-1, 1], after warm-up iterations that are not timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from synthmed.config import load_config
from synthmed.errors import SynthmedError
from synthmed.io_utils import atomic_path

COLUMNS = ["model", "spatial_dims", "size", "batch_size", "device", "precision", "sec_per_it", "it_per_sec",
           "peak_mem_mb", "n_params", "status"]


def bench_one(model: str, size: int, batch_size: int, spatial_dims: int = 3, iterations: int = 5,
              warmup: int = 2, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> dict[str, Any]:
    """Time ``iterations`` training iterations of ``model`` (the shipped config's paper defaults)."""
    from synthmed.models.base import get_family
    from synthmed.train.steps import make_step

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(model, [f"train.precision={precision}", f"train.batch_size={batch_size}"])
    dev = torch.device(device)
    family = get_family(cfg.model.name)
    row: dict[str, Any] = {"model": model, "spatial_dims": spatial_dims, "size": size, "batch_size": batch_size,
                           "device": device, "precision": precision}
    torch.manual_seed(0)
    try:
        nets = {k: m.to(dev) for k, m in family.build(cfg.model.params, spatial_dims, (size,) * spatial_dims).items()}
        row["n_params"] = sum(p.numel() for m in nets.values() for p in m.parameters())
        step = make_step(family, cfg, nets, dev, None)
        real = torch.rand(batch_size, 1, *(size,) * spatial_dims, device=dev) * 2 - 1
        for _ in range(warmup):
            step(real)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(iterations):
            step(real)
        _sync(dev)
        sec = (time.perf_counter() - t0) / iterations
        row.update(sec_per_it=round(sec, 4), it_per_sec=round(1 / sec, 3), status="ok")
    except torch.OutOfMemoryError:
        row.update(sec_per_it="", it_per_sec="", status="out of memory")
    row["peak_mem_mb"] = round(_peak_mb(dev), 1)
    return row


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_bench(models: list[str], sizes: list[int], batch_sizes: list[int], spatial_dims: int = 3,
              iterations: int = 5, warmup: int = 2, device: str = "cpu", precision: str = "fp32",
              out: Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Benchmark every (model, size, batch) in its own subprocess; optionally write a CSV."""
    rows = []
    for model in models:
        for size in sizes:
            for bs in batch_sizes:
                args = [sys.executable, "-m", "synthmed.bench", "--one", model, str(size), str(bs), str(spatial_dims),
                        str(iterations), str(warmup), device, precision]
                proc = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    raise SynthmedError(f"benchmark of {model} at {size} batch {bs} failed: {proc.stderr.strip()[-500:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                if progress:
                    print(" ".join(f"{k}={row.get(k)}" for k in COLUMNS), file=sys.stderr)
    if out is not None:
        with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of benchmark rows (for the README)."""
    head = "| model | size | batch | device | precision | s/it | peak memory (MB) | status |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = "x".join([str(r["size"])] * r["spatial_dims"])
        lines.append(f"| {r['model']} | {size} | {r['batch_size']} | {r['device']} | {r['precision']} | "
                     f"{r['sec_per_it']} | {r['peak_mem_mb']} | {r['status']} |")
    return "\n".join(lines)


def _main_one(argv: list[str]) -> None:
    model, size, bs, dims, its, warm, device, precision = argv
    row = bench_one(model, int(size), int(bs), int(dims), int(its), int(warm), device, precision)
    print(json.dumps(row))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--one", nargs=8)
    a = p.parse_args()
    _main_one(a.one)
