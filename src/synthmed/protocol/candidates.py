"""Stages (a)-(c) of the protocol: train the candidate architectures, evaluate them with the
evaluation suite, rank them with statistics between architectures.

A candidate's runs (:func:`train_runs`) are a mapping class name -> run folder: with
``candidates.conditioning: per-class`` one unconditional run per class (``train.label``); with
``none`` one unconditional run on every class under the key :data:`ALL` (paper 000's basic
architectures); the conditional runs of stage (d) (:mod:`synthmed.protocol.conditioning`) give
the same run folder for every class, sampled with each class's label.  :func:`write_pool` and
:func:`class_sources` take all three.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.config import RunConfig
from synthmed.data.prepared import PreparedDataset
from synthmed.errors import SynthmedError
from synthmed.io_utils import atomic_dir, write_json_atomic
from synthmed.protocol.config import Candidate, ProtocolConfig
from synthmed.utility.stats import one_way_anova, pairwise_t_tests, t_interval

log = logging.getLogger(__name__)

FINISHED = ("finished", "stopped_early")
#: the key of an unconditional run on every class in a runs mapping (class names are never empty)
ALL = ""


def run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def ensure_run(cfg: RunConfig, data: Path, run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` unless a finished run of the same requested config is there; continue
    an interrupted one from its last checkpoint.  The requested config's fingerprint is kept in
    ``RUN/protocol_request.json`` (the run's own ``config.yaml`` holds values the training loop
    resolves, e.g. ``model.conditioning: auto``).  Returns ``{"run", "status", "reused"}``."""
    from synthmed.train.loop import train

    plain = cfg.to_dict()
    plain.pop("sample")  # how the run is sampled never changes what is trained
    plain["train"] = {k: v for k, v in plain["train"].items() if k not in ("device", "num_workers")}
    want = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    marker = run_dir / "protocol_request.json"
    if marker.is_file():
        have = json.loads(marker.read_text(encoding="utf-8")).get("config_sha256")
        if have != want:
            raise SynthmedError(f"{run_dir}: holds a run with another config; use another --out or delete that "
                                "run folder to retrain it")
        status = run_status(run_dir)
        if status in FINISHED:
            return {"run": str(run_dir), "status": status, "reused": True}
        if (run_dir / "checkpoints" / "last.pt").is_file():
            train(cfg, data, run_dir, resume=True, progress=progress)
            return {"run": str(run_dir), "status": run_status(run_dir), "reused": False, "resumed": True}
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise SynthmedError(f"{run_dir}: exists but was not written by the protocol; use another --out")
    write_json_atomic(marker, {"config_sha256": want, "config": cfg.to_dict()})
    train(cfg, data, run_dir, progress=progress)
    return {"run": str(run_dir), "status": run_status(run_dir), "reused": False}


def train_per_class(candidate: Candidate, ds: PreparedDataset, runs_dir: Path, progress: bool,
                    seed: int | None = None, extra: dict[str, Any] | None = None,
                    say: Callable[[str], None] = lambda s: None) -> dict[str, str]:
    """One run per class of ``ds`` (``train.label``); class name -> run folder."""
    out = {}
    for c, name in enumerate(ds.classes):
        run_dir = runs_dir / _safe(name)
        say(f"train {candidate.name}, class {name} ({c + 1}/{len(ds.classes)}) -> {run_dir}")
        ensure_run(candidate.run_config(name, seed, extra), ds.root, run_dir, progress)
        out[name] = str(run_dir)
    return out


def train_runs(candidate: Candidate, method: str, ds: PreparedDataset, runs_dir: Path, progress: bool,
               seed: int | None = None, extra: dict[str, Any] | None = None,
               say: Callable[[str], None] = lambda s: None) -> dict[str, str]:
    """The runs of ``candidate`` with conditioning ``method``: ``per-class`` one run per class
    (:func:`train_per_class`); ``none`` one unconditional run on every class (``{ALL: run}``); a
    conditional method one run on every class, given for every class (class name -> the same run
    folder), which the pool writer and the utility protocol sample with each class's label."""
    if method == "per-class":
        return train_per_class(candidate, ds, runs_dir, progress, seed, extra, say)
    run_dir = runs_dir / "run"
    say(f"train {candidate.name}, {'unconditional' if method == 'none' else method} on every class -> {run_dir}")
    ensure_run(candidate.run_config("", seed, extra, conditioning=method), ds.root, run_dir, progress)
    if method == "none":
        return {ALL: str(run_dir)}
    return {name: str(run_dir) for name in ds.classes}


