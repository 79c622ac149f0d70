"""One (composition, fold) of the utility protocol: its training set, its classifier, its numbers.

:func:`run_fold` builds the composition's training set from the fold's real training subjects and
the synthetic sources, trains the configured classifier (a network with early stopping at minimum
validation loss, or the GAN-train SVM), and evaluates it on the fold's REAL test subjects; for
classifiers trained on synthetic data only it also tests on a held-out synthetic set of the same
class balance (Delta_syn, paper 004).  Validation and test images are always real: they come from
the cohort arrays only, never from a synthetic source.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.prepared import PreparedDataset
from synthmed.utility.compositions import Composition
from synthmed.utility.config import UtilityConfig
from synthmed.utility.metrics import auc_only, classification_metrics, jsonable_metrics, majority_rate
from synthmed.utility.sources import INFINITE, TEST, TRAIN, ClassSource

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    """The real subjects of the protocol, in memory.

    Attributes:
        ds: the prepared dataset.
        rows: dataset rows used (all, or a stratified subsample).
        images: (N, 1, *S) float32 images of those rows.
        labels: (N,) int64 labels.
        ids: (N) subject ids.
        class_names: names indexed by label.
        partition: :func:`~synthmed.utility.compositions.make_partition` over ``ids``.
    """

    ds: PreparedDataset
    rows: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    partition: dict[str, Any]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def fold_rows(self, fold: int) -> dict[str, np.ndarray]:
        """Positions in the cohort arrays of the fold's train / val / test subjects."""
        pos = {s: i for i, s in enumerate(self.ids)}
        return {k: np.array(sorted(pos[s] for s in v), dtype=np.int64)
                for k, v in self.partition["folds"][fold].items()}


def fold_seed(seed: int, fold: int, name: str) -> int:
    """A seed per (run seed, fold, composition), independent of the order of compositions."""
    return int(np.random.SeedSequence([seed, fold, zlib.crc32(name.encode())]).generate_state(1)[0])


def real_subset(cohort: Cohort, train: np.ndarray, comp: Composition, fold: int, seed: int) -> dict[int, np.ndarray]:
    """Per class, the real training positions a composition keeps (a seeded, fixed choice per fold)."""
    out = {}
    for c in range(cohort.n_classes):
        members = train[cohort.labels[train] == c]
        order = np.random.default_rng([seed, fold, c]).permutation(len(members))
        out[c] = np.sort(members[order[: comp.counts(len(members))[0]]])
    return out


def training_set(cohort: Cohort, train: np.ndarray, comp: Composition, fold: int, sources: dict[int, ClassSource],
                 seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, int]]]:
    """Images, labels and per-class counts ``{"real": {cls: n}, "synthetic": {cls: n}}`` of a finite
    composition in fold ``fold``."""
    keep = real_subset(cohort, train, comp, fold, seed)
    xs, ys = [], []
    counts: dict[str, dict[str, int]] = {"real": {}, "synthetic": {}}
    for c in range(cohort.n_classes):
        n_c = int(np.sum(cohort.labels[train] == c))
        _, n_syn = comp.counts(n_c)
        xs.append(cohort.images[keep[c]])
        ys.append(np.full(len(keep[c]), c, dtype=np.int64))
        if n_syn > 0:
            xs.append(sources[c].take(fold, TRAIN, 0, n_syn))
            ys.append(np.full(n_syn, c, dtype=np.int64))
        name = cohort.class_names[c]
        counts["real"][name], counts["synthetic"][name] = int(len(keep[c])), int(max(n_syn, 0))
    return np.concatenate(xs), np.concatenate(ys), counts


