"""``synthmed bench``: seconds per training iteration and peak memory per model, size and batch.

Each configuration runs in a fresh subprocess so its peak memory is its own: peak resident set
size on CPU (``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on a GPU.  Iterations are full
training iterations of the family's ``Step`` (all networks, all updates) on random data in
[-1, 1], after warm-up iterations that are not timed.  A configuration that runs out of memory is
reported with status ``out of memory`` (a process killed by the operating system as ``killed``).

Models are shipped config names or registered family names (paper defaults); by default every
registered family that supports the requested dimensionality.  With ``precision`` other than fp32,
``channels_last`` or ``compile``, every configuration is first measured in fp32 eager mode and then
with the optimisations added one at a time (precision, then channels-last, then ``torch.compile``),
each row with its speed-up and memory ratio against fp32 eager of the same model measured in the
same run.
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

COLUMNS = ["model", "spatial_dims", "size", "batch_size", "device", "precision", "channels_last", "compile",
           "sec_per_it", "it_per_sec", "peak_mem_mb", "n_params", "status", "speedup_vs_fp32_eager",
           "memory_vs_fp32_eager"]


def _bench_config(model: str, overrides: list[str]) -> Any:
    """The shipped config called ``model``, else the registered family ``model`` with its defaults."""
    from synthmed.config import CONFIG_DIR, build_config

    if (CONFIG_DIR / f"{model}.yaml").is_file():
        return load_config(model, overrides)
    return build_config({"model": {"name": model}}, overrides)


def benchmark_models(spatial_dims: int = 3) -> list[str]:
    """Every registered model family that supports ``spatial_dims``."""
    from synthmed.models.base import get_family
    from synthmed.registry import MODELS

    get_family("sngan")  # fills the registry
    return [name for name, cls in MODELS.items() if spatial_dims in cls.spatial_dims]


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _compile_nets(nets: dict[str, torch.nn.Module]) -> None:
    """``torch.compile`` in place (state_dict keys unchanged); networks whose forward takes Python-level
    arguments that change every iteration (HA-GAN's sub-volume) compile their parts instead."""
    for m in nets.values():
        parts = getattr(m, "compile_parts", None)
        if callable(parts):
            parts()
        else:
            m.compile()


def bench_one(model: str, size: int, batch_size: int, spatial_dims: int = 3, iterations: int = 5,
              warmup: int = 2, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
              channels_last: bool = False, compile: bool = False) -> dict[str, Any]:
    """Time ``iterations`` training iterations of ``model`` (the shipped config's paper defaults).

    Args:
        channels_last: networks and data in ``channels_last`` (2D) / ``channels_last_3d`` memory format.
        compile: ``torch.compile`` the networks (the warm-up iterations include the compilation).
    """
    from synthmed.models.base import get_family
    from synthmed.train.steps import make_step

    if threads:
        torch.set_num_threads(threads)
    cfg = _bench_config(model, [f"train.precision={precision}", f"train.batch_size={batch_size}"])
    dev = torch.device(device)
    family = get_family(cfg.model.name)
    row: dict[str, Any] = {"model": model, "spatial_dims": spatial_dims, "size": size, "batch_size": batch_size,
                           "device": device, "precision": precision, "channels_last": channels_last,
                           "compile": compile}
    fmt = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    torch.manual_seed(0)
    try:
        nets = {k: m.to(dev) for k, m in family.build(cfg.model.params, spatial_dims, (size,) * spatial_dims).items()}
        row["n_params"] = sum(p.numel() for m in nets.values() for p in m.parameters())
        if channels_last:
            nets = {k: m.to(memory_format=fmt) for k, m in nets.items()}
        if compile:
            _compile_nets(nets)
        step = make_step(family, cfg, nets, dev, None)
        real = torch.rand(batch_size, 1, *(size,) * spatial_dims, device=dev) * 2 - 1
        if channels_last:
            real = real.contiguous(memory_format=fmt)
        prepare = getattr(step, "prepare", None)
        if callable(prepare):  # e.g. the DFC-VAE's in-domain feature network; not timed
            prepare(real.detach().float().cpu().contiguous())
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(warmup):
            step(real)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(iterations):
            step(real)
        _sync(dev)
        sec = (time.perf_counter() - t0) / iterations
        row.update(sec_per_it=round(sec, 4), it_per_sec=round(1 / sec, 3), status="ok")
    except Exception as e:  # noqa: BLE001 - one failed configuration must not end the whole benchmark
        status = "out of memory" if _is_oom(e) else f"error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        row.update(sec_per_it="", it_per_sec="", status=status)
    row["peak_mem_mb"] = round(_peak_mb(dev), 1)
    return row


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _variants(precision: str, channels_last: bool, compile: bool) -> list[tuple[str, bool, bool]]:
    """fp32 eager first, then the requested optimisations added one at a time."""
    out = [("fp32", False, False)]
    if precision != "fp32":
        out.append((precision, False, False))
    if channels_last:
        out.append((precision, True, False))
    if compile:
        out.append((precision, channels_last, True))
    return out


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """``bench_one(**spec)`` in a fresh process; a process killed by the OS counts as out of memory."""
    proc = subprocess.run([sys.executable, "-m", "synthmed.bench", "--one", json.dumps(spec)], capture_output=True,
                          text=True, env=os.environ.copy())
    if proc.returncode in (-9, 137):
        keys = ("model", "spatial_dims", "size", "batch_size", "device", "precision", "channels_last", "compile")
        return {**{k: spec[k] for k in keys}, "sec_per_it": "", "it_per_sec": "", "peak_mem_mb": "",
                "status": "killed (out of memory?)"}
    if proc.returncode != 0:
        raise SynthmedError(f"benchmark of {spec['model']} at {spec['size']} batch {spec['batch_size']} failed: "
                            f"{proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(models: list[str] | None, sizes: list[int], batch_sizes: list[int], spatial_dims: int = 3,
              iterations: int = 5, warmup: int = 2, device: str = "cpu", precision: str = "fp32",
              out: Path | None = None, progress: bool = True, channels_last: bool = False,
              compile: bool = False) -> list[dict[str, Any]]:
    """Benchmark every (model, size, batch[, optimisation]) in its own subprocess; optionally write a CSV.

    Args:
        models: shipped config or family names; None: every registered family for ``spatial_dims``.
        precision: ``fp32``, ``bf16`` or ``fp16``; other than fp32 is measured against fp32 eager (see the
            module doc).
        channels_last: also measure the channels-last memory format.
        compile: also measure ``torch.compile``.
    """
    for model in models or []:
        _bench_config(model, [])  # an unknown name: one line naming it and the choices, before any child runs
    rows = []
    for model in models or benchmark_models(spatial_dims):
        for size in sizes:
            for bs in batch_sizes:
                base: dict[str, Any] | None = None
                for prec, cl, comp in _variants(precision, channels_last, compile):
                    row = _run_child({"model": model, "size": size, "batch_size": bs, "spatial_dims": spatial_dims,
                                      "iterations": iterations, "warmup": warmup, "device": device,
                                      "precision": prec, "channels_last": cl, "compile": comp})
                    base = base or row
                    _add_ratios(row, base)
                    rows.append(row)
                    if progress:
                        print(" ".join(f"{k}={row.get(k)}" for k in COLUMNS), file=sys.stderr)
    if out is not None:
        with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return rows


def _add_ratios(row: dict[str, Any], base: dict[str, Any]) -> None:
    """Speed-up (fp32 eager s/it over this row's) and memory ratio (this row's peak over fp32 eager's)."""
    ok = row.get("status") == "ok" and base.get("status") == "ok"
    row["speedup_vs_fp32_eager"] = round(base["sec_per_it"] / row["sec_per_it"], 2) if ok else ""
    mem_ok = ok and base.get("peak_mem_mb")
    row["memory_vs_fp32_eager"] = round(row["peak_mem_mb"] / base["peak_mem_mb"], 2) if mem_ok else ""


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of benchmark rows (for the README)."""
    head = ("| model | size | batch | device | mode | s/it | it/s | peak memory (MB) | parameters | status "
            "| speed-up vs fp32 eager | memory vs fp32 eager |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = "x".join([str(r["size"])] * r["spatial_dims"])
        mode = "+".join([r["precision"]] + (["channels_last"] if r.get("channels_last") else [])
                        + (["compile"] if r.get("compile") else []))
        params = f"{r['n_params'] / 1e6:.1f} M" if r.get("n_params") else ""
        lines.append(f"| {r['model']} | {size} | {r['batch_size']} | {r['device']} | {mode} | {r['sec_per_it']} | "
                     f"{r.get('it_per_sec', '')} | {r['peak_mem_mb']} | {params} | {r['status']} | "
                     f"{r.get('speedup_vs_fp32_eager', '')} | {r.get('memory_vs_fp32_eager', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True, help="JSON keyword arguments of bench_one")
    print(json.dumps(bench_one(**json.loads(p.parse_args().one))))
