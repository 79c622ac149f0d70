"""Sampling from a trained run: ``synthmed sample RUN_DIR --n N --out DIR [--label L ...] [--labels-from CSV]``.

Every sample ``i`` is generated from its own seed (``seed + i``), so a cohort is reproducible
and independent of the batch size, and any single image can be regenerated from the manifest.

Conditional runs (``model.conditioning`` frozen-classifier, ac or projection) generate the requested
class balance: ``--label`` (a class name or index; repeated, the labels are assigned in turn, so
``--label a --label a --label b`` gives two a per b) or ``--labels-from CSV`` (one label per row, or
``class,count`` rows).  Without either, sample ``i`` gets class ``(seed + i) mod K``.  Multi-label
runs take ``+``-joined finding names (``edema+effusion``; ``none`` for no finding).  The manifest
records each sample's label index and name (multi-label: ``label_name`` and the 0/1 ``findings``).
A per-class run (one GAN per class, or any run trained with ``train.label``) generates only its class.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthmed import __version__
from synthmed.config import RunConfig, check_prior, check_truncation, load_config
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.generate.prior import run_prior
from synthmed.generate.writers import write_nifti, write_png
from synthmed.io_utils import atomic_dir, folder_lock, naming_path, sha256_file, write_json_atomic
from synthmed.models.base import ModelFamily, get_family
from synthmed.progress import progress as progress_bar
from synthmed.train.checkpoint import RunFolder, check_compatible, load_checkpoint, load_nets
from synthmed.train.distributed import DistInfo, resolve_device
from synthmed.train.ema import EMA_KEY
from synthmed.train.loop import fill_param_defaults, preview_labels


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
    #: whether the generator holds the run's weight average (``G_ema``, ``train.ema_kimg > 0``)
    ema: bool = False
    #: the run folder
    root: Path | None = None
    #: truncation threshold of the latent codes (``sample.truncation``; None = z ~ N(0, I)); see
    #: :func:`truncated_latent`
    truncation: float | None = None
    #: the latent prior (``sample.prior``): ``standard`` = N(0, I), ``gmm`` = a Gaussian mixture fitted to the
    #: training codes (ex-post density estimation, Ghosh et al. 2020; :mod:`synthmed.generate.prior`)
    prior: str = "standard"
    #: components of the ``gmm`` prior (``sample.prior_components``)
    prior_components: int = 10
    #: the prepared folder the ``gmm`` prior is fitted from (None: the ``path`` in ``data.json``)
    prior_data: Path | None = None
    #: the fitted ``gmm`` prior once loaded (:func:`synthmed.generate.prior.run_prior` fills it)
    latent_prior: Any = None

    @property
    def conditioning(self) -> dict[str, Any]:
        """The run's conditioning record (``data.json``; runs from before conditioning: derived)."""
        rec = self.data.get("conditioning")
        if rec:
            return rec
        label = self.data.get("label")
        if label not in ("", None):
            classes = self.data.get("classes") or []
            idx = classes.index(label) if label in classes else int(label)
            return {"method": "per-class", "num_classes": 0, "multi_label": False, "class_names": classes,
                    "label": idx, "label_name": classes[idx] if idx < len(classes) else str(idx)}
        return {"method": "none", "num_classes": 0, "multi_label": False, "class_names": []}

    @property
    def conditional(self) -> bool:
        return self.conditioning["method"] in ("frozen-classifier", "ac", "projection", "cvae")


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
             ema: bool = True) -> LoadedRun:
    """Rebuild a run's networks from its config and checkpoint (eval mode).

    Args:
        ema: use the generator's weight average (``G_ema``) when the run kept one (StyleGAN2-ADA's
            default for sampling); False gives the raw trained weights.
    """
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
    ckpt = fill_param_defaults(load_checkpoint(ckpt_path), family)
    shape = tuple(data["shape"])
    check_compatible(ckpt, ckpt_path, cfg.model.name, cfg.model.params, data["spatial_dims"], shape)
    dev = resolve_device(device, DistInfo())
    nets = family.build(cfg.model.params, data["spatial_dims"], shape)
    load_nets(ckpt, ckpt_path, nets)
    use_ema = ema and EMA_KEY in ckpt["nets"]
    if use_ema:
        nets[family.generator_key].load_state_dict(ckpt["nets"][EMA_KEY])
    for m in nets.values():
        m.to(dev).eval()
    return LoadedRun(cfg, family, nets, data, ckpt_path, sha256_file(ckpt_path), int(ckpt["step"]), dev, use_ema,
                     run.root, cfg.sample.truncation, cfg.sample.prior, cfg.sample.prior_components)


