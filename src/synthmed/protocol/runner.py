"""``synthmed protocol``: the whole pipeline from one config, resumable, with one report.

Stages (each timed, each result written atomically to ``OUT/stages/NAME.json`` together with a
fingerprint of everything it depends on; ``--resume`` skips finished ones and refuses results that
were computed with other settings):

(a) ``candidates``: every candidate architecture (each run config with and without DiffAugment),
    one unconditional run on every class (``candidates.conditioning: none``,
    ``OUT/candidates/NAME/run``) or one run per class (``per-class``, ``OUT/candidates/NAME/CLASS``);
    an interrupted run continues from its last checkpoint;
(b) ``evaluation``: per candidate ``evaluation.n_sets`` synthetic sets the size of the real set
    (``OUT/pools/NAME``) and ``synthmed evaluate`` (``OUT/evaluation/NAME/report.html``);
(c) ranking: the winner by ``ranking.metric``, one-way ANOVA over the per-set scores between
    candidates and Bonferroni-corrected pairwise t-tests (``OUT/ranking.csv``);
(d) ``conditioning``: the winner extended with every method of ``conditioning.methods`` (paper 000:
    one GAN per class, frozen auxiliary classifier, projection discriminator), each evaluated per
    class and ranked (:mod:`synthmed.protocol.conditioning`; ``OUT/conditioning``,
    ``OUT/conditioning.csv``);
(e) ``utility``: ``synthmed utility`` with the best conditioning method's runs as synthetic sources
    (``OUT/utility``);
(f) ``sweeps``: paper 004's benchmark sweeps with the winner and that method (``OUT/sweeps``,
    :mod:`synthmed.protocol.sweeps`);
(g) ``OUT/report.html`` and ``OUT/metrics.json`` with every stage, plus CSVs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.data.prepared import PreparedDataset, load_prepared
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.evaluate.runner import Stages, peak_memory_mb
from synthmed.io_utils import write_json_atomic, write_text_atomic
from synthmed.protocol.config import (
    Candidate,
    ProtocolConfig,
    dump_protocol_config,
    load_protocol_config,
    resolve_candidates,
    utility_mapping,
)

log = logging.getLogger(__name__)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StageStore:
    """Finished stage results under ``OUT/stages``, each with the fingerprint of its inputs."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "stages"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str, settings: Any) -> dict[str, Any] | None:
        p = self.path(name)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("%s is corrupt; recomputing it", p)
            return None
        if rec.get("fingerprint") != fingerprint(settings):
            raise SynthmedError(f"{p} was computed with other settings; use another --out, or delete that file "
                                "(and the folders of that stage) to recompute it")
        return rec["result"]

    def put(self, name: str, settings: Any, result: dict[str, Any]) -> dict[str, Any]:
        write_json_atomic(self.path(name), {"fingerprint": fingerprint(settings), "settings": settings,
                                            "result": result})
        return result


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device': {device!r} requested but CUDA is not available")
    return device


def _data(cfg: ProtocolConfig, out: Path) -> PreparedDataset:
    """The protocol's real cohort: the prepared data, or its resampled / subsampled copy in ``OUT/data``."""
    from synthmed.protocol.data import is_complete, write_derived
    from synthmed.utility.compositions import subsample

    ds = load_prepared(cfg.data.path)
    if ds.labels is None:
        raise DataError(f"{ds.root}: the protocol needs labels; prepare the data with --label-column")
    if len(set(ds.labels.tolist())) < 2:
        raise DataError(f"{ds.root}: the protocol needs at least two classes")
    if not cfg.data.resolution and not cfg.data.max_subjects:
        return ds
    target = out / "data"
    if is_complete(target):
        have = load_prepared(target)
        src = have.meta.get("derived_from", {})
        if src.get("images_sha256") == ds.meta.get("images_sha256") and src.get("note") == _data_note(cfg):
            return have
        raise SynthmedError(f"{target}: derived from other data or settings; use another --out")
    rows = subsample(ds.subject_ids, ds.labels.tolist(), cfg.data.max_subjects, cfg.seed)
    size = cfg.data.resolution if cfg.data.resolution and cfg.data.resolution != ds.shape[0] else 0
    splits = None
    if cfg.data.max_subjects:
        from synthmed.data.splits import make_splits

        ids = [ds.subject_ids[i] for i in rows]
        splits = make_splits(ids, ds.labels[rows].tolist(), n_folds=5, test_fraction=0.2, seed=cfg.seed)
    return write_derived(ds, np.asarray(rows), target, size=size, splits=splits, note=_data_note(cfg))


