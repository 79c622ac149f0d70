"""The generic training loop: data stream, step, logs, previews, checkpoints, resume, DDP.

``train(cfg, data_dir, out_dir)`` is what ``synthmed train CONFIG --data D --out RUN`` calls.
The family-specific work happens in the ``Step`` (``steps.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthmed.augment  # noqa: F401  (fills AUGMENTS)
from synthmed import __version__
from synthmed.augment.ada import AdaptiveAugment
from synthmed.config import (
    AugmentConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    dump_config,
    make_augment,
    read_yaml,
)
from synthmed.data.prepared import PreparedDataset, load_prepared
from synthmed.errors import CheckpointError, ConfigError, DataError, SynthmedError, TrainingDiverged
from synthmed.io_utils import (
    describe_os_error,
    folder_lock,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from synthmed.models.base import ModelFamily, get_family
from synthmed.progress import progress as progress_bar
from synthmed.train import distributed as D
from synthmed.train.checkpoint import (
    RunFolder,
    check_compatible,
    load_checkpoint,
    load_nets,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify_checkpoint,
)
from synthmed.train.ema import EMA_KEY, GeneratorEMA, with_ema
from synthmed.train.guards import Guards, diversity_ratio
from synthmed.train.logger import MetricsLogger
from synthmed.train.sampler import IndexStream
from synthmed.train.steps import Step, make_step

log = logging.getLogger(__name__)

PREVIEW_SEED = 20_000

#: config keys that may differ on ``--resume``: they say how long to train and what to log, not how
#: (the optimiser, data, model and augmentation settings are in the checkpoint's state and would be
#: silently overridden by it, or would make the resumed run a different run)
RESUME_SAFE_KEYS = (
    "train.iterations", "train.log_every", "train.sample_every", "train.checkpoint_every", "train.n_preview",
    "train.device", "train.num_workers", "train.divergence_threshold", "train.guard_patience",
    "train.fid_patience", "train.fid_min_iterations", "sample.truncation", "sample.prior", "sample.prior_components",
)
#: the subfolders of a run folder that training writes into (cleaned of stale temporaries on start)
RUN_SUBFOLDERS = ("checkpoints", "samples", "logs")


@dataclass
class Session:
    """Everything one training process holds."""

    cfg: RunConfig
    family: ModelFamily
    data: PreparedDataset
    images: torch.Tensor
    nets: dict[str, torch.nn.Module]
    step: Step
    stream: IndexStream
    run: RunFolder
    info: D.DistInfo
    device: torch.device
    rows: np.ndarray
    fid: Any = None  # FIDMonitor on rank 0 when train.fid_every > 0
    #: labels of the training rows: (N,) int64 class indices, (N, K) 0/1 (multi-label), or None
    labels: torch.Tensor | None = None
    #: what the run's conditioning is (``run.json``, ``data.json``, checkpoint); None for unconditional families
    conditioning: dict[str, Any] | None = None
    #: the generator's weight average (``train.ema_kimg > 0``); its module is also ``nets["G_ema"]``
    ema: GeneratorEMA | None = None
    #: the adaptive augmentation controller (``augment.ada_target > 0``)
    ada: AdaptiveAugment | None = None
    guards: Guards | None = None

    @property
    def sampling_nets(self) -> dict[str, torch.nn.Module]:
        """The networks previews and FID monitoring sample from: the averaged generator when there is one."""
        return with_ema(self.nets, self.family.generator_key)


def data_summary(ds: PreparedDataset, rows: np.ndarray, cfg: RunConfig) -> dict[str, Any]:
    """What the run was trained on (written to ``data.json``; the sampler needs the affine)."""
    return {
        "path": str(ds.root.resolve()),
        "images_sha256": ds.meta.get("images_sha256"),
        "splits_sha256": sha256_file(ds.root / "splits.json") if (ds.root / "splits.json").is_file() else None,
        "manifest_sha256": sha256_file(ds.root / "manifest.csv") if (ds.root / "manifest.csv").is_file() else None,
        "spatial_dims": ds.spatial_dims,
        "shape": list(ds.shape),
        "spacing": ds.meta.get("spacing"),
        "affine": ds.affine.tolist(),
        "classes": ds.classes,
        "subset": cfg.train.subset,
        "fold": cfg.train.fold,
        "label": cfg.train.label,
        "n_train": int(len(rows)),
        "train_subject_ids": [ds.subject_ids[i] for i in rows],
    }


def resolve_conditioning(cfg: RunConfig, ds: PreparedDataset, family: ModelFamily,
                         rows: np.ndarray) -> tuple[RunConfig, torch.Tensor | None, dict[str, Any] | None]:
    """Check the conditioning keys against the data; fill in ``model.num_classes`` and resolve ``auto``.

    Returns:
        (the config with resolved conditioning, the training rows' labels or None, the conditioning
        record written to ``run.json``/``data.json``/the checkpoint, or None for families without it).
    """
    import dataclasses

    from synthmed.models.gan.conditioning import CONDITIONAL

    cond = getattr(family, "conditioning", None)
    params = cfg.model.params
    if cond is None:
        return cfg, None, None
    method = cond(params)
    multi = bool(getattr(params, "multi_label", False))
    if method == "per-class":
        if cfg.train.label in ("", None):
            known = ", ".join(ds.classes) or "(unlabelled dataset)"
            raise ConfigError("model.conditioning='per-class' trains one unconditional GAN per class: run "
                              f"`synthmed train` once per class with --set train.label=CLASS (classes of {ds.root}: {known})")
    elif method in CONDITIONAL and cfg.train.label not in ("", None):
        raise ConfigError(f"train.label={cfg.train.label!r} trains on one class only, but model.conditioning={method!r} "
                          "needs every class; leave train.label empty (or use conditioning per-class)")
    names: list[str] = []
    labels = None
    if method in CONDITIONAL:
        if multi:
            full = ds.multi_labels
            if full is None:
                raise DataError(f"{ds.root}: model.multi_label=true needs a multi-label matrix ({ds.root / 'labels_multi.npy'}); "
                                "add one with synthmed.data.prepared.attach_multi_labels")
            names = ds.findings
            labels = torch.from_numpy(np.ascontiguousarray(full[rows], dtype=np.float32))
        else:
            full = ds.labels
            if full is None:
                raise DataError(f"{ds.root}: model.conditioning={method!r} needs a label for every image "
                                "(manifest.csv has empty labels); preprocess with --labels/--label-column")
            names = ds.classes or [str(v) for v in range(int(full.max()) + 1)]
            labels = torch.from_numpy(np.ascontiguousarray(full[rows], dtype=np.int64))
        k = len(names)
        if params.num_classes not in (0, k):
            raise ConfigError(f"config key 'model.num_classes': {params.num_classes}, but {ds.root} has {k} "
                              f"{'findings' if multi else 'classes'} ({', '.join(names)})")
        params = dataclasses.replace(params, num_classes=k)
    params = dataclasses.replace(params, conditioning=method) if hasattr(params, "conditioning") else params
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, params=params))
    record: dict[str, Any] = {"method": method, "num_classes": int(getattr(params, "num_classes", 0)) if method in CONDITIONAL else 0,
                              "multi_label": multi, "class_names": names}
    if method == "per-class":
        idx = ds.label_index(cfg.train.label)
        record.update(class_names=ds.classes, label=idx, label_name=ds.classes[idx] if idx < len(ds.classes) else str(idx))
    if labels is not None and multi:
        record["label_combinations"] = sorted({tuple(int(v) for v in r) for r in labels.tolist()})
    return cfg, labels, record


def _build(cfg: RunConfig, data_dir: Path, out_dir: Path, info: D.DistInfo) -> Session:
    device = D.resolve_device(cfg.train.device, info)
    ds = load_prepared(data_dir)
    family = get_family(cfg.model.name)
    if ds.spatial_dims not in family.spatial_dims:
        raise ConfigError(f"model {cfg.model.name!r} supports {family.spatial_dims}-D data, {data_dir} is {ds.spatial_dims}-D")
    rows = ds.indices(cfg.train.subset, cfg.train.fold, label=cfg.train.label)
    if len(rows) == 0:
        raise DataError(f"{data_dir}: subset {cfg.train.subset!r}{' of class ' + repr(cfg.train.label) if cfg.train.label else ''} is empty")
    cfg, labels, conditioning = resolve_conditioning(cfg, ds, family, rows)
    images = torch.from_numpy(np.ascontiguousarray(ds.images[rows], dtype=np.float32))
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    raw = {k: m.to(device) for k, m in family.build(cfg.model.params, ds.spatial_dims, ds.shape).items()}
    nets = D.wrap_ddp(raw, info, device)
    augment = make_augment(cfg) if cfg.augment.enabled else None
    step = make_step(family, cfg, nets, device, augment)
    if cfg.train.r1_gamma > 0 and not step.supports_r1:
        raise ConfigError(f"config key 'train.r1_gamma': model {cfg.model.name!r} trains with the {family.step!r} step, "
                          "which does not take the R1 penalty (it applies to the 'gan' and 'alpha_gan' steps: sngan, "
                          "alpha_sngan, dcgan); set train.r1_gamma=0")
    if cfg.augment.ada_target > 0 and not step.reports_d_signs:
        raise ConfigError(f"config key 'augment.ada_target': model {cfg.model.name!r} ({family.step!r} step) reports no "
                          "discriminator signs for adaptive augmentation; set augment.ada_target=0")
    stream = IndexStream(len(rows), cfg.train.seed, info.rank, info.world_size)
    torch.manual_seed(cfg.train.seed + 7919 * info.rank)  # different latents on every rank
    ema = None
    if cfg.train.ema_kimg > 0:
        ema = GeneratorEMA(raw[family.generator_key], cfg.train.ema_kimg, cfg.train.ema_rampup)
        raw[EMA_KEY] = ema.module
    ada = None
    if cfg.augment.ada_target > 0:
        if augment is None:
            raise ConfigError("config key 'augment.ada_target': adaptive augmentation needs augment.enabled=true")
        a = cfg.augment
        ada = AdaptiveAugment(augment, a.ada_target, a.ada_interval, a.ada_kimg, cfg.train.batch_size * info.world_size)
    return Session(cfg, family, ds, images, raw, step, stream, RunFolder(out_dir), info, device, rows,
                   labels=labels, conditioning=conditioning, ema=ema, ada=ada,
                   guards=Guards(cfg.train.guard_patience))


def _save(sess: Session, step_no: int, path: Path | None = None) -> None:
    states = D.gather_objects(rng_state(), sess.info)
    if sess.info.is_main:
        ds = sess.data
        save_checkpoint(path or sess.run.last, model=sess.cfg.model.name, params=sess.cfg.model.params,
                        spatial_dims=ds.spatial_dims, shape=ds.shape, step=step_no, nets=sess.nets,
                        extra={"optim": sess.step.state_dict(), "stream": sess.stream.state_dict(),
                               "rng": states, "world_size": sess.info.world_size,
                               "data_sha256": ds.meta.get("images_sha256"),
                               "fid_state": sess.fid.state.to_dict() if sess.fid else None,
                               "ada": sess.ada.state_dict() if sess.ada else None,
                               "guards": sess.guards.state_dict() if sess.guards else None,
                               "config": sess.cfg.to_dict(), "conditioning": sess.conditioning})
    D.barrier(sess.info)


def _restore(sess: Session) -> tuple[int, dict[str, Any]]:
    path = sess.run.last
    ckpt = fill_param_defaults(load_checkpoint(path), sess.family)
    ds = sess.data
    if ckpt["model"] == sess.cfg.model.name:  # another model: check_compatible says so
        check_resume_config(_run_config_of(ckpt, sess.run), sess.cfg, sess.family, sess.run.root)
    check_compatible(ckpt, path, sess.cfg.model.name, sess.cfg.model.params, ds.spatial_dims, ds.shape)
    if ckpt.get("data_sha256") != ds.meta.get("images_sha256"):
        raise CheckpointError(f"{path}: run was trained on other data (images_sha256 differs from {ds.root})")
    check_resume_data(sess.run, ds, sess.rows, sess.cfg)
    if ckpt.get("world_size", 1) != sess.info.world_size:
        raise CheckpointError(f"{path}: run used {ckpt.get('world_size', 1)} processes; resume with the same number")
    nets = sess.nets
    if sess.ema is not None and EMA_KEY not in ckpt["nets"]:
        # EMA switched on when resuming a run without one: the average starts from the current weights
        nets = {k: m for k, m in sess.nets.items() if k != EMA_KEY}
    load_nets(ckpt, path, nets)
    if nets is not sess.nets:
        sess.ema.module.load_state_dict(sess.nets[sess.family.generator_key].state_dict())
    if sess.ada is not None and ckpt.get("ada"):
        sess.ada.load_state_dict(ckpt["ada"])
    if sess.guards is not None:
        sess.guards.load_state_dict(ckpt.get("guards"))
    sess.step.load_state_dict(ckpt["optim"])
    sess.stream.load_state_dict(ckpt["stream"])
    set_rng_state(ckpt["rng"][sess.info.rank])
    return int(ckpt["step"]), ckpt


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _run_config_of(ckpt: dict[str, Any], run: RunFolder) -> dict[str, Any] | None:
    """The resolved config the run was trained with: the checkpoint's own copy, else ``config.yaml``."""
    if isinstance(ckpt.get("config"), dict):
        return ckpt["config"]
    return read_yaml(run.config) if run.config.is_file() else None