def infinite_batches(cohort: Cohort, train: np.ndarray, fold: int, sources: dict[int, ClassSource],
                     batch_size: int, seed: int) -> Any:
    """A function ``iteration -> (images, labels)``: a fresh synthetic batch whose classes are drawn
    with the real training set's class proportions."""
    p = np.bincount(cohort.labels[train], minlength=cohort.n_classes) / len(train)

    def draw(it: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.sort(np.random.default_rng([seed, fold, it]).choice(cohort.n_classes, size=batch_size, p=p))
        parts = [sources[c].take(fold, INFINITE, it * batch_size, int(np.sum(y == c))) for c in range(cohort.n_classes)]
        return np.concatenate(parts), y

    return draw


def synthetic_test_set(cohort: Cohort, test: np.ndarray, fold: int,
                       sources: dict[int, ClassSource]) -> tuple[np.ndarray, np.ndarray]:
    """Held-out synthetic images with the real test set's class counts (for Delta_syn)."""
    xs, ys = [], []
    for c in range(cohort.n_classes):
        n = int(np.sum(cohort.labels[test] == c))
        xs.append(sources[c].take(fold, TEST, 0, n))
        ys.append(np.full(n, c, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def generator_overlap(sources: dict[int, ClassSource], cohort: Cohort, rows: dict[str, np.ndarray]) -> dict[str, int]:
    """How many validation/test subjects the synthetic sources' generators were trained on."""
    seen: set[str] = set()
    for s in sources.values():
        seen.update(s.provenance.get("train_subject_ids") or [])
    return {k: int(sum(cohort.ids[i] in seen for i in rows[k])) for k in ("val", "test")}


def run_fold(cfg: UtilityConfig, cohort: Cohort, comp: Composition, fold: int, sources: dict[int, ClassSource] | None,
             out: Path, device: str, progress: bool = False, keep_model: bool = False) -> dict[str, Any]:
    """Train and test one composition in one fold; return its JSON-ready record."""
    from synthmed.utility.classifiers import is_network

    t0 = time.perf_counter()
    rows = cohort.fold_rows(fold)
    seed = fold_seed(cfg.seed, fold, comp.name)
    test_y = cohort.labels[rows["test"]]
    syn_test = None
    if cfg.synthetic_test and comp.synthetic_only and sources:
        syn_test = synthetic_test_set(cohort, rows["test"], fold, sources)
    if is_network(cfg.classifier.name):
        res = _network_fold(cfg, cohort, comp, fold, sources, rows, seed, syn_test, out, device, progress, keep_model)
    else:
        res = _svm_fold(cfg, cohort, comp, fold, sources, rows, seed, syn_test, out, device, progress)
    metrics = classification_metrics(test_y, res.pop("scores"), res.pop("y_pred"), cohort.n_classes)
    auc_syn = res.pop("auc_synthetic_test", None)
    record = {
        "composition": comp.name, "fold": fold, "n_val": int(len(rows["val"])), "n_test": int(len(rows["test"])),
        "test_class_counts": {cohort.class_names[c]: int(np.sum(test_y == c)) for c in range(cohort.n_classes)},
        "majority_rate": majority_rate(test_y), "metrics": jsonable_metrics(metrics),
        "auc_synthetic_test": auc_syn,
        "delta_syn": None if auc_syn is None or math.isnan(metrics["auc"]) else auc_syn - metrics["auc"],
        "generator_overlap": generator_overlap(sources, cohort, rows) if sources and comp.uses_synthetic else None,
        **res, "seconds": round(time.perf_counter() - t0, 2),
    }
    return record


def _network_fold(cfg: UtilityConfig, cohort: Cohort, comp: Composition, fold: int,
                  sources: dict[int, ClassSource] | None, rows: dict[str, np.ndarray], seed: int,
                  syn_test: tuple[np.ndarray, np.ndarray] | None, out: Path, device: str, progress: bool,
                  keep_model: bool) -> dict[str, Any]:
    from synthmed.augment.classic import ClassicAugment
    from synthmed.io_utils import atomic_path
    from synthmed.utility.classifiers import build_classifier
    from synthmed.utility.training import fit_classifier, predict_scores

    t = cfg.train
    torch.manual_seed(seed)
    model = build_classifier(cfg.classifier.name, cohort.ds.spatial_dims, cohort.ds.shape, cohort.n_classes,
                             cfg.classifier.params).to(device)
    val = (cohort.images[rows["val"]], cohort.labels[rows["val"]])
    common = dict(lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, batch_size=t.batch_size,
                  max_epochs=t.max_epochs, patience=t.patience, eval_batch_size=t.eval_batch_size, seed=seed,
                  device=device, progress=progress, desc=f"{comp.name} fold {fold}")
    if comp.infinite:
        assert sources is not None
        every = t.infinite_eval_every or math.ceil(len(rows["train"]) / t.batch_size)
        fit = fit_classifier(model, None, val, cohort.n_classes, infinite=infinite_batches(
            cohort, rows["train"], fold, sources, t.batch_size, seed), eval_every=every,
            max_iterations=t.infinite_max_iterations, **common)
        n_c = np.bincount(cohort.labels[rows["train"]], minlength=cohort.n_classes)
        counts = {"real": {n: 0 for n in cohort.class_names},
                  "synthetic": {n: -1 for n in cohort.class_names}, "proportions": dict(zip(
                      cohort.class_names, (n_c / n_c.sum()).round(4).tolist(), strict=True))}
    else:
        x, y, counts = training_set(cohort, rows["train"], comp, fold, sources or {}, cfg.seed)
        aug = ClassicAugment(**dataclasses.asdict(cfg.augment)) if comp.augment else None
        fit = fit_classifier(model, (x, y), val, cohort.n_classes, augment=aug, **common)
    scores = predict_scores(model, cohort.images[rows["test"]], cohort.n_classes, t.eval_batch_size, device)
    res: dict[str, Any] = {"counts": counts, "scores": scores, "y_pred": None,
                           "test_scores": scores.tolist(),
                           "fit": {"best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                                   "epochs": fit.epochs, "iterations": fit.iterations,
                                   "seconds": round(fit.seconds, 2)},
                           "history": fit.history}
    if syn_test is not None:
        s = predict_scores(model, syn_test[0], cohort.n_classes, t.eval_batch_size, device)
        res["auc_synthetic_test"] = auc_only(syn_test[1], s, cohort.n_classes)
    if keep_model:
        with atomic_path(out / "models" / f"{comp.name}_fold{fold}.pt") as tmp:
            torch.save({k: v.cpu() for k, v in fit.state.items()}, tmp)
    return res


def _svm_fold(cfg: UtilityConfig, cohort: Cohort, comp: Composition, fold: int,
              sources: dict[int, ClassSource] | None, rows: dict[str, np.ndarray], seed: int,
              syn_test: tuple[np.ndarray, np.ndarray] | None, out: Path, device: str,
              progress: bool) -> dict[str, Any]:
    from synthmed.augment.classic import ClassicAugment
    from synthmed.features.base import extract_features
    from synthmed.utility.svm import GANTrainSVM, fold_extractor

    params = cfg.classifier.params
    extractor = fold_extractor(params, cohort.images[rows["train"]], out / "extractors" / f"fold{fold}.pt",
                               cfg.seed, device, progress)
    x, y, counts = training_set(cohort, rows["train"], comp, fold, sources or {}, cfg.seed)
    if comp.augment:  # one augmented draw per image: an augmented set of the real set's size
        x = ClassicAugment(**dataclasses.asdict(cfg.augment))(
            torch.from_numpy(np.ascontiguousarray(x)), torch.Generator().manual_seed(seed)).numpy()

    def feats(images: np.ndarray) -> np.ndarray:
        return extract_features(extractor, images, batch_size=cfg.train.eval_batch_size, device=device,
                                progress=False)

    svm = GANTrainSVM(params, seed).fit(feats(x), y)
    test_f = feats(cohort.images[rows["test"]])
    scores = svm.scores(test_f)
    res: dict[str, Any] = {"counts": counts, "scores": scores, "y_pred": svm.predict(test_f),
                           "test_scores": np.asarray(scores).tolist(),
                           "fit": {"extractor": extractor.describe()}, "history": []}
    if syn_test is not None:
        res["auc_synthetic_test"] = auc_only(syn_test[1], svm.scores(feats(syn_test[0])), cohort.n_classes)
    return res
