"""Synthetic training images for the utility protocol, per class, reproducibly.

A class's source is a run folder (images generated on the fly by :func:`synthmed.generate.sample.
generate_batch`, one seed per image) or a folder written by ``synthmed sample`` (a fixed pool).  A
single labelled sampled folder, or a single conditional run folder (``model.conditioning`` ac,
projection, frozen-classifier or cvae; class ``c`` is generated with label ``c``), may serve every
class; several classes of a mapping may also name the same conditional run folder (loaded once).
Images are addressed by (fold, purpose, index):

* run folders: image ``i`` of purpose ``p`` in fold ``k`` for class ``c`` comes from seed
  ``seed * 10**9 + k * 10**8 + p * 2 * 10**7 + c * 10**6 + i``, so every fold, purpose and class
  gets its own images and the first ``m`` of them are the same whatever ``m`` is (mixed-small's
  synthetic images are the first of synthetic-small's, mixed-large's the first of synthetic-large's);
* pools: a seeded per-fold permutation of the class's images; training images are taken from its
  start, the synthetic test images for Delta_syn from its end, and the two never overlap.

``purpose`` is 0 for training sets, 1 for the synthetic test set (Delta_syn, paper 004), 2 for the
batches of the infinite set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.prepared import PreparedDataset
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.evaluate.synthetic import is_run_folder, load_sampled_folder

log = logging.getLogger(__name__)

TRAIN, TEST, INFINITE = 0, 1, 2
_MAX_PER_PURPOSE = 1_000_000


@dataclass
class ClassSource:
    """Synthetic images of one class.

    Attributes:
        label: the class's integer label.
        path: run folder or sampled folder.
        kind: ``run`` or ``pool``.
        provenance: model, checkpoint SHA-256, source path, generator's training subjects.
    """

    label: int
    path: Path
    kind: str
    provenance: dict[str, Any]
    run: Any = None
    #: for a conditional run folder: the class index given to the generator (``generate_batch`` labels)
    cond_label: int | None = None
    pool: np.ndarray | None = None
    batch_size: int = 8
    seed: int = 0
    #: per fold, how many pool images are kept back (from the end) for the synthetic test set
    reserved: dict[int, int] = field(default_factory=dict)
    _cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def take(self, fold: int, purpose: int, start: int, n: int) -> np.ndarray:
        """Images ``start .. start+n-1`` of (fold, purpose): (n, 1, *shape) float32 in [-1, 1]."""
        if n <= 0:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        if self.kind == "run":
            return self._generated(fold, purpose, start, n)
        return self._from_pool(fold, purpose, start, n)

    @property
    def image_shape(self) -> tuple[int, ...]:
        if self.pool is not None:
            return tuple(self.pool.shape[1:])
        return (1, *self.run.data["shape"])

    def clear(self) -> None:
        self._cache.clear()

    def _seeds(self, fold: int, purpose: int, start: int, n: int) -> list[int]:
        if start + n > _MAX_PER_PURPOSE or not 0 <= self.label < 20:
            raise DataError(f"{self.path}: seeds are laid out for at most {_MAX_PER_PURPOSE} synthetic images of "
                            "one kind per fold and class and at most 20 classes")
        base = self.seed * 10**9 + fold * 10**8 + purpose * 2 * 10**7 + self.label * 10**6
        return [base + i for i in range(start, start + n)]

    def _generated(self, fold: int, purpose: int, start: int, n: int) -> np.ndarray:
        if purpose == INFINITE:  # never cached: every batch is fresh
            return self._generate(self._seeds(fold, purpose, start, n))
        have = self._cache.get((fold, purpose), np.empty((0, *self.image_shape), dtype=np.float32))
        if len(have) < start + n:
            new = self._generate(self._seeds(fold, purpose, len(have), start + n - len(have)))
            have = self._cache[(fold, purpose)] = np.concatenate([have, new])
        return have[start:start + n]

    def _generate(self, seeds: list[int]) -> np.ndarray:
        from synthmed.generate.sample import generate_batch

        parts = []
        for i in range(0, len(seeds), self.batch_size):
            batch = seeds[i:i + self.batch_size]
            labels = None if self.cond_label is None else torch.full((len(batch),), self.cond_label, dtype=torch.long)
            parts.append(generate_batch(self.run, batch, labels))
        return np.concatenate(parts).astype(np.float32, copy=False)

    @property
    def capacity(self) -> int | None:
        """Images a pool holds (None: a run folder generates without limit)."""
        return None if self.pool is None else len(self.pool)

    def _from_pool(self, fold: int, purpose: int, start: int, n: int) -> np.ndarray:
        assert self.pool is not None
        m = len(self.pool)
        order = np.random.default_rng([self.seed, fold, self.label]).permutation(m)
        if purpose == INFINITE:  # batches drawn with replacement from the training part of the pool
            rng = np.random.default_rng([self.seed, fold, self.label, start])
            reserve = self.reserved.get(fold, 0)  # the synthetic test images stay unseen
            return self.pool[order[rng.integers(0, max(1, m - reserve), size=n)]]
        usable = m - self.reserved.get(fold, 0) if purpose == TRAIN else m
        idx = order[start:min(start + n, usable)] if purpose == TRAIN else order[::-1][start:start + n]
        if len(idx) < n:
            raise DataError(f"{self.path}: holds {m} synthetic images of class {self.label}; fold {fold} needs "
                            f"{start + n} for {'training' if purpose == TRAIN else 'the synthetic test set'}; "
                            f"({self.reserved.get(fold, 0)} kept back for the synthetic test set); sample more (synthmed sample "
                            "--n), use the run folder, or set synthetic_test: false")
        return self.pool[idx]


def _load_run(path: Path, ds: PreparedDataset, device: str, runs: dict[Path, Any]) -> Any:
    """The run at ``path``, loaded once per :func:`open_sources` call (``runs`` caches by resolved path)."""
    from synthmed.generate.sample import load_run

    key = path.resolve()
    if key not in runs:
        run = load_run(path, device=device)
        if tuple(run.data["shape"]) != tuple(ds.shape):
            raise DataError(f"{path}: the run makes images of shape {tuple(run.data['shape'])}, the real data {ds.root} "
                            f"has {tuple(ds.shape)}; train on the same prepared size")
        runs[key] = run
    return runs[key]


def _run_provenance(path: Path, run: Any) -> dict[str, Any]:
    data = run.data
    return {"source": str(path.resolve()), "kind": "run folder (generated on the fly)", "model": run.cfg.model.name,
            "checkpoint_sha256": run.checkpoint_sha256, "step": run.step, "trained_on_class": data.get("label", ""),
            "trained_on": data.get("path"), "train_subject_ids": data.get("train_subject_ids"),
            "conditioning": run.conditioning["method"]}


def _class_names(ds: PreparedDataset) -> list[str]:
    return ds.classes or [str(v) for v in sorted(set((ds.labels if ds.labels is not None else []).tolist()))]


def _conditional_label(path: Path, run: Any, label: int, ds: PreparedDataset) -> int:
    """The generator's class index for the real class ``label`` (always ``label``; checked).

    The class name is resolved as ``synthmed sample --label NAME`` resolves it
    (:func:`synthmed.generate.sample.resolve_label_request`); the run's class of that name must have the
    real data's index.

    Raises:
        ConfigError: a multi-label run, or a run whose classes do not match the real data's.
    """
    from synthmed.generate.sample import resolve_label_request

    cond = run.conditioning
    real = _class_names(ds)
    names = [str(c) for c in cond.get("class_names") or []]
    if cond.get("multi_label"):
        raise ConfigError(f"synthetic source {path} is a multi-label conditional run (findings: {', '.join(names)}); "
                          "the utility protocol needs one class per image: give a single-label conditional run, one "
                          "run folder per class, or sampled folders")
    name = ds.classes[label] if label < len(ds.classes) else str(label)
    try:
        _, req = resolve_label_request(run, 1, [name], None)
        idx = int(req[0]) if req is not None else -1
    except SynthmedError:
        idx = -1
    if idx != label or (names and (idx >= len(names) or names[idx] != name)):
        run_classes = names or [str(v) for v in range(int(cond.get("num_classes") or 0))]
        raise ConfigError(
            f"synthetic source {path}: the conditional run's classes [{', '.join(run_classes)}] do not match the real "
            f"data {ds.root}'s classes [{', '.join(real)}]; expected the run's class {label} to be {name!r} (the run "
            "must contain the real data's class names with the same indices); train the run on this prepared dataset")
    return idx


def _conditional_source(path: Path, run: Any, label: int, ds: PreparedDataset, batch_size: int,
                        seed: int) -> ClassSource:
    idx = _conditional_label(path, run, label, ds)
    names = [str(c) for c in run.conditioning.get("class_names") or []]
    prov = {**_run_provenance(path, run), "label": idx, "label_name": names[idx] if idx < len(names) else str(idx)}
    return ClassSource(label, path, "run", prov, run=run, cond_label=idx, batch_size=batch_size, seed=seed)


def _run_source(path: Path, label: int, ds: PreparedDataset, device: str, batch_size: int, seed: int,
                runs: dict[Path, Any] | None = None) -> ClassSource:
    run = _load_run(path, ds, device, {} if runs is None else runs)
    if run.conditional:
        return _conditional_source(path, run, label, ds, batch_size, seed)
    data = run.data
    trained_label = data.get("label", "")
    if trained_label not in ("", None) and ds.label_index(trained_label) != label:
        raise ConfigError(f"synthetic source {path} was trained on class {trained_label!r}, but is given for class "
                          f"{ds.classes[label] if label < len(ds.classes) else label!r}")
    if trained_label in ("", None):
        log.warning("%s was trained on every class (no train.label); it is used for class %s", path, label)
    return ClassSource(label, path, "run", _run_provenance(path, run), run=run, batch_size=batch_size, seed=seed)


def _pool_sources(path: Path, labels: list[int] | None, ds: PreparedDataset, seed: int) -> dict[int, ClassSource]:
    s = load_sampled_folder(path)
    if tuple(s.images.shape[1:]) != (1, *ds.shape):
        raise DataError(f"{path}: synthetic images have shape {tuple(s.images.shape[1:])}, the real data "
                        f"{ds.root} has {(1, *ds.shape)}")
    meta = json.loads((path / "sample.json").read_text(encoding="utf-8")) if (path / "sample.json").is_file() else {}
    prov = {**s.provenance, "trained_on": meta.get("trained_on"), "train_subject_ids": None}
    if labels is not None and len(labels) == 1:  # one folder for one class
        if s.labels is not None and set(s.labels.tolist()) != {labels[0]}:
            raise ConfigError(f"{path}: its manifest labels images {sorted(set(s.labels.tolist()))}, but it is given "
                              f"for class {labels[0]}")
        return {labels[0]: ClassSource(labels[0], path, "pool", prov, pool=s.images, seed=seed)}
    if s.labels is None:
        raise ConfigError(f"{path}: one synthetic source for every class needs labels in its manifest.csv "
                          "(a conditional model's samples); give one folder per class instead")
    return {int(c): ClassSource(int(c), path, "pool", prov, pool=s.images[s.labels == c], seed=seed)
            for c in np.unique(s.labels)}


def open_sources(spec: dict[str, str] | str, ds: PreparedDataset, device: str = "cpu", batch_size: int = 8,
                 seed: int = 0) -> dict[int, ClassSource]:
    """The synthetic source of every class of ``ds`` from the config's ``synthetic`` entry.

    Raises:
        ConfigError: for unknown or missing classes, a single unconditional run folder, a source trained
            on another class, or a conditional run whose classes differ from the real data's.
        DataError: for missing folders or images of the wrong shape.
    """
    classes = _class_names(ds)
    out: dict[int, ClassSource] = {}
    runs: dict[Path, Any] = {}  # each run folder is loaded once, shared by its classes
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_dir():
            raise DataError(f"{path}: synthetic folder or run folder does not exist")
        if is_run_folder(path):
            run = _load_run(path, ds, device, runs)
            if not run.conditional:
                raise ConfigError(
                    f"synthetic: {path} is a single run folder of an unconditional model (model.conditioning="
                    f"{run.conditioning['method']!r}), which makes one class only. Give one run folder per class "
                    "(synthetic: {CLASS: RUN, ...}), or a conditional run (trained with --set model.conditioning=ac, "
                    "projection, frozen-classifier or cvae)")
            if ds.labels is None:
                raise ConfigError(f"synthetic: {path} is a conditional run, but the real data {ds.root} has no labels")
            for c in sorted(set(ds.labels.tolist())):
                out[int(c)] = _conditional_source(path, run, int(c), ds, batch_size, seed)
        else:
            out = _pool_sources(path, None, ds, seed)
    else:
        for name, p in spec.items():
            try:
                label = ds.label_index(name)
            except DataError:
                raise ConfigError(f"config key 'synthetic.{name}': {ds.root} has no class {name!r}; classes: "
                                  f"{', '.join(classes)}") from None
            path = Path(p)
            if not path.is_dir():
                raise DataError(f"{path} (synthetic.{name}): synthetic folder or run folder does not exist")
            if is_run_folder(path):
                out[label] = _run_source(path, label, ds, device, batch_size, seed, runs)
            else:
                out.update(_pool_sources(path, [label], ds, seed))
    assert ds.labels is not None
    missing = sorted(set(ds.labels.tolist()) - set(out))
    if missing:
        names = [classes[m] if m < len(classes) else str(m) for m in missing]
        raise ConfigError(f"config key 'synthetic': no synthetic source for class(es) {', '.join(names)}")
    return out