def check_resume_config(old: dict[str, Any] | None, cfg: RunConfig, family: ModelFamily, root: Path) -> None:
    """Refuse to resume with settings that change the run (anything but :data:`RESUME_SAFE_KEYS`).

    The checkpoint's optimiser state would override a new learning rate, and a new seed, batch size,
    model or augmentation key would make a different run than ``config.yaml`` and ``run.json`` record.
    Keys the old config lacks (added to synthmed since) count as their defaults.
    """
    if old is None:
        return
    defaults = _flatten(RunConfig(ModelConfig(cfg.model.name, family.Params()), TrainConfig(), AugmentConfig()).to_dict())
    was = {**defaults, **_flatten(old)}
    now = _flatten(cfg.to_dict())
    changed = [k for k in now if k not in RESUME_SAFE_KEYS and k in was and was[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in changed)
        raise CheckpointError(f"{root}: --resume with settings that change the run ({diff}); resume with the run's "
                              f"own settings ({root / 'config.yaml'}) or train a new run into another --out "
                              f"(keys that may change on resume: {', '.join(RESUME_SAFE_KEYS)})")


def check_resume_data(run: RunFolder, ds: PreparedDataset, rows: np.ndarray, cfg: RunConfig) -> None:
    """Refuse to resume when the prepared folder changed since the run started (``data.json``): new
    images, a new split (``preprocess`` rerun into the same folder) or a new manifest (labels)."""
    if not run.data_json.is_file():
        return
    try:
        old = json.loads(run.data_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{run.data_json}: unreadable ({e}); cannot check the data of the resumed run") from None
    now = data_summary(ds, rows, cfg)
    what = {"images_sha256": "images.npy", "splits_sha256": "splits.json", "manifest_sha256": "manifest.csv"}
    changed = [f"{f} ({k} {str(old[k])[:12]}... -> {str(now[k])[:12]}...)" for k, f in what.items()
               if old.get(k) is not None and old[k] != now[k]]
    if not changed and old.get("train_subject_ids") not in (None, now["train_subject_ids"]):
        changed = ["the training subjects"]
    if changed:
        raise DataError(f"{ds.root}: the prepared folder changed since the run {run.root} started: "
                        f"{', '.join(changed)} (was `synthmed preprocess` run into it again?); resuming would train "
                        "on other subjects than the run records. Restore the prepared folder, or train a new run "
                        "into another --out")


def _write_run_files(sess: Session, resume: bool, start: int) -> None:
    run = sess.run
    run.root.mkdir(parents=True, exist_ok=True)
    for p in (run.logs, run.samples, run.checkpoints):
        p.mkdir(exist_ok=True)
    write_text_atomic(run.config, dump_config(sess.cfg))
    summary = data_summary(sess.data, sess.rows, sess.cfg)
    if sess.conditioning is not None:
        summary["conditioning"] = sess.conditioning
    write_json_atomic(run.data_json, summary)
    prev = json.loads(run.run_json.read_text(encoding="utf-8")) if resume and run.run_json.is_file() else {}
    prev.update({
        "synthmed_version": __version__, "git_commit": _git_commit(), "torch_version": torch.__version__, "python": platform.python_version(),
        "command": sys.argv, "device": str(sess.device), "world_size": sess.info.world_size,
        "model": sess.cfg.model.name, "seed": sess.cfg.train.seed, "status": "running", "pid": os.getpid(),
        "conditioning": sess.conditioning, "warnings": sess.guards.warnings if sess.guards else [],
    })
    prev.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    prev.setdefault("resumed_at_steps", [])
    if resume:
        prev["resumed_at_steps"].append(start)
    write_json_atomic(run.run_json, prev)


def _git_commit() -> str | None:
    """The source checkout's commit, when synthmed runs from a git checkout (None otherwise)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _set_status(run: RunFolder, **fields: Any) -> None:
    if run.run_json.is_file():
        d = json.loads(run.run_json.read_text(encoding="utf-8"))
        d.update(fields)
        write_json_atomic(run.run_json, d)


def describe_failure(error: BaseException) -> str:
    """The one line ``run.json`` records for a training that stopped on ``error``."""
    if isinstance(error, OSError):
        return describe_os_error(error)
    text = str(error).strip().splitlines()
    return text[0] if isinstance(error, SynthmedError) and text else f"{type(error).__name__}: {' '.join(text)}"


def mark_failed(run: RunFolder, error: BaseException) -> bool:
    """Record in ``run.json`` that the training running in ``run`` stopped on ``error``: ``"status": "failed"``,
    the reason under ``"error"`` and the time under ``"failed"``.  Only a run that this process started
    (``pid``) and whose status is still ``running`` is changed: diverged and interrupted runs record their
    own status, and a refused ``--resume`` (changed settings or data) leaves the run's record alone.

    The file is replaced atomically when possible; when that fails too (a full disk has no room for the
    temporary copy), it is rewritten in place, which needs no new space on most file systems.

    Returns:
        Whether the failure was recorded.
    """
    try:
        d = json.loads(run.run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if d.get("status") != "running" or d.get("pid") != os.getpid():
        return False
    d.update(status="failed", error=describe_failure(error), failed=time.strftime("%Y-%m-%dT%H:%M:%S"))
    text = json.dumps(d, indent=2) + "\n"
    try:
        write_text_atomic(run.run_json, text)
        return True
    except OSError:
        pass
    try:
        with open(run.run_json, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
        return True
    except OSError as e:
        log.warning("%s: could not record that training failed (%s)", run.run_json, describe_os_error(e))
        return False


def _preview(sess: Session, step_no: int) -> float:
    """Write the preview grid of ``step_no``; returns the previews' in-batch diversity (see
    :func:`synthmed.train.guards.diversity_ratio`; nan with fewer than two previews)."""
    from synthmed.data.preview import save_slice_grid

    g = torch.Generator().manual_seed(PREVIEW_SEED)
    z = sess.family.sample_latent(sess.cfg.model.params, sess.cfg.train.n_preview, g, sess.device)
    nets = sess.sampling_nets
    if sess.conditioning and sess.conditioning["method"] in ("frozen-classifier", "ac", "projection", "cvae"):
        # preview i shows class i mod K (multi-label: the training data's label combinations in turn)
        labels = preview_labels(sess.conditioning, len(z)).to(sess.device)
        x = sess.family.generate_images(nets, z, labels)
    else:
        x = sess.family.generate_images(nets, z)
    save_slice_grid(x, sess.run.samples / f"step_{step_no:07d}.png", spacing=sess.data.meta.get("spacing"))
    if len(x) < 2:
        return float("nan")
    pick = np.random.default_rng(PREVIEW_SEED).choice(len(sess.images), size=min(len(x), len(sess.images)),
                                                      replace=False)
    return diversity_ratio(x, sess.images[np.sort(pick)].numpy())


def preview_labels(conditioning: dict[str, Any], n: int, offset: int = 0) -> torch.Tensor:
    """Default labels of ``n`` samples of a conditional run: sample ``i`` gets class ``(offset + i) mod K``;
    multi-label runs cycle through the label combinations seen in training."""
    idx = torch.arange(offset, offset + n)
    if conditioning.get("multi_label"):
        combos = torch.tensor(conditioning.get("label_combinations") or [[0] * conditioning["num_classes"]],
                              dtype=torch.float32)
        return combos[idx % len(combos)]
    return idx % int(conditioning["num_classes"])


def fill_param_defaults(ckpt: dict[str, Any], family: ModelFamily) -> dict[str, Any]:
    """Checkpoints written before a parameter existed (e.g. ``model.conditioning``) hold its default."""
    import dataclasses

    for f in dataclasses.fields(family.Params):
        if f.name not in ckpt["params"] and f.default is not dataclasses.MISSING:
            ckpt["params"][f.name] = f.default
    return ckpt


def _check_finite(sums: dict[str, torch.Tensor], count: int, step_no: int, sess: Session) -> dict[str, float]:
    """Mean losses since the last check; TrainingDiverged on NaN/Inf or a runaway value."""
    vals = {k: v.item() / max(count, 1) for k, v in sums.items()}
    limit = sess.cfg.train.divergence_threshold
    bad = {k: v for k, v in vals.items() if not math.isfinite(v) or abs(v) > limit}
    if bad:
        last = sess.run.last
        kept = _kept_checkpoint(last)
        k, v = next(iter(bad.items()))
        if sess.info.is_main:
            _set_status(sess.run, status="diverged", diverged_at_step=step_no)
        raise TrainingDiverged(f"training diverged at step {step_no}: {k} = {v} (limit {limit:g}); {kept}. "
                               "Try a lower train.lr, augment.enabled=true or train.precision=fp32.")
    return vals


def _kept_checkpoint(last: Path) -> str:
    """What the divergence message says about ``last.pt``: only a checkpoint that passes its checksum
    is "the last good checkpoint"."""
    if not last.is_file():
        return "no checkpoint had been written yet"
    try:
        verify_checkpoint(last)
    except CheckpointError as e:
        return f"and the last checkpoint is not usable either: {e}"
    return f"the last good checkpoint {last} is kept"


def train(cfg: RunConfig, data_dir: str | Path, out_dir: str | Path, resume: bool = False,
          progress: bool = True) -> Path:
    """Train ``cfg`` on the prepared dataset ``data_dir``; write the run folder ``out_dir``.

    Args:
        resume: continue from ``out_dir/checkpoints/last.pt`` exactly (same step, optimiser, scaler,
            data position and RNG state).  Without it, an existing run folder is an error.  ``cfg`` may
            differ from the run's config only in :data:`RESUME_SAFE_KEYS`, and the prepared data must be
            unchanged (``data.json``).  The run folder is locked against other processes meanwhile.
        progress: show a progress bar (rank 0 only).

    Returns:
        The run folder.
    """
    out = Path(out_dir)
    run = RunFolder(out)
    # one process (DDP: rank 0) locks the run folder; stale temporaries of a killed run are removed
    main = int(os.environ.get("RANK", "0")) == 0
    with folder_lock(out, subfolders=RUN_SUBFOLDERS) if main else contextlib.nullcontext():
        if not resume and run.last.exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
        if resume and not run.last.is_file():
            raise CheckpointError(f"{run.last}: nothing to resume (no checkpoint in {out})")
        info = D.init_distributed(cfg.train.device)
        try:
            return _train(cfg, Path(data_dir), out, resume, progress, info)
        except Exception as e:  # a full disk, a bug ...: run.json must not keep saying "running"
            if main:
                mark_failed(run, e)
            raise
        finally:
            D.shutdown(info)


def _train(cfg: RunConfig, data_dir: Path, out: Path, resume: bool, progress: bool, info: D.DistInfo) -> Path:
    sess = _build(cfg, data_dir, out, info)
    start, ckpt = _restore(sess) if resume else (0, {})
    if sess.step.accepts_labels and sess.labels is not None:
        sess.step.prepare(sess.images, progress=progress and info.is_main, labels=sess.labels)
    else:
        sess.step.prepare(sess.images, progress=progress and info.is_main)
    tc = cfg.train
    logger = None
    if info.is_main:
        _write_run_files(sess, resume, start)
        logger = MetricsLogger(sess.run.metrics_csv, sess.run.logs, start)
        if tc.fid_every:
            sess.fid = _make_fid_monitor(sess, progress, ckpt.get("fid_state"), start)
    D.barrier(info)
    sums: dict[str, torch.Tensor] = {}
    count, t0 = 0, time.perf_counter()
    bar = progress_bar(total=tc.iterations, initial=start, disable=not (progress and info.is_main), desc="train",
                      unit="it")
    it, stop = start, False
    try:
        for it in range(start + 1, tc.iterations + 1):
            idx = sess.stream.next(tc.batch_size)
            real = sess.images[idx].to(sess.device, non_blocking=True)
            if sess.step.accepts_labels and sess.labels is not None:  # conditional runs only
                losses = sess.step(real, labels=sess.labels[idx].to(sess.device))
            else:
                losses = sess.step(real)
            _after_step(sess, it, losses)
            for k, v in losses.items():
                sums[k] = sums.get(k, torch.zeros((), device=sess.device)) + v.float()
            count += 1
            bar.update(1)
            last = it == tc.iterations
            fid_now = tc.fid_every > 0 and it % tc.fid_every == 0
            logged: dict[str, float] = {}
            if it % tc.log_every == 0 or it % tc.checkpoint_every == 0 or last or fid_now:
                vals = _check_finite(sums, count, it, sess)
                vals["sec_per_it"] = (time.perf_counter() - t0) / count
                if sess.ada is not None:
                    vals["ada_p"] = sess.ada.p
                    if math.isfinite(sess.ada.rt):  # measured after the first ada_interval updates
                        vals["ada_rt"] = sess.ada.rt
                _guard(sess, it, vals)
                logged = vals
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(vals.items())[:3]})
                sums, count, t0 = {}, 0, time.perf_counter()
            stop = _evaluate_fid(sess, it, logger) if fid_now else False
            last = last or stop
            if info.is_main and (it % tc.sample_every == 0 or last):
                div = _preview(sess, it)
                if math.isfinite(div):
                    measured = {"diversity": div}
                    _guard(sess, it, measured)
                    logged.update(measured)
            if logger and logged:
                logger.log(it, logged)
            if it % tc.checkpoint_every == 0 or last:
                _save(sess, it)
            if stop:
                break
    except KeyboardInterrupt:
        if info.is_main:
            _set_status(sess.run, status="interrupted")
        raise
    finally:
        bar.close()
        if logger:
            logger.close()
    digests = D.gather_objects(_param_digest(sess.nets), info)
    if info.is_main:
        fid_info = {"best_fid": sess.fid.state.best, "best_fid_step": sess.fid.state.best_step} if sess.fid else {}
        _set_status(sess.run, status="stopped_early" if stop else "finished",
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S"), step=it, replica_param_sha256=digests,
                    warnings=sess.guards.warnings if sess.guards else [], **fid_info)
    if len(set(digests)) > 1:
        raise TrainingDiverged(f"the {info.world_size} DDP replicas ended with different weights: {digests}")
    return out


def _after_step(sess: Session, it: int, losses: dict[str, torch.Tensor]) -> None:
    """Per-iteration bookkeeping outside the family's step: the EMA of G and the ADA controller."""
    world = sess.info.world_size
    if sess.ema is not None:
        batch = sess.cfg.train.batch_size * world
        sess.ema.update(sess.nets[sess.family.generator_key], batch, it * batch)
    if sess.ada is not None:
        sign = losses["d_real_sign"].detach().float()
        if world > 1:
            sign = sign.clone()
            torch.distributed.all_reduce(sign)
            sign /= world
        sess.ada.observe(float(sign))


def _guard(sess: Session, step_no: int, values: dict[str, float]) -> None:
    """Run the collapse guards on ``values`` (rank 0); a guard that fires is also recorded in run.json."""
    if sess.guards is None or not sess.info.is_main:
        return
    if sess.guards.check(step_no, values):
        _set_status(sess.run, warnings=sess.guards.warnings)


def _make_fid_monitor(sess: Session, progress: bool, state: dict[str, Any] | None, start: int) -> Any:
    from synthmed.train.fid_monitor import FIDMonitor, FIDState, build_fid_extractor

    tc, real = sess.cfg.train, sess.images.numpy()
    extractor = build_fid_extractor(tc, real, sess.run.root, sess.device, progress)
    monitor = FIDMonitor(tc, sess.family, sess.cfg.model.params, sess.sampling_nets, real, extractor,
                         sess.run.root / "fid.csv", sess.device)
    monitor.state = FIDState.from_dict(state)
    monitor.truncate_csv(start)
    return monitor


def _evaluate_fid(sess: Session, step_no: int, logger: MetricsLogger | None) -> bool:
    """FID on rank 0; every rank learns whether it improved (best checkpoint) and whether to stop."""
    decision = (False, False)
    if sess.info.is_main:
        value, improved = sess.fid.evaluate(step_no)
        if logger:
            logger.tb.add_scalar("eval/fid", value, step_no)
        decision = (improved, sess.fid.should_stop(step_no))
    improved, stop = D.broadcast_object(decision, sess.info)
    if improved:
        _save(sess, step_no, sess.run.checkpoints / "best.pt")
    return bool(stop)


def _param_digest(nets: dict[str, torch.nn.Module]) -> str:
    """SHA-256 of every network's parameters: equal on every DDP replica when gradients are synchronised."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(nets):
        for name, p in nets[k].named_parameters():
            h.update(f"{k}.{name}".encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
