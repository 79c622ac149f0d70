"""``synthmed evaluate``: every measure of a synthetic cohort's worth, in one report.

:func:`evaluate` compares one or more synthetic sources (folders written by ``synthmed sample``, or
run folders sampled on the fly) with a prepared real dataset and writes ``report.html`` (opens from
disk, pictures embedded) and ``metrics.json`` into the output folder.  The stages, each timed:

1. real images (``--split``) and their labels;
2. synthetic sets: a run folder gives ``n_sets`` sets the size of the real set (paper 000, "Evaluation
   of image quality": ten synthetic sets per model, so every metric has a 95% CI); a sampled folder is
   cut into as many whole sets of that size as it holds;
3. the feature extractor (``indomain-ae`` trained on the training split when no weights are given,
   or MedicalNet / Inception / VGG / ``planes:`` 2.5D with local weights);
4. features of every set (real features cached per dataset hash and extractor);
5. FID, KID, MMD (RBF with one kernel width from the real features), precision/recall,
   density/coverage with bootstrap 95% intervals over real and synthetic images together
   (:mod:`synthmed.evaluate.fidelity`), beside the floor (real trainval images against the real test
   split), and paper 002 Sec. 3.3 image-space metrics; when the real
   rows and a source's sets carry labels (a sampled folder with a ``label`` column, or a conditional
   run folder whose classes match the real data's), the same feature metrics per class as well
   (paper 000 Fig. 4), ``results["sources"][NAME]["per_class_feature_metrics"]``;
6. privacy (paper 004 S.6, :mod:`synthmed.evaluate.privacy_report`): every sample of every set audited
   for near-copies of training images under flips and shifts, the fraction flagged as the headline, the
   flagged samples pictured beside their training images; DCR and membership inference second;
7. PCA (paper 000 Figs. S7/S8) and MDS (paper 001 Fig. 4) of real and synthetic features per class;
8. slice grids (paper 000 axial slices 16..48 of 64, and the three planes), training curves of a run;
9. the report, and a headless-Chromium screenshot of it when Chromium is installed.

The real set for fidelity defaults to the test split (``split="test"``): paper 000 compared each model
with all 193 subjects, but a reference holding the training images ranks a source that copies them
first.  Privacy always uses the generator's own training subjects (from the run's ``data.json``, also for
a sampled folder whose run is found) against every subject it never saw, independent of ``split``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data.prepared import PreparedDataset, load_prepared
from synthmed.errors import ConfigError, DataError
from synthmed.evaluate.fidelity import FidelityOptions, feature_metric_rows, image_metric_rows, make_extractor
from synthmed.evaluate.synthetic import SyntheticSet, is_run_folder, load_sampled_folder, sample_run
from synthmed.features.cache import array_sha256, cached_features
from synthmed.io_utils import folder_lock, link_tree, staged_contents
from synthmed.metrics.feature import median_heuristic
from synthmed.report.html import Estimate, Figure, KeyValues, Report, Table, Text

log = logging.getLogger(__name__)

#: metrics whose better value is the lower one (the others: higher is better, or no direction).
LOWER_IS_BETTER = {"fid", "kid", "mmd_rbf", "mmd_linear"}


@dataclass
class EvaluateOptions:
    """Settings of :func:`evaluate`.

    Attributes:
        split: real rows for fidelity: ``test`` (default: images no generator trained on; a dataset without
            a split file falls back to ``all``), ``all`` (as paper 000: the reference then holds the
            training images, and a source that copies them ranks first), ``trainval``, ``train``, ``val``.
        fold: fold for ``train``/``val``.
        n_sets: synthetic sets drawn from a run folder (paper 000: 10).
        set_size: images per synthetic set (default: the number of real images, as paper 000).
        max_real: use a seeded random subset of at most this many real images of the split.
        fidelity: extractor and metric settings.
        image_metrics: paper 002 image-space metrics.
        privacy: nearest neighbours, DCR and membership inference.
        ssim_queries: synthetic images whose SSIM-nearest training image is searched (SSIM on
            volumes is costly; see :class:`synthmed.evaluate.privacy.SSIMConfig`), 0 to skip.
        ssim_candidates: L2-nearest training images re-ranked by SSIM per query.
        embeddings: methods for the real/synthetic embedding plots (``pca``, ``mds``).
        mds_max_points: points per set kept for MDS (its cost is quadratic).
        reconstruct: reconstruction MSE and sharpness for run folders whose model has an encoder.
        inception_weights: a 2D classifier's weights for the Inception score on the three middle planes.
        screenshot: render the report in headless Chromium when available.
        device, seed, batch_size, progress: as everywhere.
    """

    split: str = "test"
    fold: int = 0
    n_sets: int = 10
    set_size: int | None = None
    max_real: int | None = None
    fidelity: FidelityOptions = field(default_factory=FidelityOptions)
    image_metrics: bool = True
    privacy: bool = True
    ssim_queries: int = 32
    ssim_candidates: int = 4
    embeddings: tuple[str, ...] = ("pca", "mds")
    mds_max_points: int = 500
    reconstruct: bool = False
    inception_weights: str | None = None
    screenshot: bool = True
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 8
    progress: bool = True


@dataclass
class Stages:
    """Wall time (s) per stage and the process's peak resident memory (MB) after each."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("evaluate: %s ...", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.peak_mb[name] = peak_memory_mb()


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far (MB; ``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024**2 if sys.platform == "darwin" else rss / 1024


@dataclass
class Source:
    """One synthetic source: its name, its first set (kept for image metrics and figures), the features
    of all of its sets and their labels (None for an unlabelled set), how many images it held and how many
    of them no whole set could take (audited for privacy all the same), and its privacy analyses."""

    name: str
    path: Path
    first: SyntheticSet
    features: list[np.ndarray]
    set_sizes: list[int]
    labels: list[np.ndarray | None] = field(default_factory=list)
    n_images: int = 0
    n_dropped: int = 0
    privacy: Any = None


def _run_default_labels(path: Path, ds: PreparedDataset) -> Any:
    """For a single-label conditional run folder whose classes match ``ds``'s: a function seeds -> the
    labels :func:`synthmed.generate.sample.generate_batch` gives them by default (seed ``s``: class
    ``s mod K``); None otherwise (unconditional, multi-label, or other classes)."""
    from synthmed.train.loop import preview_labels

    try:
        cond = json.loads((path / "data.json").read_text(encoding="utf-8")).get("conditioning") or {}
    except (OSError, json.JSONDecodeError):
        return None
    if cond.get("method") not in ("frozen-classifier", "ac", "projection", "cvae") or cond.get("multi_label"):
        return None
    names = [str(c) for c in cond.get("class_names") or []]
    if ds.classes and names[:len(ds.classes)] != list(ds.classes):
        log.warning("%s: the run's classes %s differ from %s's %s; no per-class metrics", path, names, ds.root,
                    ds.classes)
        return None
    return lambda seeds: np.array([int(preview_labels(cond, 1, int(sd))[0]) for sd in seeds], dtype=np.int64)


def _source_sets(path: Path, n_sets: int, set_size: int, opts: EvaluateOptions,
                 ds: PreparedDataset | None = None) -> Iterator[tuple[SyntheticSet, bool]]:
    """The synthetic sets of one source, one at a time (at most one set is held in memory), each with
    whether it is a whole set for the fidelity metrics: the images of a sampled folder that no whole set
    takes come last, marked False (they are audited for privacy, not compared)."""
    if is_run_folder(path):
        labeller = _run_default_labels(path, ds) if ds is not None else None
        for k in range(n_sets):
            s = sample_run(path, set_size, seed=opts.seed + k * set_size, device=opts.device,
                           batch_size=opts.batch_size)
            if labeller is not None and s.labels is None and s.provenance.get("seeds"):
                s = dataclasses.replace(s, labels=labeller(s.provenance["seeds"]))
            yield s, True
        return
    whole = load_sampled_folder(path)
    m = len(whole.images)
    n = max(1, min(n_sets, m // set_size)) if m >= set_size else 1
    size = set_size if m >= set_size else m
    if m < set_size:
        log.warning("%s holds %d images, fewer than the %d real ones: one smaller set", path, m, set_size)
    for k in range(n + 1):
        sl = slice(k * size, (k + 1) * size if k < n else m)
        if sl.start >= m:
            break
        labels = None if whole.labels is None else whole.labels[sl]
        ids = None if whole.ids is None else whole.ids[sl]
        yield SyntheticSet(whole.images[sl], labels, {**whole.provenance, "set": k, "n": sl.stop - sl.start},
                           whole.train_subject_ids, ids), k < n


def _check_shape(ds: PreparedDataset, s: SyntheticSet, path: Path) -> None:
    want = (1, *ds.shape)
    if tuple(s.images.shape[1:]) != want:
        raise DataError(f"{path}: synthetic images have shape {tuple(s.images.shape[1:])}, the real data "
                        f"{ds.root} has {want}; sample at the prepared size")


def _load_source(name: str, path: Path, ds: PreparedDataset, extractor: Any, real_all: np.ndarray, set_size: int,
                 out: Path, opts: EvaluateOptions, stage: Stages) -> Source:
    """Every set of one source: features of each (cached), and every sample audited for privacy."""
    from synthmed.evaluate.privacy_report import PrivacyStream

    src: Source | None = None
    sets = _source_sets(path, opts.n_sets, set_size, opts, ds)
    while True:
        with stage("synthetic sets (load or generate)"):
            s, whole = next(sets, (None, False))
            if s is not None:
                _check_shape(ds, s, path)
        if s is None:
            break
        with stage("features: synthetic"):
            f = cached_features(extractor, s.images, out / "features", dataset_key=f"{name}-{array_sha256(s.images)[:24]}",
                                batch_size=opts.batch_size, device=opts.device, progress=opts.progress)
        if src is None:
            src = Source(name, path, s, [], [])
            if opts.privacy:
                with stage("privacy"):
                    src.privacy = PrivacyStream(ds, s, real_all, device=opts.device)
        if whole:
            src.features.append(f)
            src.set_sizes.append(len(s.images))
            src.labels.append(s.labels)
        else:
            src.n_dropped += len(s.images)
        src.n_images += len(s.images)
        if src.privacy is not None:
            with stage("privacy"):
                src.privacy.add(s, f)
    assert src is not None
    if src.n_dropped:
        log.warning("%s: %d of its %d images form no whole set of %d: audited for privacy, not in the fidelity "
                    "metrics", path, src.n_dropped, src.n_images, set_size)
    return src


#: the name of the floor's row in the fidelity table
FLOOR = "floor: real trainval"


def _floor(ds: PreparedDataset, split: str, real_all: np.ndarray, real_feats: np.ndarray, set_size: int,
           fo: FidelityOptions, bandwidth: float, opts: EvaluateOptions,
           results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What "as good as real" looks like (DESIGN.md Sec. 9): seeded random subsets of the real trainval
    images, the synthetic sets' size, against the same real test features, with the same kernel; only
    when the reference is the test split."""
    from synthmed.reference import floor_subsets

    if split != "test":
        return {}
    trainval = ds.indices("trainval")
    if len(trainval) < max(fo.k_pr, fo.k_dc) + 1:
        return {}
    subsets = floor_subsets(trainval, set_size, max(1, opts.n_sets), opts.seed)
    rows = feature_metric_rows(real_feats, [real_all[r] for r in subsets], fo, bandwidth)
    results["floor"] = {"what": f"{len(subsets)} seeded random subsets of {len(subsets[0])} real trainval images "
                                "against the same real test features", "feature_metrics": rows}
    return {FLOOR: rows}


def _fidelity_caption(space: dict[str, Any], fo: FidelityOptions, split: str, floor: dict[str, Any],
                      rows_by_source: dict[str, list[dict[str, Any]]]) -> str:
    from synthmed.evaluate.fidelity import PRECISION_CAVEAT

    notes = sorted({r["note"] for rs in rows_by_source.values() for r in rs if r.get("note")})
    n_boot = next(iter(rows_by_source.values()))[0]["n_boot"]
    ref = ("Reference: the real test split (images no generator trained on); first row, the floor: real trainval "
           "images against it at the synthetic sets' size, what 'as good as real' reads here." if floor else
           f"Reference: the real {split!r} images" + (" (it contains the training images, so a source that copies "
                                                      "them ranks first; the default --split test avoids this)."
                                                      if split in ("all", "trainval", "train") else "."))
    return (f"Feature space: {space['name']} ({space['feature_dim']}-d, weights {str(space['weights_sha256'])[:16]}). "
            f"{ref} Each value is the mean over synthetic sets (paper 000: ten sets the size of the real set), with a "
            f"95% interval from {n_boot} bootstrap replicates resampling the real and the synthetic images together "
            f"(exists with one set; clipped to each metric's range). Rank by KID (unbiased MMD^2 with a cubic "
            f"polynomial kernel, Bińkowski et al. 2018, averaged over 100 subsets): FID is biased upwards at small "
            f"sample sizes and can rank a noisy set above a clean one. MMD RBF: one kernel width for every row, the "
            f"median distance between real features. Precision/recall k = {fo.k_pr} (Kynkäänniemi et al.), "
            f"density/coverage k = {fo.k_dc} (Naeem et al.). {PRECISION_CAVEAT}." +
            "".join(f" FID: {n}." for n in notes))


def _metric_cells(rows: list[dict[str, Any]], metrics: list[str]) -> list[Any]:
    by = {r["metric"]: r for r in rows}
    cells: list[Any] = [by[metrics[0]]["n_sets"]]
    for m in metrics:
        r = by[m]
        cells.append(Estimate(r["value"], r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else r["value"])
    return cells


def _metric_columns(metrics: list[str]) -> list[str]:
    return ["sets"] + [m + (" (lower better)" if m in LOWER_IS_BETTER else "") for m in metrics]


def _feature_table(rows_by_source: dict[str, list[dict[str, Any]]]) -> Table:
    names = list(rows_by_source)
    metrics = [r["metric"] for r in rows_by_source[names[0]]]
    cells = [[src, *_metric_cells(rows_by_source[src], metrics)] for src in names]
    return Table(["source", *_metric_columns(metrics)], cells)


def _class_name(ds: PreparedDataset, c: int) -> str:
    return ds.classes[c] if 0 <= c < len(ds.classes) else str(c)


def _per_class_metrics(ds: PreparedDataset, real_feats: np.ndarray, real_labels: np.ndarray | None, src: Source,
                       fo: FidelityOptions, need: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]] | None:
    """Feature metrics of every class present in the real rows and the source, each set's images of the
    class against the real features of the class; and the classes skipped, with why.  None when the real
    rows or any synthetic set carry no labels."""
    if real_labels is None or not src.labels or any(lab is None for lab in src.labels):
        return None
    rows: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    syn_classes = set().union(*(set(np.asarray(lab).tolist()) for lab in src.labels if lab is not None))
    for c in sorted(set(np.asarray(real_labels).tolist()) & syn_classes):
        name = _class_name(ds, int(c))
        n_real = int(np.sum(real_labels == c))
        n_sets = [int(np.sum(lab == c)) for lab in src.labels if lab is not None]
        if n_real < need or min(n_sets) < need:
            skipped[name] = (f"{n_real} real image(s) and {min(n_sets)} to {max(n_sets)} synthetic image(s) per set; "
                             f"precision/recall (k={fo.k_pr}) and density/coverage (k={fo.k_dc}) need at least "
                             f"{need} in each")
            continue
        fake = [f[lab == c] for f, lab in zip(src.features, src.labels, strict=True) if lab is not None]
        rows[name] = feature_metric_rows(real_feats[real_labels == c], fake, fo)
    for c in sorted(set(np.asarray(real_labels).tolist()) - syn_classes):
        skipped[_class_name(ds, int(c))] = "no synthetic image of this class"
    return rows, skipped


def _names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(paths):
            raise ConfigError(f"got {len(names)} names for {len(paths)} synthetic sources")
        return list(names)
    out, seen = [], set()
    for p in paths:
        base = p.name if p.name not in ("", ".") else p.resolve().name
        n, k = base, 2
        while n in seen:
            n, k = f"{base}-{k}", k + 1
        seen.add(n)
        out.append(n)
    return out


def evaluate(real: str | Path, synthetic: str | Path | Sequence[str | Path], out: str | Path,
             opts: EvaluateOptions | None = None, names: Sequence[str] | None = None) -> Path:
    """Evaluate synthetic cohorts against a prepared real dataset; write ``report.html`` + ``metrics.json``.

    Args:
        real: prepared dataset folder (``synthmed preprocess`` output).
        synthetic: one or more sampled folders or run folders (several: compared side by side).
        out: report folder (created; the report files are written atomically).
        opts: settings; see :class:`EvaluateOptions`.
        names: display names of the synthetic sources (default: folder names).

    Returns:
        The path of ``report.html``.
    """
    # one writer per report folder; removes the temporaries (and the staging folder) a killed evaluation left
    out = Path(out)
    with folder_lock(out, subfolders=("figures", "features")):
        # everything is written into a staging folder and published only when complete: a failure leaves
        # the folder as it was (an older report stays whole); the feature cache is carried over
        with staged_contents(out, owned=REPORT_ENTRIES, last=("metrics.json", "report.html")) as tmp:
            link_tree(out / "features", tmp / "features")
            html = _evaluate(real, synthetic, tmp, opts, names)
        return out / html.relative_to(tmp)


#: what ``evaluate`` writes into a report folder (replaced as a whole by the next evaluation)
REPORT_ENTRIES = ("report.html", "metrics.json", "report.png", "figures", "features")
#: longest file-name stem of a figure made from a source's name (file systems allow 255 bytes)
MAX_FIGURE_STEM = 80


def figure_file(source: str, what: str) -> str:
    """File name of the ``what`` figure of a synthetic source (``NAME_slices.png``).

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a name that had to be
    changed, or is longer than :data:`MAX_FIGURE_STEM` characters, is cut and gets the first 10 hex
    digits of the SHA-256 of the full name, so distinct sources keep distinct files.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source).lstrip(".") or "source"
    if safe != source or len(safe) > MAX_FIGURE_STEM:
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:10]
        safe = f"{safe[:MAX_FIGURE_STEM]}-{digest}"
    return f"{safe}_{what}.png"


def _evaluate(real: str | Path, synthetic: str | Path | Sequence[str | Path], out: Path,
              opts: EvaluateOptions | None, names: Sequence[str] | None) -> Path:
    from synthmed.evaluate.embeddings import embedding_figure
    from synthmed.report.figures import slice_comparison_figure, training_curves_figure
    from synthmed.report.html import render_screenshot, write_report

    opts = opts or EvaluateOptions()
    fo = opts.fidelity
    fo.device, fo.seed, fo.batch_size, fo.progress = opts.device, opts.seed, opts.batch_size, opts.progress
    paths = [Path(synthetic)] if isinstance(synthetic, (str, Path)) else [Path(p) for p in synthetic]
    if not paths:
        raise ConfigError("give at least one synthetic folder or run folder")
    for p in paths:
        if not p.is_dir():
            raise DataError(f"{p}: synthetic folder or run folder does not exist")
    src_names = _names(paths, names)
    out = Path(out)
    stage = Stages()
    t_start = time.perf_counter()

    with stage("load real"):
        ds = load_prepared(real)
        split = opts.split if opts.split == "all" or ds.splits is not None else "all"
        if split != opts.split:
            log.warning("%s has no split file: comparing with all %d images, training images included", ds.root,
                        len(ds))
        rows = ds.indices(split, opts.fold)
        if opts.max_real is not None and len(rows) > opts.max_real:
            rows = np.sort(np.random.default_rng(opts.seed).choice(rows, opts.max_real, replace=False))
        if len(rows) < 2:
            raise DataError(f"{ds.root}: split {split!r} has {len(rows)} image(s); need at least 2")
        real_img = np.asarray(ds.images[rows], dtype=np.float32)
        labels_all = ds.labels
        real_labels = None if labels_all is None else labels_all[rows]
        set_size = opts.set_size or len(rows)
        need = max(fo.k_pr, fo.k_dc) + 1
        if min(len(rows), set_size) < need:
            raise DataError(f"{ds.root}: {min(len(rows), set_size)} images in the real split {split!r} or per "
                            f"synthetic set; precision/recall (k={fo.k_pr}) and density/coverage (k={fo.k_dc}) "
                            f"need at least {need} in each" + (" (--split all compares with every real image, training "
                                                                "images included)" if split == "test" else ""))

    with stage("extractor"):
        extractor = make_extractor(ds, fo)
        space = extractor.describe()

    with stage("features: real"):
        cache = ds.root / "features"
        real_all = cached_features(extractor, ds.images, cache, dataset_key=f"{array_sha256(ds.images)[:24]}-all",
                                   batch_size=opts.batch_size, device=opts.device, progress=opts.progress)
        real_feats = real_all[rows]

    sources = [_load_source(name, path, ds, extractor, real_all, set_size, out, opts, stage)
               for name, path in zip(src_names, paths, strict=True)]

    report = Report("synthmed evaluation: " + ", ".join(src_names))
    results: dict[str, Any] = {"real": {"path": str(ds.root.resolve()), "split": split, "n": len(rows),
                                        "shape": list(ds.shape)},
                               "feature_space": space, "sources": {}}
    report.add("Setup", KeyValues({
        "real data": f"{ds.root.resolve()} (split {split}, {len(rows)} images, shape {tuple(ds.shape)})",
        **{f"synthetic: {s.name}": f"{s.path.resolve()} ({len(s.features)} set(s) of {s.set_sizes[0]}"
                                   + (f", {s.n_dropped} of {s.n_images} images in no whole set (audited for privacy, "
                                      "not compared)" if s.n_dropped else "") + "; "
                                   f"{s.first.provenance.get('kind', '')}, model {s.first.provenance.get('model')}, "
                                   f"checkpoint {str(s.first.provenance.get('checkpoint_sha256'))[:16]})"
           for s in sources},
        "feature space": space,
    }, caption="What was compared, and in which feature space"))
    _add_training_warnings(report, sources)

    with stage("feature metrics"):
        bandwidth = median_heuristic(real_feats, seed=opts.seed)  # one RBF kernel for every source and the floor
        rows_by_source = {s.name: feature_metric_rows(real_feats, s.features, fo, bandwidth) for s in sources}
        for s in sources:
            results["sources"][s.name] = {"path": str(s.path.resolve()), "provenance": s.first.provenance,
                                          "set_sizes": s.set_sizes, "n_images": s.n_images,
                                          "n_dropped": s.n_dropped, "feature_metrics": rows_by_source[s.name]}
        floor = _floor(ds, split, real_all, real_feats, set_size, fo, bandwidth, opts, results)
        report.add("Fidelity and diversity in feature space", _feature_table({**floor, **rows_by_source}),
                   Text(_fidelity_caption(space, fo, split, floor, rows_by_source)))
        _add_per_class(report, results, ds, real_feats, real_labels, sources, fo, need)

    if opts.image_metrics:
        with stage("image metrics"):
            img_rows = {s.name: image_metric_rows(real_img, s.first.images, seed=opts.seed) for s in sources}
            metrics = [r["metric"] for r in next(iter(img_rows.values()))]
            # one row per metric, one column per source: eleven metric columns would not fit a laptop's width
            values = {n: {r["metric"]: r["value"] for r in rs} for n, rs in img_rows.items()}
            report.add("Image-space metrics (paper 002, Sec. 3.3)", Table(
                ["metric", *img_rows], [[m.replace("_", " ")] + [values[n].get(m) for n in img_rows] for m in metrics],
                caption="First synthetic set of each source vs the real images, intensities in [-1, 1]."))
            for n, rs in img_rows.items():
                results["sources"][n]["image_metrics"] = rs

    if opts.reconstruct:
        with stage("reconstruction"):
            _reconstruction(report, results, sources, real_img, out, opts, real_labels)

    if opts.inception_weights:
        with stage("inception score"):
            _inception(report, results, sources, real_img, opts)

    if opts.privacy:
        with stage("privacy"):
            for s in sources:
                blocks, res = s.privacy.section(out / "figures" / figure_file(s.name, "nearest"), opts.ssim_queries,
                                                opts.ssim_candidates)
                report.add(f"Privacy: {s.name} (paper 004, S.6)", *blocks)
                results["sources"][s.name]["privacy"] = res

    with stage("embeddings"):
        for s in sources:
            figs = []
            for method in opts.embeddings:
                rf, sf, rl, sl = real_feats, s.features[0], real_labels, s.first.labels
                if method == "mds" and max(len(rf), len(sf)) > opts.mds_max_points:
                    rng = np.random.default_rng(opts.seed)
                    ir = np.sort(rng.permutation(len(rf))[:opts.mds_max_points])
                    isn = np.sort(rng.permutation(len(sf))[:opts.mds_max_points])
                    rf, sf = rf[ir], sf[isn]
                    rl = None if rl is None else rl[ir]
                    sl = None if sl is None else sl[isn]
                figs.append(Figure(embedding_figure(rf, sf, out / "figures" / figure_file(s.name, method), method=method,
                                                    real_labels=rl, synthetic_labels=sl, class_names=ds.classes,
                                                    seed=opts.seed),
                                   caption=f"{method.upper()} of real and synthetic features ({space['name']})"))
            report.add(f"Embeddings: {s.name}", *figs)

    with stage("figures"):
        spacing = ds.meta.get("spacing")
        for s in sources:
            lab_r = real_labels if s.first.labels is not None else None
            blocks: list[Any] = [Figure(slice_comparison_figure(
                real_img, s.first.images, out / "figures" / figure_file(s.name, "slices"), labels_real=lab_r,
                labels_synthetic=s.first.labels, class_names=ds.classes, spacing=spacing),
                caption="Real (left) and synthetic (right)" + (", per class" if lab_r is not None else "") +
                        (": axial slices at 16, 24, 32, 40, 48 of 64 (paper 000), scaled to the depth"
                         if ds.spatial_dims == 3 else ""))]
            if ds.spatial_dims == 3:
                blocks.append(Figure(slice_comparison_figure(
                    real_img, s.first.images, out / "figures" / figure_file(s.name, "planes"), labels_real=lab_r,
                    labels_synthetic=s.first.labels, class_names=ds.classes, view="three-plane", spacing=spacing),
                    caption="Middle sagittal, coronal and axial planes"))
            if is_run_folder(s.path) and (s.path / "metrics.csv").is_file():
                try:
                    blocks.append(Figure(training_curves_figure(s.path / "metrics.csv",
                                                                out / "figures" / figure_file(s.name, "training")),
                                         caption="Training curves (metrics.csv of the run)"))
                except ValueError as e:
                    blocks.append(Text(f"No training curves: {e}"))
            report.add(f"Images: {s.name}", *blocks)

    total = time.perf_counter() - t_start
    timing = {"total_s": round(total, 2), "peak_memory_mb": round(peak_memory_mb(), 1),
              "stages_s": {k: round(v, 2) for k, v in stage.seconds.items()},
              "peak_memory_mb_after_stage": {k: round(v, 1) for k, v in stage.peak_mb.items()}}
    results["timing"] = timing
    results["options"] = _jsonable_options(opts)
    report.add("Run", KeyValues({"stages (s)": timing["stages_s"], "total (s, before the report)": timing["total_s"],
                                 "peak memory (MB)": timing["peak_memory_mb"], "options": results["options"]}))
    html = write_report(report, out, results=results)
    if opts.screenshot:
        try:
            shot = render_screenshot(html, out / "report.png")
            if shot is None:
                log.info("no Chromium installed: no screenshot of the report")
        except RuntimeError as e:
            log.warning("report screenshot failed: %s", e)
    return html


def _add_training_warnings(report: Report, sources: list[Source]) -> None:
    """The collapse guards that fired while a source's model trained (``run.json`` warnings, carried
    into ``sample.json``; see :mod:`synthmed.train.guards`), so a reader sees them beside the numbers."""
    rows = [[s.name, w.get("step"), w.get("guard"), w.get("message")] for s in sources
            for w in s.first.provenance.get("training_warnings") or []]
    if rows:
        report.add("Training warnings", Table(["source", "step", "guard", "what it means"], rows,
                                              caption="Guards that fired while the model trained"))


def _add_per_class(report: Report, results: dict[str, Any], ds: PreparedDataset, real_feats: np.ndarray,
                   real_labels: np.ndarray | None, sources: list[Source], fo: FidelityOptions, need: int) -> None:
    """Per-class feature metrics of every labelled source: into ``results`` and one report section."""
    cells: list[list[Any]] = []
    notes: list[str] = []
    metrics: list[str] = []
    for s in sources:
        per = _per_class_metrics(ds, real_feats, real_labels, s, fo, need)
        if per is None:
            continue
        rows, skipped = per
        results["sources"][s.name]["per_class_feature_metrics"] = rows
        results["sources"][s.name]["per_class_skipped"] = skipped
        for cls, rs in rows.items():
            metrics = metrics or [r["metric"] for r in rs]
            cells.append([s.name, cls, *_metric_cells(rs, metrics)])
        notes += [f"{s.name}, class {cls}: skipped ({why})." for cls, why in skipped.items()]
        notes += sorted({f"{s.name}, class {cls}: FID {r['note']}." for cls, rs in rows.items() for r in rs
                         if r.get("note")})
    if not cells and not notes:
        return
    blocks: list[Any] = []
    if cells:
        blocks.append(Table(["source", "class", *_metric_columns(metrics)], cells,
                            caption="The feature metrics above, each class's synthetic images of every set against "
                                    "that class's real images (paper 000 Fig. 4: each clinical group separately)."))
    if notes:
        blocks.append(Text(" ".join(notes)))
    report.add("Fidelity and diversity per class", *blocks)


def _jsonable_options(opts: EvaluateOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["embeddings"] = list(opts.embeddings)
    return d


def _reconstruction(report: Report, results: dict[str, Any], sources: list[Source], real_img: np.ndarray,
                    out: Path, opts: EvaluateOptions, real_labels: np.ndarray | None = None) -> None:
    from synthmed.evaluate.reconstruction import reconstruction_section, source_model

    for s in sources:
        run, why = source_model(s.path, device=opts.device)  # a run folder, or the run a sample folder names
        if run is None:
            report.add(f"Reconstruction: {s.name}", Text(why))
            results["sources"][s.name]["reconstruction"] = {"skipped": why}
            continue
        blocks, res = reconstruction_section(run, real_img, out / "figures" / figure_file(s.name, "reconstruction"),
                                             device=opts.device, batch_size=opts.batch_size, labels=real_labels)
        report.add(f"Reconstruction: {s.name} (paper 002, Fig. 3)", *blocks)
        # the figure's path inside the report folder (``out`` is a staging folder until published)
        results["sources"][s.name]["reconstruction"] = {**res, "figure": str(Path(res["figure"]).relative_to(out))}


def _inception(report: Report, results: dict[str, Any], sources: list[Source], real_img: np.ndarray,
               opts: EvaluateOptions) -> None:
    from synthmed.features.base import build_extractor
    from synthmed.metrics.inception_score import inception_score_planes

    net = build_extractor("inception-v3", weights=opts.inception_weights).to(opts.device).eval()
    rows = []
    for name, images in [("real", real_img)] + [(s.name, s.first.images) for s in sources]:
        res = inception_score_planes(images, net.logits, batch_size=opts.batch_size, device=opts.device,
                                     progress=opts.progress)
        rows.append([name, res])
        results.setdefault("inception_score", {})[name] = res
    report.add("Inception score (paper 001)", Table(["set", "inception score"], [[n, str(r)] for n, r in rows]))