#: redraws after which :func:`truncated_latent` gives up (P(|z| > 0.05) = 0.96 per draw: never reached in practice)
MAX_REDRAWS = 1000


def truncated_latent(family: ModelFamily, params: Any, generator: torch.Generator,
                     truncation: float | None) -> torch.Tensor:
    """One latent code (latent_dim,) from ``family.sample_latent``; with ``truncation`` psi, every component
    with ``|z_i| > psi`` is redrawn from the same generator until it lies inside (the truncation trick of
    Brock et al. 2019, "Large scale GAN training", Sec. 3.1: a truncated normal, so lower psi trades
    variety for fidelity; Kynkäänniemi et al. 2019, Fig. 7, trace precision and recall along psi).  The
    code depends only on the seed of ``generator``, so sample ``i`` is the same in every batch.

    Raises:
        ConfigError: psi <= 0, or a family whose latent codes are not standard normal enough to truncate.
    """
    check_truncation(truncation, "truncation")
    z = family.sample_latent(params, 1, generator)[0]
    if truncation is None:
        return z
    for _ in range(MAX_REDRAWS):
        outside = z.abs() > truncation
        if not outside.any():
            return z
        z = torch.where(outside, family.sample_latent(params, 1, generator)[0], z)
    raise ConfigError(f"truncation {truncation}: latent components still outside after {MAX_REDRAWS} redraws")


def generate_batch(run: LoadedRun, seeds: list[int], labels: torch.Tensor | None = None) -> np.ndarray:
    """Images (len(seeds), 1, *spatial) in [-1, 1], one latent per seed.

    Args:
        labels: for a conditional run, (B,) class indices or a (B, K) 0/1 matrix (multi-label); None gives
            sample ``s`` the class ``s mod K`` (multi-label: the training label combinations in turn).
    """
    if run.conditional and labels is None:
        labels = torch.cat([preview_labels(run.conditioning, 1, s) for s in seeds])
    z = torch.stack([latent_code(run, s, None if labels is None or labels.ndim != 1 else int(labels[i]))
                     for i, s in enumerate(seeds)]).to(run.device)
    if not run.conditional:
        return run.family.generate_images(run.nets, z)
    return run.family.generate_images(run.nets, z, labels.to(run.device))