def _data_note(cfg: ProtocolConfig) -> str:
    return f"resolution {cfg.data.resolution}, max_subjects {cfg.data.max_subjects}, seed {cfg.seed}"


def _prepare_out(out: Path, cfg: ProtocolConfig, resume: bool) -> None:
    started = (out / "protocol.json").is_file()
    if started and not resume:
        raise SynthmedError(f"{out} already holds a protocol run; pass --resume to continue it or choose another --out")
    if not started and out.exists() and any(out.iterdir()):
        raise SynthmedError(f"{out} exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", dump_protocol_config(cfg))
    prev = json.loads((out / "protocol.json").read_text(encoding="utf-8")) if started else {}
    write_json_atomic(out / "protocol.json", {"synthmed_version": __version__, "command": sys.argv,
                                              "started": prev.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
                                              "resumed": [*prev.get("resumed", []),
                                                          time.strftime("%Y-%m-%dT%H:%M:%S")] if started else []})


def run_protocol(config: ProtocolConfig | str | Path, out: str | Path, resume: bool = False, progress: bool = True,
                 overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Run the whole protocol; write ``report.html``, ``metrics.json`` and CSVs into ``out``.

    Args:
        config: a :class:`ProtocolConfig`, a YAML path or a shipped config name.
        out: output folder (must be new or empty unless ``resume``).
        resume: continue a run in ``out``: finished stages, runs and folds are kept.
        progress: progress bars and one line per step on stderr.
        overrides: ``--set`` overrides (when ``config`` is a path or name).

    Returns:
        The path of ``report.html``.
    """
    import torch

    from synthmed.protocol.report import write_protocol_report

    cfg = config if isinstance(config, ProtocolConfig) else load_protocol_config(config, overrides)
    out = Path(out)
    say = _sayer(progress)
    device = _resolve_device(cfg.device)
    candidates = resolve_candidates(cfg)  # every run config checked before anything is written
    if cfg.conditioning_active():
        _check_methods(cfg, candidates)
    if not Path(cfg.data.path).is_dir():
        raise DataError(f"{cfg.data.path} (data.path): prepared dataset folder does not exist")
    _precheck(cfg)  # a clear error on bad data or sweep values before anything is written
    _prepare_out(out, cfg, resume)
    store = StageStore(out)
    stage = Stages()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"synthmed_version": __version__, "config": cfg.to_dict(), "device": device,
                               "torch_threads": torch.get_num_threads()}
    with stage("data"):
        ds = _data(cfg, out)
    from synthmed.protocol.data import dataset_summary

    results["data"] = dataset_summary(ds)
    base = {"data": results["data"]["images_sha256"], "classes": ds.classes}

    with stage("(a) candidates"):
        results["candidates"] = _stage_candidates(cfg, candidates, ds, out, store, base, progress, say)
    with stage("(b) evaluation"):
        results["evaluation"] = _stage_evaluation(cfg, candidates, ds, out, store, base, results["candidates"],
                                                  device, progress, say)
    from synthmed.protocol.candidates import rank_candidates

    with stage("(c) ranking"):
        ranking = rank_candidates(results["evaluation"], cfg)
        results["ranking"] = ranking
        say(f"winner: {ranking['winner']} ({cfg.ranking.metric} {ranking['means'][ranking['winner']]:.4g})")
    winner = next(c for c in candidates if c.name == ranking["winner"])
    runs, method = results["candidates"][winner.name]["runs"], cfg.candidates.conditioning
    if cfg.conditioning_active():
        with stage("(d) conditioning"):
            results["conditioning"] = _stage_conditioning(cfg, winner, ds, out, store, base, results["candidates"],
                                                          device, progress, say)
        method = results["conditioning"]["ranking"]["winner"]
        runs = results["conditioning"]["methods"][method]["runs"]
        say(f"conditioning: {method} ({cfg.ranking.metric} per class "
            f"{results['conditioning']['ranking']['means'][method]:.4g})")
    results["selected"] = {"candidate": winner.name, "conditioning": method}
    if "utility" in cfg.stages:
        with stage("(e) utility"):
            results["utility"] = _stage_utility(cfg, winner, method, runs, ds, out, store, base, device, progress,
                                                say)
    if "sweeps" in cfg.stages and cfg.sweeps.enabled and cfg.sweeps.dimensions():
        with stage("(f) sweeps"):
            results["sweeps"] = _stage_sweeps(cfg, winner, method, ds, out, store, base, device, progress, say)
    results["timing"] = {"total_s": round(time.perf_counter() - t0, 2), "peak_memory_mb": round(peak_memory_mb(), 1),
                         "stages_s": {k: round(v, 2) for k, v in stage.seconds.items()}}
    say("writing the report")
    html = write_protocol_report(results, out)
    say(f"done: {html}")
    return html


def _run_settings(cand: Candidate) -> dict[str, Any]:
    """A candidate's run config without what does not change results (the device)."""
    d = cand.cfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("device", "num_workers")}
    return d


