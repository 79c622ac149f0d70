"""Reference runs (issue 13): train a shipped config on public data, evaluate it against the held-out
real test split, and tabulate the results for ``docs/results.md``.

A reference run is one YAML file in ``synthmed/configs/reference/`` named ``<dataset>-<model...>.yaml``
(an ordinary run config, :func:`synthmed.config.load_config`) and one dataset of :data:`DATASETS`, the
name's first part.  ``synthmed reference run NAME --work DIR``:

1. prepares the dataset once into ``DIR/prepared/<dataset>`` from the shared data root (or uses
   ``--data PREPARED``);
2. trains the config into ``DIR/runs/<NAME>`` (:func:`synthmed.protocol.candidates.ensure_run`: a
   finished run is kept, an interrupted one resumes from its last checkpoint, a run of another config
   is an error);
3. evaluates it in the dataset's in-domain feature space (the ``indomain-ae`` extractor trained once on
   the trainval split and kept in ``PREPARED/extractors/``, shared with ``synthmed evaluate``):
   ``n_sets`` synthetic sets, each the size of the test split, against the **test split**, and as the
   *floor* ``n_sets`` seeded random subsets of the real **trainval** images of the same size against the
   same test features (what "as good as real" looks like at this sample size).  Metrics: FID (Heusel et
   al. 2017), KID (Bińkowski et al. 2018), precision/recall (Kynkäänniemi et al. 2019, k = 3) and
   density/coverage (Naeem et al. 2020, k = 5), mean over sets with t-based 95% CIs
   (:func:`synthmed.evaluate.fidelity.feature_metric_rows`); conditional runs also per class;
4. checks memorisation in pixel space (:func:`copy_flags`), and for the VAEs the reconstruction ratio
   (:func:`reconstruction_ratio`) and the final KL (:func:`final_kl`);
5. draws ``reference/samples.png`` (real test images beside samples, per class for conditional runs) and
   writes ``reference/result.json`` with every number and the :data:`TARGETS` check.

``synthmed reference table DIR ...`` turns the ``result.json`` files into one Markdown table.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.config import CONFIG_DIR
from synthmed.errors import ConfigError, DataError
from synthmed.io_utils import sha256_file, write_json_atomic, write_text_atomic
from synthmed.train.guards import KL_COLLAPSE_NATS

#: the shipped reference configs
REFERENCE_DIR = CONFIG_DIR / "reference"
#: where the public data lives, relative to the working directory (the repository root's sibling ``shared/data``)
DEFAULT_DATA_ROOT = Path("../shared/data")
#: model families whose reconstruction ratio and KL are checked (the VAEs of paper 002)
VAE_MODELS = ("vae", "dfc_vae", "intro_vae")
#: real and synthetic images shown per row of ``samples.png``
N_SHOWN = 8
#: ``loss_kl`` values of ``metrics.csv`` averaged into the final KL
KL_LAST_ROWS = 10

#: issue 13's targets: name -> (threshold, direction, what it means)
TARGETS: dict[str, tuple[float, str, str]] = {
    "precision": (0.6, ">=", "precision against the test split"),
    "recall": (0.4, ">=", "recall against the test split"),
    "fid_ratio": (3.0, "<=", "FID / floor FID"),
    "copies": (0.0, "<=", "synthetic samples flagged as copies of a training image"),
    "recon_ratio": (0.5, "<=", "VAE reconstruction MSE / MSE of the mean training image (test split)"),
    "final_kl": (KL_COLLAPSE_NATS, ">=", "VAE final KL in nats per image (not collapsed: the training loop's "
                                         "posterior-collapse guard)"),
}


@dataclass(frozen=True)
class ReferenceDataset:
    """How one public dataset is prepared from the shared data root (``synthmed preprocess`` options).

    Attributes:
        key: the dataset part of a reference name.
        source: file or folder under the data root.
        reader: the ``synthmed preprocess`` reader.
        size: output grid side (None: native size).
        label_column: label column (BIDS ``participants.tsv``), or ``label`` for readers that ignore it.
        description: one line for ``synthmed reference list``.
        test_split: where the held-out test split comes from.
    """

    key: str
    source: str
    reader: str
    size: int | None
    label_column: str
    description: str
    test_split: str
    #: 2 for images, 3 for volumes
    spatial_dims: int = 2

    def preprocess_options(self, data_root: Path, out: Path, progress: bool = True) -> Any:
        """The :class:`synthmed.data.preprocess.PreprocessOptions` that prepare this dataset into ``out``."""
        from synthmed.data.preprocess import PreprocessOptions

        return PreprocessOptions(input=Path(data_root) / self.source, out=Path(out), reader=self.reader,
                                 label_column=self.label_column, size=self.size, progress=progress)


#: dataset key -> how to prepare it.  Test splits: MedMNIST keeps its official test split (its val
#: split joins trainval); the brain tumour MRI set keeps its official ``Testing/`` folder (the images
#: reader marks ``Testing/`` images as split ``test`` and ``synthmed preprocess`` fixes them as the test
#: split); ds002748 has none, so ``synthmed preprocess`` holds out a seeded stratified 20% (seed 0).
DATASETS: dict[str, ReferenceDataset] = {
    "breastmnist": ReferenceDataset(
        "breastmnist", "medmnist/breastmnist.npz", "medmnist", None, "label",
        "BreastMNIST 28x28 2D ultrasound, 2 classes (malignant / normal+benign), 780 images",
        "official MedMNIST test split (156)"),
    "adrenal28": ReferenceDataset(
        "adrenal28", "medmnist/adrenalmnist3d.npz", "medmnist", None, "label",
        "AdrenalMNIST3D 28^3 CT, 2 classes (normal / hyperplasia), 1584 volumes",
        "official MedMNIST test split (298)", spatial_dims=3),
    "braintumour64": ReferenceDataset(
        "braintumour64", "brain-tumor-mri-4class", "images", 64, "label",
        "Brain Tumor MRI 2D slices at 64x64, 4 classes (glioma, meningioma, notumor, pituitary), 7023 images",
        "the dataset's official Testing/ folder (1311)"),
    "ds002748": ReferenceDataset(
        "ds002748", "ds002748-t1w-2mm", "bids", 32, "group",
        "OpenNeuro ds002748 T1w 3D MRI, MNI-registered, 32^3, 2 groups (depr / control), 72 subjects",
        "seeded stratified 20% held out by synthmed preprocess (seed 0)", spatial_dims=3),
}


# ------------------------------------------------------------------------------------ configs, data
def reference_configs() -> dict[str, Path]:
    """Shipped reference configs: name -> YAML path (``configs/reference/<dataset>-<model...>.yaml``)."""
    return {p.stem: p for p in sorted(REFERENCE_DIR.glob("*.yaml"))}


def resolve_reference(name: str) -> tuple[Path, ReferenceDataset]:
    """The config file and dataset of a reference name.

    Raises:
        ConfigError: an unknown name (listing the known ones) or a name whose dataset is not in :data:`DATASETS`.
    """
    configs = reference_configs()
    if name not in configs:
        raise ConfigError(f"no reference run {name!r}; known: {', '.join(configs) or '(none shipped)'} "
                          "(see `synthmed reference list`)")
    key = name.split("-", 1)[0]
    if key not in DATASETS:
        raise ConfigError(f"{configs[name]}: the name's dataset {key!r} is not one of {', '.join(DATASETS)}")
    return configs[name], DATASETS[key]


def prepare_dataset(spec: ReferenceDataset, data_root: str | Path, out: str | Path, progress: bool = True) -> Path:
    """Prepare ``spec`` from ``data_root`` into ``out`` once (a complete prepared folder there is reused).

    Raises:
        DataError: naming the data root or the source path that was expected.
    """
    from synthmed.data.preprocess import run_preprocess

    out = Path(out)
    if (out / "dataset.json").is_file():
        return out
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (expected {root / spec.source} for {spec.key}); "
                        "pass --data-root PATH, or --data PREPARED for an already prepared folder")
    if not (root / spec.source).exists():
        raise DataError(f"{root / spec.source}: not found; the {spec.key} reference runs need it under --data-root")
    return run_preprocess(spec.preprocess_options(root, out, progress))


def list_text(data_root: str | Path = DEFAULT_DATA_ROOT) -> str:
    """``synthmed reference list``: the shipped reference configs and the datasets table."""
    from synthmed.config import load_config

    lines = ["reference configs (synthmed reference run NAME --work DIR):"]
    configs = reference_configs()
    width = max([len(n) for n in configs] + [len(k) for k in DATASETS]) + 2
    for name, path in configs.items():
        try:
            cfg = load_config(path)
            what = f"{cfg.model.name}, {cfg.train.iterations} iterations at batch {cfg.train.batch_size}"
        except ConfigError as e:
            what = f"invalid config: {e}"
        lines.append(f"  {name:<{width}}{what}")
    if not configs:
        lines.append(f"  (none shipped in {REFERENCE_DIR})")
    root = Path(data_root)
    lines.append(f"datasets (prepared from --data-root {root}):")
    for key, d in DATASETS.items():
        present = "present" if (root / d.source).exists() else "MISSING"
        size = "native size" if d.size is None else f"size {d.size}"
        lines.append(f"  {key:<{width}}{d.source} [{present}]: {d.description}; reader {d.reader}, {size}, "
                     f"label column {d.label_column}; test split: {d.test_split}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the measures
def floor_subsets(rows: np.ndarray, size: int, n_sets: int, seed: int = 0) -> list[np.ndarray]:
    """``n_sets`` seeded random subsets (without replacement, sorted) of ``rows``, each of ``min(size, len(rows))``.

    The floor of issue 13: real trainval images against the real test split, at the synthetic sets' size.
    """
    rng = np.random.default_rng(seed)
    k = min(int(size), len(rows))
    return [np.sort(rng.choice(np.asarray(rows), k, replace=False)) for _ in range(n_sets)]


def _p_at_least(flagged: int, m: int, h: int) -> float:
    """P(at least ``flagged`` of ``m`` samples fall below the smallest of ``h`` held-out DCRs) when all
    ``m + h`` DCRs are exchangeable: ``prod_{i < c} (m - i) / (m + h - i)``."""
    if flagged <= 0:
        return 1.0
    if flagged > m:
        return 0.0
    return float(math.exp(sum(math.log((m - i) / (m + h - i)) for i in range(flagged))))


def copy_flags(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> dict[str, Any]:
    """Flag synthetic samples that are closer to a training image than any held-out real image is.

    Rule: a sample is a *copy* when its pixel L2 distance to the nearest training image (its DCR) is
    below the smallest DCR of any held-out test image, i.e. :func:`synthmed.evaluate.privacy.dcr_analysis`
    at percentile 0.  Held-out images that are exact duplicates of a training image (DCR 0: leakage
    between the dataset's own splits, e.g. one BreastMNIST test image) are left out of the threshold
    (``n_holdout_duplicates``), else no sample could ever be flagged.  Without memorisation a sample's DCR
    is exchangeable with the H held-out ones, so each is flagged with probability ``1/(H+1)``: about
    ``M/(H+1)`` of M samples by chance, and no flag at all with probability only ``H/(H+M)``;
    ``p_value`` is the chance of at least the observed count.

    Args:
        synthetic: (M, 1, *spatial) synthetic images.  train: (N, 1, *spatial) the run's training images.
        holdout: (H, 1, *spatial) real images never trained on (the test split).

    Returns:
        JSON-ready numbers plus the arrays ``synthetic_dcr`` and ``nearest_train`` (M,) for the figure.
    """
    from synthmed.evaluate.privacy import dcr_analysis, nearest_neighbours

    _, hold_dcr = nearest_neighbours(holdout, train, metric="l2")
    unique = hold_dcr[:, 0] > 0
    if unique.any():
        holdout = holdout[unique]
    dcr = dcr_analysis(synthetic, train, holdout, metric="l2", percentile=0.0)
    m, h = int(dcr["n_synthetic"]), int(dcr["n_holdout"])
    flagged = list(dcr["flagged"])
    return {
        "rule": "pixel L2 distance to the nearest training image below the smallest such distance of any "
                "held-out test image",
        "metric": "l2 (pixels, intensities in [-1, 1])",
        "threshold": dcr["threshold"], "n_synthetic": m, "n_train": dcr["n_train"], "n_holdout": h,
        "n_holdout_duplicates": int((~unique).sum()) if unique.any() else 0,
        "n_flagged": len(flagged), "fraction_flagged": len(flagged) / m,
        "chance_rate": 1.0 / (h + 1), "expected_by_chance": m / (h + 1),
        "p_no_flag_without_memorisation": h / (h + m), "p_value": _p_at_least(len(flagged), m, h),
        "median_dcr_synthetic": dcr["median_synthetic"], "median_dcr_holdout": dcr["median_holdout"],
        "dcr_ratio": dcr["ratio"], "mannwhitney_p": dcr["p_value"],
        "flagged": flagged, "synthetic_dcr": dcr["synthetic_dcr"], "nearest_train": dcr["nearest_train"],
    }


def reconstruction_ratio(images: np.ndarray, reconstructions: np.ndarray, mean_image: np.ndarray) -> dict[str, float]:
    """Mean per-image reconstruction MSE over the mean per-image MSE of predicting ``mean_image``.

    0 is a perfect reconstruction, 1 is no better than the mean training image (issue 13's target:
    at most 0.5).  MSEs on [0, 1] intensities (:func:`synthmed.metrics.image.reconstruction_mse`; the
    ratio does not depend on the scale).
    """
    from synthmed.metrics.image import reconstruction_mse

    x = np.asarray(images, dtype=np.float32)
    rec = reconstruction_mse(np.asarray(reconstructions, dtype=np.float32), x)
    base = reconstruction_mse(np.ascontiguousarray(np.broadcast_to(np.asarray(mean_image, np.float32), x.shape)), x)
    return {"mse_reconstruction": float(rec.mean()), "mse_mean_image": float(base.mean()),
            "ratio": float(rec.mean() / base.mean()) if base.mean() > 0 else float("nan"), "n_images": len(x)}


def final_kl(run_dir: str | Path, last: int = KL_LAST_ROWS) -> float | None:
    """Mean of the last ``last`` logged ``loss_kl`` values of a run's ``metrics.csv`` (nats per image);
    None when the run logged none."""
    from synthmed.report.figures import read_metrics_csv

    try:
        _, cols = read_metrics_csv(Path(run_dir) / "metrics.csv")
    except (FileNotFoundError, ValueError):
        return None
    v = cols.get("loss_kl")
    v = v[np.isfinite(v)] if v is not None else np.zeros(0)
    return float(v[-last:].mean()) if len(v) else None


def training_seconds(run_dir: str | Path) -> dict[str, Any]:
    """Training wall time of a run.

    ``seconds``: the sum over ``metrics.csv`` rows of ``sec_per_it`` x the iterations since the previous
    timed row (the loop's own timing of its iterations, previews and checkpoints; correct across resumes,
    setup excluded).  ``seconds_run_json``: ``finished - started`` of ``run.json`` (includes setup, and any
    pause between an interruption and the resume).
    """
    from synthmed.report.figures import read_metrics_csv

    out: dict[str, Any] = {"seconds": None, "source": "metrics.csv sec_per_it x iterations per log interval",
                           "seconds_run_json": None}
    try:
        steps, cols = read_metrics_csv(Path(run_dir) / "metrics.csv")
        spi = cols.get("sec_per_it")
        if spi is not None:
            ok = np.isfinite(spi)
            st = steps[ok]
            out["seconds"] = float(np.sum(spi[ok] * np.diff(st, prepend=0.0)))
    except (FileNotFoundError, ValueError):
        pass
    try:
        meta = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
        t0, t1 = (datetime.strptime(meta[k], "%Y-%m-%dT%H:%M:%S") for k in ("started", "finished"))
        out["seconds_run_json"] = (t1 - t0).total_seconds()
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return out


def _target(name: str, value: float | None) -> dict[str, Any]:
    threshold, direction, what = TARGETS[name]
    if value is None or not math.isfinite(float(value)):
        return {"what": what, "value": value, "threshold": threshold, "direction": direction, "met": False,
                "shortfall": None}
    value = float(value)
    short = threshold - value if direction == ">=" else value - threshold
    return {"what": what, "value": value, "threshold": threshold, "direction": direction, "met": short <= 0,
            "shortfall": max(0.0, short)}


def check_targets(metrics: dict[str, float], fid_ratio: float | None, n_copies: int,
                  vae: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Issue 13's targets (:data:`TARGETS`): each with value, threshold, direction, met and shortfall
    (how far the value is from the threshold; 0 when met, None when the value is missing)."""
    out = {"precision": _target("precision", metrics.get("precision")),
           "recall": _target("recall", metrics.get("recall")),
           "fid_ratio": _target("fid_ratio", fid_ratio),
           "copies": _target("copies", n_copies)}
    if vae is not None:
        out["recon_ratio"] = _target("recon_ratio", vae.get("recon_ratio"))
        out["final_kl"] = _target("final_kl", vae.get("final_kl_nats"))
    return out


# ------------------------------------------------------------------------------------ picture
def _display(img: np.ndarray) -> np.ndarray:
    """A 2D image of one (1, *spatial) image; volumes by their middle axial slice."""
    from synthmed.data.preview import orthogonal_slices

    a = np.asarray(img, dtype=np.float32)[0]
    return a if a.ndim == 2 else orthogonal_slices(a, axial=[a.shape[2] // 2])[0]


def samples_figure(rows: list[tuple[str, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """A labelled grid PNG: one row per ``(label, (n, 1, *spatial) images)``, the label on the left.

    Intensities in [-1, 1] are drawn black to white; volumes show their middle axial slice.
    """
    from synthmed.report.figures import _new_figure, _save_figure

    ncols = max(1, max(len(imgs) for _, imgs in rows))
    fig = _new_figure(1.3 * ncols + 1.8, 1.3 * len(rows) + (0.4 if title else 0.0))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                ax.imshow(_display(imgs[c]), cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    return _save_figure(fig, path)


# ------------------------------------------------------------------------------------ the run
@dataclass
class ReferenceOptions:
    """Settings of :func:`run_reference`.

    Attributes:
        work: work folder (``prepared/``, ``runs/``).
        data_root: the shared public data (default ``../shared/data``).
        data: an existing prepared folder to use instead of preparing the dataset.
        overrides: ``KEY=VALUE`` config overrides (they change the run's config fingerprint).
        n_sets: synthetic sets and floor subsets, each the size of the test split.
        device: ``auto``, ``cpu`` or ``cuda`` for training, sampling and features.
        extractor_iterations: training iterations of the dataset's in-domain extractor (shared with
            ``synthmed evaluate``'s default of 1000).
        seed: seed of the extractor and of the floor subsets.
        batch_size: images per forward pass when sampling and extracting features.
        progress: progress bars.
    """

    work: Path
    data_root: Path = DEFAULT_DATA_ROOT
    data: Path | None = None
    overrides: list[str] = field(default_factory=list)
    n_sets: int = 5
    device: str = "auto"
    extractor_iterations: int = 1000
    seed: int = 0
    batch_size: int = 32
    progress: bool = True


def _metric_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in rows}


def _training_env_path(run_dir: Path) -> Path:
    return run_dir / "reference" / "training_env.json"


def _record_training_env(run_dir: Path, device: str) -> None:
    """Append this process's thread settings to ``reference/training_env.json`` (the loop does not record them)."""
    import torch

    path = _training_env_path(run_dir)
    sessions = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    sessions.append({"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                     "device": device, "cpu_count": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json_atomic(path, sessions)


def _threads(run_dir: Path) -> dict[str, Any]:
    import torch

    path = _training_env_path(run_dir)
    if path.is_file():
        sessions = json.loads(path.read_text(encoding="utf-8"))
        return {"torch_threads": sessions[-1]["torch_threads"], "OMP_NUM_THREADS": sessions[-1]["OMP_NUM_THREADS"],
                "source": "the reference process that trained the run", "sessions": sessions}
    return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "source": "this evaluating process (the run was trained elsewhere: its threads are unknown)"}


def _synthetic_labels(run: Any, ds: Any, test_labels: np.ndarray | None) -> np.ndarray | None:
    """Labels of every synthetic set of a single-label conditional run: the test split's own labels, so the
    sets have its class proportions; None for other runs."""
    if not run.conditional or run.conditioning.get("multi_label") or test_labels is None:
        return None
    names = [str(c) for c in run.conditioning.get("class_names") or []]
    if names[:len(ds.classes)] != list(ds.classes):
        raise DataError(f"{ds.root}: the run's classes {names} differ from the prepared data's {ds.classes}")
    return np.asarray(test_labels, dtype=np.int64)


def _generate(run: Any, seeds: list[int], labels: np.ndarray | None, batch_size: int) -> np.ndarray:
    import torch

    from synthmed.generate.sample import generate_batch

    parts = []
    for s in range(0, len(seeds), batch_size):
        lab = None if labels is None else torch.from_numpy(labels[s:s + batch_size])
        parts.append(generate_batch(run, seeds[s:s + batch_size], lab))
    return np.concatenate(parts).astype(np.float32)


def run_reference(name: str, opts: ReferenceOptions) -> dict[str, Any]:
    """Prepare, train (or resume, or keep) and evaluate the reference run ``name``; write its
    ``reference/result.json`` and ``reference/samples.png`` under ``WORK/runs/NAME``.

    Returns:
        The content of ``result.json``.
    """
    from synthmed.config import load_config
    from synthmed.protocol.candidates import ensure_run
    from synthmed.train.distributed import DistInfo, resolve_device

    if opts.n_sets < 1:
        raise ConfigError(f"--n-sets must be at least 1, got {opts.n_sets}")
    cfg_path, spec = resolve_reference(name)
    cfg = load_config(cfg_path, list(opts.overrides))
    work = Path(opts.work)
    prepared = Path(opts.data) if opts.data else prepare_dataset(spec, opts.data_root, work / "prepared" / spec.key,
                                                                 opts.progress)
    cfg.train.device = opts.device
    run_dir = work / "runs" / name
    state = ensure_run(cfg, prepared, run_dir, opts.progress)
    if not state["reused"]:
        _record_training_env(run_dir, str(resolve_device(opts.device, DistInfo())))
    result = evaluate_reference(name, run_dir, prepared, opts, spec, truncation=cfg.sample.truncation,
                                prior=cfg.sample.prior, prior_components=cfg.sample.prior_components)
    result["config"] = {"path": str(cfg_path), "sha256": sha256_file(cfg_path), "overrides": list(opts.overrides)}
    result["training"].update(trained_in_this_call=not state["reused"], status=state.get("status"))
    write_json_atomic(run_dir / "reference" / "result.json", result)
    return result


def evaluate_reference(name: str, run_dir: Path, prepared: Path, opts: ReferenceOptions,
                       spec: ReferenceDataset, truncation: float | None = None, prior: str = "standard",
                       prior_components: int = 10) -> dict[str, Any]:
    """Every number of a reference run (see the module docstring); draws ``samples.png`` (and ``copies.png``
    when samples are flagged) into ``RUN/reference/``.  The caller writes ``result.json``.

    Args:
        truncation: the reference config's ``sample.truncation`` (the truncation trick,
            :func:`synthmed.generate.sample.truncated_latent`).  Every number is of the truncated samples;
            the feature metrics of the same seeds without truncation are kept beside them
            (``metrics_untruncated``), so the price in recall is on the page.
        prior, prior_components: the reference config's ``sample.prior`` / ``sample.prior_components``.
            With ``gmm`` (ex-post density estimation, :mod:`synthmed.generate.prior`, fitted to the codes of
            the run's training images in ``prepared``) every number is of the gmm samples, and the feature
            metrics of the same seeds drawn from N(0, I) are kept beside them (``metrics_standard_prior``).
    """
    from synthmed.data.prepared import load_prepared
    from synthmed.evaluate.fidelity import FidelityOptions, feature_metric_rows, features, make_extractor
    from synthmed.evaluate.runner import Stages
    from synthmed.features.cache import array_sha256
    from synthmed.generate.prior import training_rows
    from synthmed.generate.sample import load_run, training_warnings
    from synthmed.train.distributed import DistInfo, resolve_device

    stage = Stages()
    ref = run_dir / "reference"
    device = str(resolve_device(opts.device, DistInfo()))
    fo = FidelityOptions(extractor_iterations=opts.extractor_iterations, seed=opts.seed, batch_size=opts.batch_size,
                         device=device, progress=opts.progress)
    need = max(fo.k_pr, fo.k_dc) + 1
    with stage("load"):
        ds = load_prepared(prepared)
        test, trainval = ds.indices("test"), ds.indices("trainval")
        n = len(test)
        if n < need or len(trainval) < need:
            raise DataError(f"{ds.root}: {n} test and {len(trainval)} trainval images; precision/recall (k={fo.k_pr}) "
                            f"and density/coverage (k={fo.k_dc}) need at least {need} in each")
        test_img = np.asarray(ds.images[test], dtype=np.float32)
        test_labels = None if ds.labels is None else ds.labels[test]
        run = load_run(run_dir, device=device)
        run.truncation = truncation
        run.prior, run.prior_components, run.prior_data = prior, prior_components, prepared
    if prior != "standard":
        from synthmed.generate.prior import run_prior

        with stage("prior fit"):
            run_prior(run)
    with stage("extractor"):
        extractor = make_extractor(ds, fo)
    with stage("features: real"):
        real_all = features(extractor, ds.images, ds.root / "features", f"{array_sha256(ds.images)[:24]}-all", fo)
        test_feats = real_all[test]
    set_labels = _synthetic_labels(run, ds, test_labels)

    def synthetic_sets() -> list[np.ndarray]:  # set k holds seeds k*n ... (k+1)*n - 1
        return [_generate(run, list(range(k * n, (k + 1) * n)), set_labels, opts.batch_size)
                for k in range(opts.n_sets)]

    def synthetic_features(images: list[np.ndarray]) -> list[np.ndarray]:
        return [features(extractor, s, ref / "features", f"synthetic-{array_sha256(s)[:24]}", fo) for s in images]

    with stage("synthetic sets"):
        sets = synthetic_sets()
    with stage("features: synthetic"):
        syn_feats = synthetic_features(sets)
    with stage("feature metrics"):
        metrics = feature_metric_rows(test_feats, syn_feats, fo)
        subsets = floor_subsets(trainval, n, opts.n_sets, opts.seed)
        floor = feature_metric_rows(test_feats, [real_all[r] for r in subsets], fo)
        mv, fv = _metric_values(metrics), _metric_values(floor)
        fid_ratio = mv["fid"] / fv["fid"] if fv["fid"] > 0 else None
        per_class = _per_class(name, run_dir, ds, test_feats, test_labels, sets, syn_feats, set_labels, fo, need)
    def same_seeds_with(**setting: Any) -> list[dict[str, Any]]:
        """Feature metrics of the same seeds sampled with ``setting`` (LoadedRun fields) changed."""
        saved = {k: getattr(run, k) for k in setting}
        for k, v in setting.items():
            setattr(run, k, v)
        try:
            return feature_metric_rows(test_feats, synthetic_features(synthetic_sets()), fo)
        finally:
            for k, v in saved.items():
                setattr(run, k, v)

    untruncated, standard_prior = None, None
    if truncation is not None:
        with stage("untruncated sets"):
            untruncated = same_seeds_with(truncation=None)
    if prior != "standard":
        with stage("standard-prior sets"):
            standard_prior = same_seeds_with(prior="standard")
    with stage("memorisation"):
        train_rows = training_rows(ds, run.data)
        hold_rows = np.setdiff1d(test, train_rows)
        train_img = np.asarray(ds.images[train_rows], dtype=np.float32)
        every = np.concatenate(sets)
        memo = copy_flags(every, train_img, np.asarray(ds.images[hold_rows], dtype=np.float32))
        memo.update(_copies_figure(memo, every, train_img, train_rows, n, ref))
        del every
    vae, recon = None, None
    if run.family.has_encoder and run.cfg.model.name in VAE_MODELS:
        with stage("reconstruction"):
            from synthmed.evaluate.reconstruction import reconstruct

            recon = reconstruct(run, test_img, batch_size=opts.batch_size, device=device,
                                labels=test_labels if run.conditional else None)
            rr = reconstruction_ratio(test_img, recon, train_img.mean(axis=0))
            vae = {"recon_ratio": rr.pop("ratio"), **rr, "final_kl_nats": final_kl(run_dir),
                   "final_kl_rows": KL_LAST_ROWS, "kl_collapse_threshold_nats": KL_COLLAPSE_NATS}
    with stage("picture"):
        picture = samples_figure(_picture_rows(ds, test_img, test_labels, sets[0], set_labels, recon),
                                 ref / "samples.png", title=f"{name}: real test images and samples")
    targets = check_targets(mv, fid_ratio, memo["n_flagged"], vae)
    return {
        "name": name, "dataset": spec.key, "model": run.cfg.model.name,
        "prepared": {"path": str(ds.root.resolve()), "images_sha256": ds.meta.get("images_sha256"),
                     "n_test": n, "n_trainval": len(trainval), "test_split": spec.test_split},
        "iterations": {"configured": run.cfg.train.iterations, "trained": run.step},
        "checkpoint_sha256": run.checkpoint_sha256, "sampled_ema": run.ema, "truncation": truncation,
        "prior": prior, "prior_components": prior_components if prior != "standard" else None,
        "prior_fit": run.latent_prior.meta if run.latent_prior is not None else None,
        "training": {**training_seconds(run_dir), "batch_size": run.cfg.train.batch_size},
        "threads": _threads(run_dir),
        "device": device,
        "feature_space": extractor.describe(),
        "n_sets": opts.n_sets, "set_size": n,
        "metrics": metrics,
        "metrics_untruncated": untruncated,
        "metrics_standard_prior": standard_prior,
        "floor": {"what": f"{opts.n_sets} seeded random subsets (seed {opts.seed}) of {len(subsets[0])} real trainval "
                          "images against the same test features", "seed": opts.seed, "metrics": floor},
        "fid_ratio": fid_ratio,
        "per_class": per_class,
        "memorisation": {k: v for k, v in memo.items() if k not in ("synthetic_dcr", "nearest_train", "flagged")},
        "vae": vae,
        "warnings": training_warnings(run_dir),
        "targets": targets,
        "targets_met": sum(t["met"] for t in targets.values()), "targets_total": len(targets),
        "samples_png": str(picture.relative_to(ref)),
        "evaluation_seconds": {"total": round(sum(stage.seconds.values()), 2),
                               **{k: round(v, 2) for k, v in stage.seconds.items()}},
    }


def _per_class(name: str, run_dir: Path, ds: Any, test_feats: np.ndarray, test_labels: np.ndarray | None,
               sets: list[np.ndarray], syn_feats: list[np.ndarray], set_labels: np.ndarray | None, fo: Any,
               need: int) -> dict[str, Any] | None:
    """Per-class feature metrics of a conditional run (class c's samples vs class c's test images), with
    the classes skipped and why (:func:`synthmed.evaluate.runner._per_class_metrics`)."""
    from synthmed.evaluate.runner import Source, _per_class_metrics
    from synthmed.evaluate.synthetic import SyntheticSet

    if set_labels is None:
        return None
    src = Source(name, run_dir, SyntheticSet(sets[0], set_labels), syn_feats, [len(s) for s in sets],
                 [set_labels] * len(sets))
    per = _per_class_metrics(ds, test_feats, test_labels, src, fo, need)
    if per is None:
        return None
    rows, skipped = per
    return {"metrics": rows, "skipped": skipped}


def _copies_figure(memo: dict[str, Any], synthetic: np.ndarray, train_img: np.ndarray, train_rows: np.ndarray,
                   set_size: int, ref: Path) -> dict[str, Any]:
    """The flagged samples (set, index in set, seed, nearest training row, distance; at most 100 listed)
    and ``copies.png`` of the closest ones beside their nearest training images, when any are flagged."""
    from synthmed.evaluate.privacy import nearest_neighbour_figure

    flagged = sorted(memo["flagged"], key=lambda i: float(memo["synthetic_dcr"][i]))
    listed = [{"set": i // set_size, "index": i % set_size, "seed": i,
               "nearest_train_row": int(train_rows[memo["nearest_train"][i]]),
               "distance": float(memo["synthetic_dcr"][i])} for i in flagged[:100]]
    out: dict[str, Any] = {"flagged_samples": listed, "copies_png": None}
    (ref / "copies.png").unlink(missing_ok=True)
    if flagged:
        nearest_neighbour_figure(synthetic, train_img, memo["nearest_train"], ref / "copies.png",
                                 distances=memo["synthetic_dcr"], select=flagged[:N_SHOWN])
        out["copies_png"] = "copies.png"
    return out


def _picture_rows(ds: Any, test_img: np.ndarray, test_labels: np.ndarray | None, synthetic: np.ndarray,
                  set_labels: np.ndarray | None, recon: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    """Rows of ``samples.png``: real test, synthetic [, reconstructed], per class for conditional runs."""
    groups: list[tuple[str, np.ndarray, np.ndarray]] = [("", np.arange(len(test_img)), np.arange(len(synthetic)))]
    if set_labels is not None and test_labels is not None:
        groups = [(f" {ds.classes[c] if c < len(ds.classes) else c}", np.flatnonzero(test_labels == c),
                   np.flatnonzero(set_labels == c)) for c in np.unique(test_labels)]
    rows: list[tuple[str, np.ndarray]] = []
    for cls, ir, isyn in groups:
        ir, isyn = ir[:N_SHOWN], isyn[:N_SHOWN]
        rows += [(f"real{cls}\n(test)", test_img[ir]), (f"synthetic{cls}", synthetic[isyn])]
        if recon is not None:
            rows.append((f"reconstructed{cls}\n(of the real)", recon[ir]))
    return rows


# ------------------------------------------------------------------------------------ text
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{digits}g}"


def _with_ci(row: dict[str, Any]) -> str:
    ci = f" [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row.get("ci_low") is not None else ""
    return f"{_fmt(row['value'])}{ci}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _target_note(t: dict[str, Any] | None) -> str:
    if t is None:
        return ""
    met = "met" if t["met"] else ("NOT met" + (f", short by {_fmt(t['shortfall'])}" if t["shortfall"] else ""))
    return f"  (target {t['direction']} {_fmt(t['threshold'])}: {met})"


def _headline(rows: list[dict[str, Any]]) -> str:
    """``fid X, precision X, recall X, density X, coverage X`` of feature-metric rows."""
    values = _metric_values(rows)
    return ", ".join(f"{m} {_fmt(values[m])}" for m in ("fid", "precision", "recall", "density", "coverage"))


def summary_text(result: dict[str, Any]) -> str:
    """The short human summary ``synthmed reference run`` prints: one line per metric."""
    tr, th, memo = result["training"], result["threads"], result["memorisation"]
    floor = {r["metric"]: r for r in result["floor"]["metrics"]}
    targets = result["targets"]
    lines = [f"reference run {result['name']}: {result['model']} on {result['dataset']}, "
             f"{result['iterations']['trained']} iterations, training {_duration(tr['seconds'])} (metrics.csv), "
             f"{th['torch_threads']} thread(s), device {result['device']}",
             f"{result['n_sets']} synthetic sets of {result['set_size']} vs the real test split; floor = real trainval "
             f"subsets of the same size; feature space {result['feature_space'].get('name')}"]
    for r in result["metrics"]:
        m = r["metric"]
        if m not in ("fid", "kid", "precision", "recall", "density", "coverage"):
            continue
        lines.append(f"  {m:<10} {_with_ci(r):<28} floor {_with_ci(floor[m]):<28}{_target_note(targets.get(m))}")
    lines.append(f"  FID ratio  {_fmt(result['fid_ratio'])}{_target_note(targets['fid_ratio'])}")
    if result.get("metrics_untruncated"):
        lines.append(f"  sampled with truncation psi = {result['truncation']}; without it the same seeds give "
                     + _headline(result["metrics_untruncated"]))
    if result.get("metrics_standard_prior"):
        lines.append(f"  sampled from the gmm prior ({result['prior_components']} components, ex-post density estimation); "
                     "from N(0, I) the same seeds give " + _headline(result["metrics_standard_prior"]))
    lines.append(f"  copies     {memo['n_flagged']} of {memo['n_synthetic']} flagged "
                 f"({100 * memo['fraction_flagged']:.2g}%; by chance ~{memo['expected_by_chance']:.2g}, "
                 f"P(>= observed) = {memo['p_value']:.2g}){_target_note(targets['copies'])}")
    dup = memo.get("n_holdout_duplicates") or 0
    lines.append(f"             rule: DCR < {_fmt(memo['threshold'])}, the smallest pixel distance of any of the "
                 f"{memo['n_holdout']} test images to the training set (chance rate 1/(H+1) = {memo['chance_rate']:.2g})"
                 + (f"; {dup} test image(s) identical to a training image left out" if dup else ""))
    if result.get("vae"):
        v = result["vae"]
        lines.append(f"  recon      ratio {_fmt(v['recon_ratio'])} (MSE {_fmt(v['mse_reconstruction'])} vs mean image "
                     f"{_fmt(v['mse_mean_image'])}){_target_note(targets['recon_ratio'])}")
        lines.append(f"  final KL   {_fmt(v['final_kl_nats'])} nats{_target_note(targets['final_kl'])}")
    if result.get("per_class"):
        for cls, rows in result["per_class"]["metrics"].items():
            vals = _metric_values(rows)
            lines.append(f"  class {cls}: " + ", ".join(f"{m} {_fmt(vals[m])}" for m in ("fid", "precision", "recall")))
        for cls, why in result["per_class"]["skipped"].items():
            lines.append(f"  class {cls}: skipped ({why})")
    for w in result.get("warnings") or []:
        lines.append(f"  training warning: {w.get('message', w) if isinstance(w, dict) else w}")
    lines.append(f"targets met: {result['targets_met']}/{result['targets_total']}"
                 + "".join(f"; {k} missed" for k, t in targets.items() if not t["met"]))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ table
def find_results(dirs: list[str | Path]) -> list[Path]:
    """Every ``reference/result.json`` under the given work folders (a result.json path is taken as is)."""
    found: list[Path] = []
    for d in map(Path, dirs):
        if d.is_file() and d.name == "result.json":
            found.append(d)
        elif d.is_dir():
            found += sorted(p for p in d.rglob("result.json") if p.parent.name == "reference")
        else:
            raise DataError(f"{d}: no such work folder")
    return found


TABLE_COLUMNS = ["run", "dataset", "model", "iterations", "wall time", "threads", "FID (floor)", "FID ratio", "KID",
                 "precision", "recall", "density", "coverage", "copies flagged", "VAE recon ratio / KL",
                 "targets met", "samples"]


def table_row(result: dict[str, Any], link: str) -> list[str]:
    """One Markdown table row of a ``result.json`` (cells in :data:`TABLE_COLUMNS` order)."""
    mv, fv = _metric_values(result["metrics"]), _metric_values(result["floor"]["metrics"])
    memo, v = result["memorisation"], result.get("vae")
    missed = [k for k, t in result["targets"].items() if not t["met"]]
    return [_run_label(result), result["dataset"], result["model"],
            str(result["iterations"]["trained"]),
            _duration(result["training"]["seconds"]), str(result["threads"]["torch_threads"]),
            f"{_fmt(mv['fid'])} ({_fmt(fv['fid'])})", _fmt(result["fid_ratio"], 2), _fmt(mv["kid"], 2),
            _fmt(mv["precision"], 2), _fmt(mv["recall"], 2), _fmt(mv["density"], 2), _fmt(mv["coverage"], 2),
            f"{memo['n_flagged']} / {memo['n_synthetic']} (chance ~{memo['expected_by_chance']:.2g})",
            "–" if not v else f"{_fmt(v['recon_ratio'], 2)} / {_fmt(v['final_kl_nats'], 3)} nats",
            f"{result['targets_met']}/{result['targets_total']}" + (f" (missed: {', '.join(missed)})" if missed else ""),
            f"[samples]({link})"]


def _run_label(result: dict[str, Any]) -> str:
    """The run's name with how it was sampled when not the default: ``NAME (truncation 0.9, gmm prior)``."""
    how = [f"truncation {result['truncation']}"] if result.get("truncation") is not None else []
    if result.get("prior", "standard") != "standard":
        how.append(f"{result['prior']} prior")
    return result["name"] + (f" ({', '.join(how)})" if how else "")


def results_table(dirs: list[str | Path], out: str | Path | None = None) -> str:
    """``synthmed reference table``: a Markdown table with one row per ``result.json`` found under ``dirs``;
    links to ``samples.png`` are relative to ``out``'s folder (to the working directory without ``out``).
    Writes ``out`` atomically when given; returns the table."""
    paths = find_results(dirs)
    if not paths:
        raise DataError(f"no reference/result.json under {', '.join(map(str, dirs))}; run `synthmed reference run` first")
    base = Path(out).resolve().parent if out else Path.cwd()
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for p in paths:
        try:
            result = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: unreadable result ({e})") from None
        link = Path(os.path.relpath(p.parent.resolve() / result.get("samples_png", "samples.png"), base)).as_posix()
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_row(result, link)) + " |")
    text = "\n".join(lines) + "\n"
    if out:
        write_text_atomic(out, text)
    return text