def latent_code(run: LoadedRun, seed: int, label: int | None = None) -> torch.Tensor:
    """The latent code (latent_dim,) of sample ``seed``, from the run's prior (``run.prior``) and truncation.

    ``standard``: :func:`truncated_latent`.  ``gmm`` (ex-post density estimation, Ghosh et al. 2020, Sec. 4):
    the same eps, then a uniform u from the same generator picks the mixture component (of class ``label``
    for a conditional run), ``z = mean_k + L_k eps`` (:mod:`synthmed.generate.prior`; truncation then bounds
    eps in the component's own whitened coordinates).  Depends only on ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    eps = truncated_latent(run.family, run.cfg.model.params, g, run.truncation)
    prior = run_prior(run)
    if prior is None:
        return eps
    return prior.draw(eps, float(torch.rand(1, generator=g)), label)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SynthmedError(f"{out} exists and is not empty; choose another --out or pass --overwrite")


def sample(run_dir: str | Path, n: int | None, out: str | Path, seed: int = 0, batch_size: int = 8,
           checkpoint: str | Path | None = None, device: str = "auto", overwrite: bool = False,
           progress: bool = True, labels: list[str | int] | None = None,
           labels_from: str | Path | None = None, ema: bool = True,
           truncation: float | None | str = "config", prior: str = "config",
           prior_components: int | None = None, prior_data: str | Path | None = None) -> Path:
    """Generate ``n`` images from a run into ``out`` (NIfTI for 3D, PNG for 2D) with ``manifest.csv``.

    The folder appears complete or not at all (written to a temporary folder, then renamed).

    Args:
        n: number of images (None: the number the ``labels_from`` table asks for).
        labels: requested labels (class names or indices), assigned to the samples in turn.
        labels_from: CSV with one label per row (first column, or a ``label`` column), or ``class,count``
            rows (a ``count`` column).
        ema: sample from the generator's weight average when the run has one (recorded in ``sample.json``).
        truncation: latent truncation threshold psi (:func:`truncated_latent`), None for none, or ``"config"``
            for the run's ``sample.truncation``; recorded in ``manifest.csv`` and ``sample.json``.
        prior: ``standard`` (N(0, I)), ``gmm`` (:mod:`synthmed.generate.prior`, fitted once and cached in the run
            folder) or ``"config"`` for the run's ``sample.prior``; recorded in ``manifest.csv`` and ``sample.json``.
        prior_components: components of the ``gmm`` prior (None: the run's ``sample.prior_components``).
        prior_data: the prepared folder the run trained on, when it has moved from the ``path`` in ``data.json``.

    Raises:
        SynthmedError: labels for an unconditional run, unknown labels, a bad table; ``gmm`` for a family
            without a Gaussian posterior, or the training data gone.
    """
    if int(batch_size) < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if int(seed) < 0:
        raise DataError(f"--seed must be at least 0, got {seed}")
    run = load_run(run_dir, checkpoint, device, ema=ema)
    if truncation != "config":
        run.truncation = check_truncation(truncation, "--truncation")
    if prior != "config":
        run.prior = prior
    if prior_components is not None:
        run.prior_components = int(prior_components)
    run.prior_data = Path(prior_data) if prior_data else None
    check_prior(run.prior, run.prior_components, run.family, "--prior")
    run_prior(run)  # fit (or load) before the output folder is made, so a failure leaves nothing behind
    n, request = resolve_label_request(run, n, labels, labels_from)
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if request is None and run.conditional:  # the default classes, recorded in the manifest too
        request = torch.cat([preview_labels(run.conditioning, 1, seed + i) for i in range(n)])
    out = Path(out)
    with folder_lock(out, beside=True):  # one writer per output folder; removes a killed run's .NAME.*.tmp
        _check_out(out, overwrite)
        with atomic_dir(out) as tmp:
            rows = _write_samples(run, n, tmp, seed, batch_size, progress, request)
            _write_manifest(run, rows, tmp, seed, n)
    return out


def _write_samples(run: LoadedRun, n: int, tmp: Path, seed: int, batch_size: int,
                   progress: bool, request: torch.Tensor | None) -> list[dict[str, Any]]:
    from synthmed.data.preview import save_slice_grid

    is3d = run.data["spatial_dims"] == 3
    affine = np.asarray(run.data["affine"], dtype=np.float64)
    rows: list[dict[str, Any]] = []
    preview: list[np.ndarray] = []
    for start in progress_bar(range(0, n, batch_size), disable=not progress, desc="sample", unit="batch"):
        seeds = [seed + i for i in range(start, min(n, start + batch_size))]
        lab = request[start:start + len(seeds)] if request is not None else None
        imgs = generate_batch(run, seeds, lab)
        for j, (s, img) in enumerate(zip(seeds, imgs, strict=True)):
            name = f"synthetic_{s - seed:05d}" + (".nii.gz" if is3d else ".png")
            with naming_path(tmp / name):  # a failed write (disk full) names the file
                if is3d:
                    write_nifti(img[0], affine, tmp / name)
                else:
                    write_png(img[0], tmp / name)
            rows.append({"file": name, **_label_columns(run, lab[j] if lab is not None else None), "seed": s})
        if len(preview) < 8:
            preview.extend(imgs[: 8 - len(preview)])
    save_slice_grid(np.stack(preview), tmp / "preview.png", spacing=run.data.get("spacing"))
    return rows


def _write_manifest(run: LoadedRun, rows: list[dict[str, Any]], tmp: Path, seed: int, n: int) -> None:
    extra = {"model": run.cfg.model.name, "checkpoint": str(run.checkpoint.resolve()),
             "checkpoint_sha256": run.checkpoint_sha256, "step": run.step,
             "truncation": "" if run.truncation is None else run.truncation, "prior": run.prior,
             "prior_components": run.prior_components if run.prior == "gmm" else ""}
    cols = ["file", "label", "label_name", *(["findings"] if run.conditioning.get("multi_label") else []), "seed", *extra]
    with naming_path(tmp / "manifest.csv"), open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({**r, **extra})
    write_json_atomic(tmp / "sample.json", {
        "synthmed_version": __version__, "n": n, "seed": seed, **extra, "truncation": run.truncation,
        "config": run.cfg.to_dict(), "spatial_dims": run.data["spatial_dims"], "shape": run.data["shape"],
        "affine": run.data["affine"], "spacing": run.data.get("spacing"), "trained_on": run.data.get("path"),
        "trained_on_sha256": run.data.get("images_sha256"), "conditioning": run.conditioning,
        "label_counts": _label_counts(rows), "ema": run.ema, "prior_components": extra["prior_components"] or None,
        "prior_fit": _prior_record(run),
        "run": str(run.root.resolve()) if run.root else None,
        "training_warnings": training_warnings(run.root) if run.root else [],
    })


def _prior_record(run: LoadedRun) -> dict[str, Any] | None:
    """What the ``gmm`` prior was fitted to, and its cache file (``sample.json``); None for ``standard``."""
    from synthmed.generate.prior import cache_path

    if run.prior == "standard" or run.latent_prior is None:
        return None
    path = cache_path(run, run.prior_components)
    return {**run.latent_prior.meta, "cache": str(path) if path is not None else None}


def training_warnings(run_dir: str | Path) -> list[dict[str, Any]]:
    """The collapse-guard warnings a run recorded in its ``run.json`` (``synthmed.train.guards``); [] if none."""
    path = Path(run_dir) / "run.json"
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("warnings") or [])
    except (OSError, ValueError):
        return []




def _label_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label_name"]] = counts.get(r["label_name"], 0) + 1
    return counts


def _label_columns(run: LoadedRun, label: torch.Tensor | None) -> dict[str, str]:
    """Manifest columns of one sample: ``label`` (index), ``label_name`` [, ``findings``]."""
    cond = run.conditioning
    names = cond.get("class_names") or []
    if cond["method"] == "per-class":
        return {"label": str(cond["label"]), "label_name": cond["label_name"]}
    if label is None:
        return {"label": "", "label_name": ""}
    if cond.get("multi_label"):
        present = [names[k] for k, v in enumerate(label.tolist()) if v]
        return {"label": "", "label_name": "+".join(present) or "none",
                "findings": ";".join(str(int(v)) for v in label.tolist())}
    idx = int(label)
    return {"label": str(idx), "label_name": names[idx] if idx < len(names) else str(idx)}


def parse_label(run: LoadedRun, text: str | int, where: str) -> torch.Tensor:
    """One requested label: a class index (0-d tensor) or, multi-label, a (K,) 0/1 vector.

    Raises:
        SynthmedError: naming ``where`` (the option or file) and the run's classes.
    """
    cond = run.conditioning
    names = [str(c) for c in cond.get("class_names") or []]
    k = int(cond.get("num_classes") or len(names))
    text = str(text).strip()
    if cond.get("multi_label"):
        vec = torch.zeros(k)
        if text.lower() not in ("none", "-", ""):
            for part in text.split("+"):
                part = part.strip()
                if part in names:
                    vec[names.index(part)] = 1
                elif part.isdigit() and int(part) < k:
                    vec[int(part)] = 1
                else:
                    raise SynthmedError(f"{where}: {part!r} is not a finding of {run.checkpoint.parent.parent}; "
                                        f"findings: {', '.join(names)} (join several with '+', 'none' for no finding)")
        return vec
    if text in names:
        return torch.tensor(names.index(text))
    if text.lstrip("-").isdigit() and 0 <= int(text) < k:
        return torch.tensor(int(text))
    known = ", ".join(f"{c} ({i})" for i, c in enumerate(names)) or ", ".join(map(str, range(k)))
    raise SynthmedError(f"{where}: no class {text!r} in {run.checkpoint.parent.parent}; classes: {known}")


def _read_label_table(path: Path) -> tuple[list[str], bool]:
    """Labels of a --labels-from CSV, one per requested sample; and whether counts were given."""
    if not path.is_file():
        raise SynthmedError(f"{path}: --labels-from file does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SynthmedError(f"{path}: cannot read the label table ({e})") from None
    if not rows:
        raise SynthmedError(f"{path}: empty label table; expected a label column or class,count rows")
    header = [c.strip().lower() for c in rows[0]]
    if "count" in header:
        ci = header.index("count")
        li = header.index("class") if "class" in header else header.index("label") if "label" in header else 1 - ci
        out: list[str] = []
        for i, r in enumerate(rows[1:], start=2):
            try:
                count = int(r[ci])
            except (ValueError, IndexError):
                raise SynthmedError(f"{path}: line {i}: count {r[ci] if ci < len(r) else ''!r} is not an integer") from None
            if count < 0:
                raise SynthmedError(f"{path}: line {i}: negative count {count}")
            out += [r[li].strip()] * count
        return out, True
    col = header.index("label") if "label" in header else header.index("class") if "class" in header else None
    body = rows[1:] if col is not None else rows
    return [r[col or 0].strip() for r in body], False


def resolve_label_request(run: LoadedRun, n: int | None, labels: list[str | int] | None,
                          labels_from: str | Path | None) -> tuple[int, torch.Tensor | None]:
    """(number of samples, the label of every sample or None) for a sampling request.

    Raises:
        SynthmedError: labels asked of an unconditional run or of another class than a per-class run's,
            unknown labels, a table that disagrees with ``n``, or ``n`` missing.
    """
    if labels and labels_from:
        raise SynthmedError("give either --label or --labels-from, not both")
    cond = run.conditioning
    asked: list[str] = []
    where = "--label"
    if labels_from:
        asked, counted = _read_label_table(Path(labels_from))
        where = str(labels_from)
        if not asked:
            raise SynthmedError(f"{labels_from}: the table requests no samples")
        if n is None:
            n = len(asked)
        elif n != len(asked):
            kind = "the counts add up to" if counted else "it lists"
            raise SynthmedError(f"{labels_from}: {kind} {len(asked)} samples but --n is {n}; omit --n or make them agree")
    elif labels:
        asked = [str(v) for v in labels]
    if n is None:
        raise SynthmedError("--n is required unless --labels-from gives the samples")
    if not asked:
        return n, None
    if cond["method"] == "per-class":
        for a in asked:
            if a not in (str(cond["label"]), str(cond["label_name"])):
                raise SynthmedError(
                    f"{where}: {run.checkpoint.parent.parent} is a per-class run (one unconditional GAN trained on class "
                    f"{cond['label_name']!r} only), so it generates only that class; sample the run trained with "
                    f"--set train.label={a} for class {a!r}, or train one conditional run (model.conditioning=ac, "
                    "projection or frozen-classifier)")
        return n, None
    if not run.conditional:
        raise SynthmedError(
            f"{where}: {run.checkpoint.parent.parent} was trained without conditioning (model.conditioning="
            f"{cond['method']!r}), so it cannot generate a requested class; train with --set model.conditioning=ac "
            "(or projection, frozen-classifier), or one run per class with --set train.label=CLASS")
    parsed = [parse_label(run, a, where) for a in asked]
    return n, torch.stack([parsed[i % len(parsed)] for i in range(n)])