def class_sources(runs: dict[str, str]) -> dict[str, str]:
    """The utility protocol's ``synthetic`` entry (class name -> run folder) of per-class or
    conditional runs (:func:`train_runs`)."""
    if ALL in runs:
        raise SynthmedError("an unconditional model trained on every class cannot give synthetic images of one "
                            "class; use per-class or conditional runs")
    return dict(runs)


def real_rows(ds: PreparedDataset, cfg: ProtocolConfig) -> np.ndarray:
    """The real rows :func:`synthmed.evaluate.runner.evaluate` compares with (same selection)."""
    e = cfg.evaluation
    rows = ds.indices(e.split)
    if e.max_real and len(rows) > e.max_real:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, e.max_real, replace=False))
    return rows


def write_pool(ds: PreparedDataset, runs: dict[str, str], counts: dict[int, int], n_sets: int, out: Path,
               seed: int, device: str, batch_size: int = 8) -> Path:
    """``n_sets`` synthetic sets into one sampled folder (as ``synthmed sample`` writes it): set ``k``
    is rows ``k*N .. (k+1)*N-1``.

    ``runs`` (from :func:`train_runs`): per class, a run trained on that class or a conditional run
    (sampled with the class's label); set ``k`` then holds ``counts[c]`` images of every class
    ``c``, image ``j`` of class ``c`` from seed ``seed + c * 10**6 + k * counts[c] + j``, and the
    manifest is labelled.  ``{ALL: run}`` (an unconditional run on every class): each set holds
    ``sum(counts)`` unlabelled images, image ``j`` of set ``k`` from seed ``seed + k * N + j``.
    Atomic (temporary folder renamed).
    """
    import torch

    from synthmed.generate.sample import generate_batch, load_run
    from synthmed.generate.writers import write_nifti, write_png

    labelled = ALL not in runs
    loaded = {p: load_run(p, device=device) for p in dict.fromkeys(runs.values())}
    plan = [(c, runs[ds.classes[c]], n) for c, n in counts.items()] if labelled else [
        (None, runs[ALL], int(sum(counts.values())))]
    with atomic_dir(out) as tmp:
        rows, is3d = [], ds.spatial_dims == 3
        affine = ds.affine
        for k in range(n_sets):
            for c, path, n in plan:
                run, base = loaded[path], seed + (c or 0) * 10**6
                seeds = [base + k * n + j for j in range(n)]
                for i in range(0, n, batch_size):
                    chunk = seeds[i:i + batch_size]
                    labels = torch.full((len(chunk),), c, dtype=torch.long) if run.conditional else None
                    imgs = generate_batch(run, chunk, labels)
                    for s, img in zip(chunk, imgs, strict=True):
                        name = f"set{k:02d}_c{'all' if c is None else c}_{s - base:06d}" + (
                            ".nii.gz" if is3d else ".png")
                        if is3d:
                            write_nifti(img[0], affine, tmp / name)
                        else:
                            write_png(img[0], tmp / name)
                        row = {"file": name, "seed": s, "set": k, "run": path,
                               "checkpoint_sha256": run.checkpoint_sha256}
                        if c is not None:
                            row = {"file": name, "label": c, "label_name": ds.classes[c], **row}
                        rows.append(row)
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        first = loaded[plan[0][1]]
        by_class = {ds.classes[c]: runs[ds.classes[c]] for c in counts} if labelled else {"all classes": runs[ALL]}
        write_json_atomic(tmp / "sample.json", {
            "model": first.cfg.model.name, "conditioning": first.conditioning["method"] if first.conditional else (
                "per-class" if labelled else "none"),
            "checkpoint_sha256": first.checkpoint_sha256 if len(loaded) == 1 else None, "n": len(rows),
            "n_sets": n_sets, "set_size": int(sum(counts.values())),
            "per_class": {ds.classes[c]: n for c, n in counts.items()} if labelled else None,
            "runs": {k: {"run": p, "checkpoint_sha256": loaded[p].checkpoint_sha256, "step": loaded[p].step}
                     for k, p in by_class.items()},
            "trained_on": ds.meta.get("derived_from", {}).get("path") or str(ds.root.resolve())})
    return out


