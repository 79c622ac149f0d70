"""``synthmed utility``: paper 000's diagnosis-classifier protocol, resumable, with its report.

:func:`run_utility` (stages, each timed):

1. the real cohort (all subjects, or a stratified subsample) and a seeded stratified k-fold
   partition into 60/20/20 train/validation/test per fold (``partition.json``);
2. the synthetic sources (one run folder or sampled folder per class);
3. for every fold and composition: the training set, the classifier, its real-test metrics; each
   finished (composition, fold) is written atomically to ``folds/COMPOSITION/foldK.json`` with a
   fingerprint of everything it depends on, and skipped on ``resume`` (a crash continues at the
   next unfinished one; a result computed with other settings is an error, never silently reused);
4. statistics over folds (:mod:`synthmed.utility.stats`), AUC_real - AUC_syn and Delta_syn;
5. occlusion maps of fold ``occlusion.fold``'s classifiers (paper 004, S.7);
6. ``per_fold_metrics.csv``, ``summary.csv``, ``tests.csv``, ``training_history.csv``,
   ``report.html`` and ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed import __version__
from synthmed.data.prepared import load_prepared
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.evaluate.runner import Stages, peak_memory_mb
from synthmed.io_utils import write_json_atomic, write_text_atomic
from synthmed.progress import progress as progress_bar
from synthmed.utility.compositions import COMPOSITIONS, make_partition, subsample
from synthmed.utility.config import UtilityConfig, dump_utility_config, load_utility_config
from synthmed.utility.folds import Cohort, run_fold
from synthmed.utility.sources import ClassSource, open_sources

log = logging.getLogger(__name__)


def load_cohort(cfg: UtilityConfig) -> Cohort:
    """The labelled real cohort of ``cfg.data`` and its partition."""
    ds = load_prepared(cfg.data.path)
    labels = ds.labels
    if labels is None:
        raise DataError(f"{ds.root}: the utility protocol needs labels; prepare the data with --label-column")
    keep = np.array(subsample(ds.subject_ids, labels.tolist(), cfg.data.max_subjects, cfg.seed), dtype=np.int64)
    ids = [ds.subject_ids[i] for i in keep]
    if len(set(ids)) != len(ids):
        raise DataError(f"{ds.root}: subject ids are not unique; the partition is by subject")
    names = ds.classes or [str(c) for c in range(int(labels.max()) + 1)]
    partition = make_partition(ids, labels[keep].tolist(), cfg.folds, cfg.seed)
    partition.update(dataset=str(ds.root.resolve()), images_sha256=ds.meta.get("images_sha256"),
                     max_subjects=cfg.data.max_subjects, n_subjects=len(ids))
    images = np.asarray(ds.images[keep], dtype=np.float32)
    return Cohort(ds, keep, images, labels[keep], ids, list(names), partition)


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device': {device!r} requested but CUDA is not available")
    return device


def _settings(cfg: UtilityConfig, cohort: Cohort, sources: dict[int, ClassSource] | None, name: str) -> dict[str, Any]:
    """Everything a (composition, fold) result depends on (its fingerprint's input)."""
    comp = COMPOSITIONS[name]
    full = cfg.to_dict()
    train = {k: v for k, v in full["train"].items() if k not in ("device", "threads")}
    out: dict[str, Any] = {
        "images_sha256": cohort.partition["images_sha256"],
        "partition_sha256": hashlib.sha256(json.dumps(cohort.partition["parts"]).encode()).hexdigest(),
        "classifier": full["classifier"], "train": train, "seed": cfg.seed,
        "synthetic_test": cfg.synthetic_test and comp.synthetic_only,
    }
    if comp.augment:
        out["augment"] = full["augment"]
    if comp.uses_synthetic and sources:
        out["synthetic"] = {cohort.class_names[c]: {"source": s.provenance.get("source"),
                                                    "checkpoint_sha256": s.provenance.get("checkpoint_sha256")}
                            for c, s in sorted(sources.items())}
    return out


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _finished(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record at ``path`` if it was computed with ``settings``; error if with others."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is corrupt; recomputing it", path)
        return None
    if rec.get("fingerprint") != _fingerprint(settings):
        old = rec.get("settings", {})
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise SynthmedError(f"{path} was computed with other settings (differing: {', '.join(diff) or 'unknown'}); "
                            "use another --out, or delete that file to recompute it")
    return rec


def _prepare_out(out: Path, cfg: UtilityConfig, cohort: Cohort, resume: bool) -> None:
    started = (out / "partition.json").is_file() or (out / "folds").is_dir()
    if started and not resume:
        raise SynthmedError(f"{out} already holds a utility run; pass --resume to continue it or choose another --out")
    if not started and out.exists() and any(out.iterdir()) and not resume:
        raise SynthmedError(f"{out} exists and is not empty; choose another --out")
    if started and (out / "partition.json").is_file():
        old = json.loads((out / "partition.json").read_text(encoding="utf-8"))
        if old.get("parts") != cohort.partition["parts"]:
            raise SynthmedError(f"{out / 'partition.json'}: the stored partition differs from this config's "
                                "(other data, seed, folds or max_subjects); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "partition.json", cohort.partition)
    write_text_atomic(out / "config.yaml", dump_utility_config(cfg))


def run_utility(config: UtilityConfig | str | Path, out: str | Path, resume: bool = False, progress: bool = True,
                overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Run the utility protocol; write ``report.html``, ``metrics.json`` and CSVs into ``out``.

    Args:
        config: a :class:`UtilityConfig`, a YAML path or a shipped config name.
        out: output folder.
        resume: continue a run in ``out`` (finished folds are kept, the rest are computed).
        progress: progress bars.
        overrides: ``--set`` overrides (when ``config`` is a path or name).

    Returns:
        The path of ``report.html``.
    """
    from synthmed.utility.report import write_utility_report
    from synthmed.utility.summary import summarize

    cfg = config if isinstance(config, UtilityConfig) else load_utility_config(config, overrides)
    out = Path(out)
    stage = Stages()
    t_start = time.perf_counter()
    device = _resolve_device(cfg.train.device)
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        with stage("real cohort and partition"):
            cohort = load_cohort(cfg)
        with stage("synthetic sources"):
            needs = any(COMPOSITIONS[c].uses_synthetic for c in cfg.compositions)
            sources = open_sources(cfg.synthetic, cohort.ds, device, cfg.train.eval_batch_size, cfg.seed) \
                if needs and cfg.synthetic is not None else None
        _prepare_out(out, cfg, cohort, resume)  # only once every input has been checked
        records = _run_folds(cfg, cohort, sources, out, device, progress, stage)
        with stage("statistics"):
            summary = summarize(records, cfg, cohort)
        with stage("occlusion maps"):
            occlusion = _occlusion(cfg, cohort, out, device) if cfg.occlusion.enabled else None
    finally:
        torch.set_num_threads(threads)
    timing = {"total_s": round(time.perf_counter() - t_start, 2), "peak_memory_mb": round(peak_memory_mb(), 1),
              "stages_s": {k: round(v, 2) for k, v in stage.seconds.items()}}
    results = {"synthmed_version": __version__, "config": cfg.to_dict(), "device": device, "cohort": {
        "dataset": str(cohort.ds.root.resolve()), "n_subjects": len(cohort.ids), "classes": cohort.class_names,
        "class_counts": {n: int(np.sum(cohort.labels == c)) for c, n in enumerate(cohort.class_names)},
        "shape": list(cohort.ds.shape)},
        "sources": {cohort.class_names[c]: {k: v for k, v in s.provenance.items() if k != "train_subject_ids"}
                    for c, s in sorted((sources or {}).items())},
        "records": records, "summary": summary, "occlusion": occlusion, "timing": timing}
    return write_utility_report(results, out)


def _run_folds(cfg: UtilityConfig, cohort: Cohort, sources: dict[int, ClassSource] | None, out: Path, device: str,
               progress: bool, stage: Stages) -> list[dict[str, Any]]:
    from synthmed.utility.classifiers import is_network

    jobs = [(k, c) for k in cfg.folds_to_run() for c in cfg.compositions]
    keep = set(cfg.occlusion.compare) if cfg.occlusion.enabled and is_network(cfg.classifier.name) else set()
    records: list[dict[str, Any]] = []
    bar = progress_bar(jobs, desc="utility", disable=not progress, unit="fold")
    previous = None
    for fold, name in bar:
        bar.set_postfix_str(f"{name} fold {fold}")
        if sources and fold != previous:  # a new fold draws other synthetic images: free the last ones
            for s in sources.values():
                s.clear()
        previous = fold
        settings = _settings(cfg, cohort, sources, name)
        path = out / "folds" / name / f"fold{fold}.json"
        rec = _finished(path, settings)
        model_needed = name in keep and fold == cfg.occlusion.fold
        if rec is not None and (not model_needed or (out / "models" / f"{name}_fold{fold}.pt").is_file()):
            records.append(rec)
            continue
        with stage(f"train and test: {name}"):
            rec = run_fold(cfg, cohort, COMPOSITIONS[name], fold, sources, out, device,
                           progress=progress, keep_model=model_needed)
        rec.update(settings=settings, fingerprint=_fingerprint(settings))
        write_json_atomic(path, rec)
        records.append(rec)
    return records


def _occlusion(cfg: UtilityConfig, cohort: Cohort, out: Path, device: str) -> dict[str, Any] | None:
    """Occlusion maps of the fold's classifiers on its first real test images, balanced over classes."""
    from synthmed.utility.classifiers import build_classifier, is_network
    from synthmed.utility.figures import occlusion_figure
    from synthmed.utility.occlusion import map_correlation, occlusion_importance

    o = cfg.occlusion
    names = [c for c in o.compare if c in cfg.compositions and (out / "models" / f"{c}_fold{o.fold}.pt").is_file()]
    if not is_network(cfg.classifier.name) or len(names) < 2:
        return {"skipped": "needs a network classifier and at least two of occlusion.compare among the "
                           f"compositions run in fold {o.fold} (have {names})"}
    test = cohort.fold_rows(o.fold)["test"]
    by_class = [test[cohort.labels[test] == c] for c in range(cohort.n_classes)]
    pick = [int(r) for group in zip(*by_class, strict=False) for r in group][: o.n_images]
    images, labels = cohort.images[pick], cohort.labels[pick]
    maps = {}
    for name in names:
        model = build_classifier(cfg.classifier.name, cohort.ds.spatial_dims, cohort.ds.shape, cohort.n_classes,
                                 cfg.classifier.params)
        model.load_state_dict(torch.load(out / "models" / f"{name}_fold{o.fold}.pt", map_location="cpu",
                                         weights_only=True))
        maps[name] = occlusion_importance(model.to(device), images, labels, cohort.n_classes, o.mask_size,
                                          o.overlap, o.fill, o.n_batch, device)
    ref = names[0]
    corr = {n: [map_correlation(maps[ref][i], maps[n][i]) for i in range(len(pick))] for n in names[1:]}
    titles = [f"{cohort.ids[i]} ({cohort.class_names[int(cohort.labels[i])]})" for i in pick]
    fig = occlusion_figure(images, maps, out / "figures" / "occlusion.png", titles)
    return {"fold": o.fold, "subjects": [cohort.ids[i] for i in pick], "compositions": names, "reference": ref,
            "correlation_with_reference": corr, "figure": str(fig), "mask_size": o.mask_size, "overlap": o.overlap}