def _sayer(progress: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if progress:
            print(f"[protocol {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
        log.info("protocol: %s", text)

    return say


def _stage_candidates(cfg: ProtocolConfig, candidates: list[Candidate], ds: PreparedDataset, out: Path,
                      store: StageStore, base: dict[str, Any], progress: bool,
                      say: Callable[[str], None]) -> dict[str, Any]:
    from synthmed.protocol.candidates import train_runs

    res: dict[str, Any] = {}
    for i, cand in enumerate(candidates):
        settings = {**base, "candidate": cand.name, "run_config": _run_settings(cand),
                    "conditioning": cfg.candidates.conditioning}
        name = f"candidate-{cand.name}"
        done = store.get(name, settings)
        if done is not None:
            say(f"(a) candidate {cand.name}: finished earlier, skipped")
            res[cand.name] = done
            continue
        say(f"(a) candidate {i + 1}/{len(candidates)}: {cand.name}")
        t = time.perf_counter()
        runs = train_runs(cand, cfg.candidates.conditioning, ds, out / "candidates" / cand.name, progress,
                          say=lambda s: say(f"(a) {s}"))
        res[cand.name] = store.put(name, settings, {
            "model": cand.cfg.model.name, "config": cand.source, "diffaugment": cand.diffaugment,
            "conditioning": cfg.candidates.conditioning, "runs": runs, "iterations": cand.cfg.train.iterations,
            "seconds": round(time.perf_counter() - t, 1)})
    return res


def _stage_evaluation(cfg: ProtocolConfig, candidates: list[Candidate], ds: PreparedDataset, out: Path,
                      store: StageStore, base: dict[str, Any], trained: dict[str, Any], device: str, progress: bool,
                      say: Callable[[str], None]) -> dict[str, Any]:
    from synthmed.protocol.candidates import evaluate_candidate

    rows, counts = _real_counts(ds, cfg)
    res: dict[str, Any] = {}
    for i, cand in enumerate(candidates):
        runs = trained[cand.name]["runs"]
        ckpts = _checkpoints(runs)
        settings = {**base, "candidate": cand.name, "checkpoints": ckpts, "evaluation": cfg.to_dict()["evaluation"],
                    "seed": cfg.seed}
        name = f"evaluation-{cand.name}"
        done = store.get(name, settings)
        if done is not None:
            say(f"(b) evaluation of {cand.name}: finished earlier, skipped")
            res[cand.name] = done
            continue
        t = time.perf_counter()
        pool = out / "pools" / cand.name
        say(f"(b) candidate {i + 1}/{len(candidates)} {cand.name}: {cfg.evaluation.n_sets} synthetic sets of "
            f"{len(rows)} ({_mix(ds, counts, runs)}) -> {pool}")
        ev = evaluate_candidate(ds, runs, counts, pool, cand.name, out / "evaluation" / cand.name, cfg, device,
                                progress)
        ev.update(per_class=counts and {ds.classes[c]: n for c, n in counts.items()},
                  seconds=round(time.perf_counter() - t, 1))
        res[cand.name] = store.put(name, settings, ev)
    return res


def _real_counts(ds: PreparedDataset, cfg: ProtocolConfig) -> tuple[np.ndarray, dict[int, int]]:
    """The real rows the evaluations compare with, and how many of every class they hold."""
    from synthmed.protocol.candidates import real_rows

    assert ds.labels is not None
    rows = real_rows(ds, cfg)
    counts = {c: int(np.sum(ds.labels[rows] == c)) for c in range(len(ds.classes))}
    return rows, {c: n for c, n in counts.items() if n}


def _checkpoints(runs: dict[str, str]) -> dict[str, str]:
    from synthmed.io_utils import sha256_file

    sums = {v: sha256_file(Path(v) / "checkpoints" / "last.pt") for v in set(runs.values())}
    return {k: sums[v] for k, v in runs.items()}


def _mix(ds: PreparedDataset, counts: dict[int, int], runs: dict[str, str]) -> str:
    from synthmed.protocol.candidates import ALL

    if ALL in runs:
        return "unlabelled, one model for every class"
    return ", ".join(f"{ds.classes[c]} {n}" for c, n in counts.items())


def _stage_conditioning(cfg: ProtocolConfig, winner: Candidate, ds: PreparedDataset, out: Path, store: StageStore,
                        base: dict[str, Any], trained: dict[str, Any], device: str, progress: bool,
                        say: Callable[[str], None]) -> dict[str, Any]:
    """Stage (d): the winner with every conditioning method, evaluated per class, ranked."""
    from synthmed.protocol.candidates import evaluate_candidate, train_runs
    from synthmed.protocol.conditioning import rank_methods

    k = cfg.conditioning
    rows, counts = _real_counts(ds, cfg)
    methods: dict[str, Any] = {}
    for i, method in enumerate(k.methods):
        reuse = method == "per-class" and cfg.candidates.conditioning == "per-class"
        extra = k.set if method != "per-class" else {}
        settings = {**base, "winner": winner.name, "run_config": _run_settings(winner), "method": method,
                    "set": extra, "evaluation": cfg.to_dict()["evaluation"], "seed": cfg.seed,
                    "reused_candidate_runs": reuse}
        name = f"conditioning-{method}"
        done = store.get(name, settings)
        if done is not None:
            say(f"(d) conditioning {method}: finished earlier, skipped")
            methods[method] = done
            continue
        t = time.perf_counter()
        if reuse:
            runs = trained[winner.name]["runs"]
            say(f"(d) conditioning {i + 1}/{len(k.methods)} {method}: the winner's per-class candidate runs")
        else:
            say(f"(d) conditioning {i + 1}/{len(k.methods)}: {winner.name} with {method}")
            runs = train_runs(winner, method, ds, out / "conditioning" / method, progress, extra=extra,
                              say=lambda s: say(f"(d) {s}"))
        t_train = time.perf_counter() - t
        pool = out / "conditioning" / "pools" / method
        say(f"(d) {method}: {cfg.evaluation.n_sets} labelled synthetic sets of {len(rows)} "
            f"({_mix(ds, counts, runs)}) -> {pool}, then evaluated")
        ev = evaluate_candidate(ds, runs, counts, pool, method, out / "conditioning" / "evaluation" / method, cfg,
                                device, progress)
        ev.update(runs=runs, reused_candidate_runs=reuse, checkpoints=_checkpoints(runs),
                  train_seconds=round(t_train, 1), seconds=round(time.perf_counter() - t, 1))
        methods[method] = store.put(name, settings, ev)
    ranking = rank_methods(methods, cfg)
    return {"candidate": winner.name, "methods": methods, "ranking": ranking}


def _stage_utility(cfg: ProtocolConfig, winner: Candidate, method: str, runs: dict[str, str], ds: PreparedDataset,
                   out: Path, store: StageStore, base: dict[str, Any], device: str, progress: bool,
                   say: Callable[[str], None]) -> dict[str, Any]:
    from synthmed.protocol.candidates import class_sources
    from synthmed.utility import build_utility_config, run_utility

    synthetic = class_sources(runs)
    ucfg = build_utility_config(utility_mapping(cfg, synthetic, str(ds.root)))
    if ucfg.train.device == "auto":
        ucfg.train.device = device
    settings = {**base, "winner": winner.name, "conditioning": method, "checkpoints": _checkpoints(runs),
                "utility": ucfg.to_dict()}
    done = store.get("utility", settings)
    if done is not None:
        say("(e) utility: finished earlier, skipped")
        return done
    target = out / "utility"
    say(f"(e) utility with {winner.name} ({method}): {', '.join(ucfg.compositions)}, folds "
        f"{ucfg.folds_to_run()} -> {target}")
    t = time.perf_counter()
    run_utility(ucfg, target, resume=target.exists(), progress=progress)
    results = json.loads((target / "metrics.json").read_text(encoding="utf-8"))["results"]
    return store.put("utility", settings, {"report": str(target / "report.html"), "winner": winner.name,
                                           "conditioning": method, "results": results, "seconds": round(time.perf_counter() - t, 1)})


def _stage_sweeps(cfg: ProtocolConfig, winner: Candidate, method: str, ds: PreparedDataset, out: Path,
                  store: StageStore, base: dict[str, Any], device: str, progress: bool,
                  say: Callable[[str], None]) -> dict[str, Any]:
    from synthmed.protocol.sweeps import run_point, summarize_sweeps

    s = cfg.sweeps
    jobs = [(sweep, v, seed) for sweep, values in s.dimensions().items() for v in values for seed in s.seeds]
    points = []
    sweep_cfg = {k: v for k, v in cfg.to_dict()["sweeps"].items() if k not in ("enabled", "alpha")}
    for i, (sweep, value, seed) in enumerate(jobs):
        settings = {**base, "winner": winner.name, "run_config": _run_settings(winner), "conditioning": method,
                    "conditioning_set": cfg.conditioning.set if method not in ("per-class", "none") else {},
                    "sweeps": sweep_cfg, "utility": cfg.utility, "point": [sweep, value, seed]}
        name = f"sweep-{sweep}-{value}-seed{seed}"
        done = store.get(name, settings)
        if done is not None:
            say(f"(f) sweep point {i + 1}/{len(jobs)} {sweep}={value} seed {seed}: finished earlier, skipped")
            points.append(done)
            continue
        say(f"(f) sweep point {i + 1}/{len(jobs)}: {sweep}={value}, seed {seed}")
        t = time.perf_counter()
        point = run_point(ds, winner, method, cfg, sweep, value, seed,
                          out / "sweeps" / sweep / str(value) / f"seed{seed}", device, progress,
                          lambda m: say(f"(f) {m}"))
        point["seconds"] = round(time.perf_counter() - t, 1)
        points.append(store.put(name, settings, point))
    return {"points": points, "summary": summarize_sweeps(points, cfg)}


def _check_methods(cfg: ProtocolConfig, candidates: list[Candidate]) -> None:
    """Every candidate (any may win) supports every conditioning method (checked before anything is
    written)."""
    from synthmed.config import RunConfig
    from synthmed.registry import MODELS

    for cand in candidates:
        for m in cfg.conditioning.methods:
            try:
                rc: RunConfig = cand.run_config("", extra=cfg.conditioning.set,
                                                conditioning=m) if m != "per-class" else cand.cfg
                family = MODELS.get(rc.model.name)()
                if m != "per-class" and hasattr(family, "conditioning"):
                    family.conditioning(rc.model)
                elif m != "per-class":
                    raise ConfigError(f"model {rc.model.name} has no class conditioning")
            except ConfigError as e:
                raise ConfigError(f"config key 'conditioning.methods': candidate {cand.name} cannot be trained with "
                                  f"{m!r}: {e}; remove the method or the candidate") from None


def _precheck(cfg: ProtocolConfig) -> None:
    """The data exist with labels, and the sweeps fit them (checked before anything is written)."""
    from synthmed.utility.compositions import subsample

    ds = load_prepared(cfg.data.path)
    if ds.labels is None:
        raise DataError(f"{ds.root}: the protocol needs labels; prepare the data with --label-column")
    if "sweeps" in cfg.stages and cfg.sweeps.enabled and cfg.sweeps.dimensions():
        rows = subsample(ds.subject_ids, ds.labels.tolist(), cfg.data.max_subjects, cfg.seed)
        _check_sweeps(ds.labels[rows], ds.spatial_dims, cfg.data.resolution or ds.shape[0], ds.root, cfg)


def _check_sweeps(labels: np.ndarray, spatial_dims: int, edge: int, root: Path, cfg: ProtocolConfig) -> None:
    """Sweep values the data can hold."""
    s = cfg.sweeps
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if s.classes and max(s.classes) > len(counts):
        raise ConfigError(f"config key 'sweeps.classes': {max(s.classes)} classes asked for, {root} has "
                          f"{len(counts)}")
    if s.classes and min(s.classes) < 2:
        raise ConfigError("config key 'sweeps.classes': need at least 2 classes per point")
    need = max([*s.samples_per_class, s.base_samples_per_class])
    if need > counts.min():
        raise ConfigError(f"config key 'sweeps.samples_per_class'/'base_samples_per_class': {need} subjects per class "
                          f"asked for, the smallest class of {root} has {counts.min()}")
    from synthmed.utility import build_utility_config
    from synthmed.utility.classifiers import build_classifier

    ucfg = build_utility_config(utility_mapping(cfg, {"_": "_"}, str(root), sweep=True))
    for r in sorted({*s.resolution, s.base_resolution or edge}):
        try:
            build_classifier(ucfg.classifier.name, spatial_dims, (r,) * spatial_dims, 2, ucfg.classifier.params)
        except ConfigError as e:
            key = "sweeps.resolution" if r in s.resolution else "sweeps.base_resolution"
            raise ConfigError(f"config key '{key}': {r}: {e}") from None
    least = min([*s.samples_per_class, s.base_samples_per_class or int(counts.min())])
    if least < s.folds:
        raise ConfigError(f"config key 'sweeps.samples_per_class': {least} subjects per class is fewer than the "
                          f"{s.folds} folds (sweeps.folds) of every point")