def evaluate_candidate(ds: PreparedDataset, runs: dict[str, str], counts: dict[int, int], pool: Path, name: str,
                       out: Path, cfg: ProtocolConfig, device: str, progress: bool) -> dict[str, Any]:
    """Sample ``runs`` into the pool of ``evaluation.n_sets`` sets (:func:`write_pool`), then
    :func:`synthmed.evaluate.runner.evaluate` it; the feature metrics (with the per-set values, and per
    class when the sets are labelled) from the report's ``metrics.json``."""
    from synthmed.evaluate.fidelity import FidelityOptions
    from synthmed.evaluate.runner import EvaluateOptions, evaluate

    e = cfg.evaluation
    n_real = int(sum(counts.values()))
    write_pool(ds, runs, counts, e.n_sets, pool, cfg.seed, device, e.batch_size)
    fo = FidelityOptions(extractor=e.extractor, weights=e.weights or None, extractor_iterations=e.extractor_iterations)
    opts = EvaluateOptions(split=e.split, n_sets=e.n_sets, set_size=n_real, max_real=e.max_real or None, fidelity=fo,
                           image_metrics=e.image_metrics, privacy=e.privacy, ssim_queries=e.ssim_queries,
                           embeddings=tuple(e.embeddings), screenshot=False, device=device, seed=cfg.seed,
                           batch_size=e.batch_size, progress=progress)
    html = evaluate(ds.root, pool, out, opts, names=[name])
    results = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["results"]
    src = results["sources"][name]
    out = {"report": str(html), "pool": str(pool), "feature_space": results["feature_space"],
           "feature_metrics": {r["metric"]: r for r in src["feature_metrics"]}, "set_sizes": src["set_sizes"],
           "timing": results.get("timing", {})}
    if "per_class_feature_metrics" in src:  # labelled sets: every metric per class too
        out["per_class_feature_metrics"] = {c: {r["metric"]: r for r in rows}
                                            for c, rows in src["per_class_feature_metrics"].items()}
        out["per_class_skipped"] = src.get("per_class_skipped") or {}
    return out


def rank_candidates(evaluations: dict[str, dict[str, Any]], cfg: ProtocolConfig) -> dict[str, Any]:
    """Ranking by ``ranking.metric`` and, per tested metric, a one-way ANOVA over the per-set values
    between candidates and two-tailed Bonferroni-corrected t-tests between every pair."""
    r = cfg.ranking
    lower = r.lower_is_better()

    def per_set(name: str, metric: str) -> list[float]:
        return [float(v) for v in evaluations[name]["feature_metrics"][metric]["per_set"]]

    names = list(evaluations)
    means = {n: float(np.mean(per_set(n, r.metric))) for n in names}
    order = sorted(names, key=lambda n: (means[n] if lower else -means[n], names.index(n)))
    if r.winner and r.winner not in names:
        raise SynthmedError(f"config key 'ranking.winner': no candidate {r.winner!r}; candidates: {', '.join(names)}")
    winner = r.winner or order[0]
    tests: dict[str, Any] = {}
    for m in dict.fromkeys([r.metric, *r.tested_metrics]):
        groups = {n: per_set(n, m) for n in names}
        anova = one_way_anova(groups)
        tests[m] = {"intervals": {n: t_interval(v).as_dict() for n, v in groups.items()},
                    "anova": {"f": anova.f, "p": anova.p, "df_between": anova.df_between,
                              "df_within": anova.df_within, "groups": list(anova.groups)},
                    "t_tests_bonferroni": [t.__dict__ for t in pairwise_t_tests(groups, r.alpha)]}
    return {"metric": r.metric, "lower_is_better": lower, "order": order, "means": means, "winner": winner,
            "forced": bool(r.winner), "tests": tests}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)) or "class"
