"""The typed, strict configuration of ``synthmed utility`` (paper 000's diagnosis-classifier protocol).

Defaults live in the dataclasses below (paper 000's hyper-parameters); a YAML file overrides what
changes; ``--set a.b=value`` overrides single keys; unknown keys and wrong types are errors that
name the key.  Example::

    data:
      path: /data/prepared/ds002748
    synthetic:                 # a run folder or sampled folder per class (or one conditional run: synthetic: RUN)
      control: runs/control
      depr: runs/depr
    compositions: [real, augmented, mixed-small, synthetic-small, mixed-large]
    classifier:
      name: diagnosis-cnn      # any registered classifier; the other keys are its parameters
      dropout: 0.5
    train:
      lr: 5.0e-6
      max_epochs: 100

``synthetic`` may instead be a single path: a conditional model's run folder (``model.conditioning``
frozen-classifier, ac, projection or cvae; class ``c`` is generated with label ``c``), or a sampled
folder whose manifest carries labels.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthmed.config import (
    _set_dotted,
    from_dict,
    load_validated,
    parse_override,
    plain,
    resolve_config_path,
)
from synthmed.errors import ConfigError
from synthmed.utility.compositions import COMPOSITIONS

SECTIONS = ("data", "synthetic", "compositions", "classifier", "train", "augment", "folds", "run_folds", "seed",
            "synthetic_test", "statistics", "occlusion")


@dataclass
class DataSection:
    """The real cohort.

    Attributes:
        path: prepared dataset folder (``synthmed preprocess`` output).
        max_subjects: use a seeded, stratified subsample of this many subjects (0 = all), for
            CPU-sized runs on larger cohorts.
    """

    path: str = ""
    max_subjects: int = 0


@dataclass
class ClassifierSection:
    """``name`` picks a registered classifier; ``params`` holds its typed parameters (flat keys in YAML)."""

    name: str = "diagnosis-cnn"
    params: Any = None


@dataclass
class UtilityTrainConfig:
    """Optimisation of the network classifiers (paper 000: AdamW, lr 5e-6, weight decay 0.01,
    batch 12, trained past convergence, the model at minimum validation loss kept).

    Attributes:
        max_epochs: epochs over the training set (the model with the lowest validation loss
            among them is kept).
        patience: stop after this many epochs without a lower validation loss (0: run all
            ``max_epochs``, "past convergence").
        infinite_max_iterations: iterations of the synthetic-infinite set (``max_epochs`` does
            not apply to it; ``patience`` counts its validation rounds).
        infinite_eval_every: iterations between validations of the infinite set (0: as many
            as one epoch of the real training set).
        eval_batch_size: images per forward pass for validation, test and generation.
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: torch CPU threads during the run (0: leave torch's setting).
    """

    #: AdamW learning rate (paper 000: 5e-6)
    lr: float = 5e-6
    #: AdamW weight decay (paper 000: 0.01)
    weight_decay: float = 0.01
    #: AdamW betas (PyTorch's defaults; paper 000 does not state them)
    betas: tuple[float, float] = (0.9, 0.999)
    #: training images per step (paper 000: 12)
    batch_size: int = 12
    max_epochs: int = 100
    patience: int = 0
    infinite_max_iterations: int = 10000
    infinite_eval_every: int = 0
    eval_batch_size: int = 12
    device: str = "cpu"
    threads: int = 0


@dataclass
class AugmentSection:
    """Classic augmentation of the "augmented" set (paper 000; see :mod:`synthmed.augment.classic`)."""

    #: chance that each operation is applied to an image (paper 000: one third)
    probability: float = 1 / 3
    #: largest cut-out box edge as a fraction of each axis (paper 000: half the image size)
    crop_ratio: float = 0.5
    #: largest shift as a fraction of each axis (paper 000: 1/8)
    translation_ratio: float = 0.125
    #: range of the random intensity factor on [0, 1] intensities (paper 000: 0.7 to 1)
    intensity: tuple[float, float] = (0.7, 1.0)
    #: value of cut-out and shifted-in voxels (-1: the background of prepared data)
    fill: float = -1.0


@dataclass
class StatisticsSection:
    """Statistics over folds (paper 000: ANOVA, two-tailed t-tests with Bonferroni, alpha .05, 95% CIs).

    Attributes:
        baseline: the composition the others are compared with (stars in the chart, Mann-Whitney).
        chart_metrics: one Fig. 6-style bar chart per metric.
    """

    #: family-wise significance level of the ANOVA and the Bonferroni-corrected t-tests (paper 000: .05)
    alpha: float = 0.05
    #: level of the t-based confidence intervals over folds (paper 000: 95%)
    confidence: float = 0.95
    baseline: str = "real"
    chart_metrics: list[str] = field(default_factory=lambda: ["accuracy", "balanced_accuracy"])


@dataclass
class OcclusionSection:
    """Occlusion feature-importance maps (paper 004, S.7) of classifiers trained on different sets.

    Attributes:
        compare: the compositions whose fold-``fold`` classifiers are compared (those run).
        n_images: real test images shown.
        mask_size: occluded patch edge in voxels (paper 004: 2 at 224^2).
        overlap: overlap of neighbouring patches (paper 004: 0, every patch once).
        fill: value of the occluded patch (-1: the background, "zero" in [0, 1] intensity).
    """

    #: compute the occlusion maps
    enabled: bool = True
    compare: list[str] = field(default_factory=lambda: ["real", "synthetic-small", "synthetic-large"])
    #: the fold whose classifiers and test images are used
    fold: int = 0
    n_images: int = 4
    mask_size: int = 4
    overlap: float = 0.0
    fill: float = -1.0
    #: occluded images per forward pass
    n_batch: int = 16


@dataclass
class UtilityConfig:
    """Everything ``synthmed utility`` needs; see the module docstring."""

    data: DataSection = field(default_factory=DataSection)
    #: the synthetic images: ``{CLASS: PATH}`` with a run folder or ``synthmed sample`` folder per class, or
    #: one path of a conditional run folder or labelled sampled folder for every class
    synthetic: dict[str, str] | str | None = None
    #: training sets compared (paper 000 Table 1): ``real``, ``augmented``, ``mixed-small``, ``mixed-large``,
    #: ``synthetic-small``, ``synthetic-large``, ``synthetic-infinite``; validation and test stay real
    compositions: list[str] = field(default_factory=lambda: list(COMPOSITIONS))
    classifier: ClassifierSection = field(default_factory=ClassifierSection)
    train: UtilityTrainConfig = field(default_factory=UtilityTrainConfig)
    augment: AugmentSection = field(default_factory=AugmentSection)
    #: stratified cross-validation folds, each 60/20/20 train/validation/test (paper 000: 5)
    folds: int = 5
    #: run only these folds (empty: all), e.g. for CPU-sized runs
    run_folds: list[int] = field(default_factory=list)
    #: seed of the partition, the subsampling and the classifiers
    seed: int = 0
    #: also test the synthetic-only compositions on held-out synthetic images, for Delta_syn (paper 004)
    synthetic_test: bool = True
    statistics: StatisticsSection = field(default_factory=StatisticsSection)
    occlusion: OcclusionSection = field(default_factory=OcclusionSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (written as ``config.yaml`` into the output folder)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["classifier"] = {"name": self.classifier.name, **(_plain(self.classifier.params) or {})}
        out["synthetic"] = copy.deepcopy(self.synthetic)
        return out

    def folds_to_run(self) -> list[int]:
        return list(self.run_folds) if self.run_folds else list(range(self.folds))


def _synthetic(value: Any) -> dict[str, str] | str | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        bad = [k for k, v in value.items() if not isinstance(v, (str, Path)) or not str(v)]
        if bad:
            raise ConfigError(f"config key 'synthetic.{bad[0]}': expected the path of a run folder or sampled "
                              f"folder, got {value[bad[0]]!r}")
        return {str(k): str(v) for k, v in value.items()}
    raise ConfigError("config key 'synthetic': expected a mapping class name -> run folder or sampled folder, "
                      f"or one path of a labelled source; got {value!r}")


def build_utility_config(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> UtilityConfig:
    """Validate a raw mapping (plus ``--set`` overrides) into a :class:`UtilityConfig`."""
    from synthmed.utility.classifiers import classifier_class, is_network

    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SECTIONS)}")
    raw_cls = data.pop("classifier", None) or {}
    if not isinstance(raw_cls, dict):
        raise ConfigError(f"config section 'classifier': expected a mapping, got {raw_cls!r}")
    raw_cls = dict(raw_cls)
    name = raw_cls.pop("name", ClassifierSection.name)
    if not isinstance(name, str):
        raise ConfigError(f"config key 'classifier.name': expected str, got {name!r}")
    cls = classifier_class(name)
    params = from_dict(cls.Params, raw_cls, "classifier")
    synthetic = _synthetic(data.pop("synthetic", None))
    cfg = from_dict(UtilityConfig, data)
    cfg.classifier = ClassifierSection(name, params)
    cfg.synthetic = synthetic
    _check(cfg, is_network(name))
    return cfg


def _check(cfg: UtilityConfig, network: bool) -> None:
    if not cfg.data.path:
        raise ConfigError("config key 'data.path': give the prepared dataset folder")
    if not cfg.compositions:
        raise ConfigError("config key 'compositions': expected at least one of " + ", ".join(COMPOSITIONS))
    for i, c in enumerate(cfg.compositions):
        if c not in COMPOSITIONS:
            raise ConfigError(f"config key 'compositions[{i}]': unknown composition {c!r}; expected any of: "
                              f"{', '.join(COMPOSITIONS)}")
    if len(set(cfg.compositions)) != len(cfg.compositions):
        raise ConfigError("config key 'compositions': a composition is listed twice")
    needs = [c for c in cfg.compositions if COMPOSITIONS[c].uses_synthetic]
    if needs and cfg.synthetic is None:
        raise ConfigError(f"config key 'synthetic': compositions {', '.join(needs)} need synthetic data; give "
                          "a run folder or sampled folder per class (synthetic: {CLASS: PATH, ...}), or one "
                          "conditional run folder or labelled sampled folder (synthetic: PATH)")
    if "synthetic-infinite" in cfg.compositions and not network:
        raise ConfigError(f"composition 'synthetic-infinite' needs a network classifier, not {cfg.classifier.name!r}")
    t = cfg.train
    for key in ("batch_size", "max_epochs", "infinite_max_iterations", "eval_batch_size"):
        if getattr(t, key) < 1:
            raise ConfigError(f"config key 'train.{key}': expected a positive integer, got {getattr(t, key)}")
    for key in ("patience", "infinite_eval_every", "threads"):
        if getattr(t, key) < 0:
            raise ConfigError(f"config key 'train.{key}': expected a non-negative integer, got {getattr(t, key)}")
    if not t.lr > 0 or t.weight_decay < 0:
        raise ConfigError(f"config keys 'train.lr'/'train.weight_decay': expected lr > 0 and weight_decay >= 0, "
                          f"got {t.lr} and {t.weight_decay}")
    if cfg.data.max_subjects < 0:
        raise ConfigError(f"config key 'data.max_subjects': expected >= 0, got {cfg.data.max_subjects}")
    if cfg.folds < 3:
        raise ConfigError(f"config key 'folds': need at least 3 folds (train/validation/test parts), got {cfg.folds}")
    bad = [k for k in cfg.run_folds if not 0 <= k < cfg.folds]
    if bad or len(set(cfg.run_folds)) != len(cfg.run_folds):
        raise ConfigError(f"config key 'run_folds': expected distinct fold numbers in 0..{cfg.folds - 1}, "
                          f"got {cfg.run_folds}")
    try:
        from synthmed.augment.classic import ClassicAugment

        ClassicAugment(**dataclasses.asdict(cfg.augment))
    except ValueError as e:
        raise ConfigError(f"config section 'augment': {e}") from None
    s = cfg.statistics
    if not 0 < s.alpha < 1 or not 0 < s.confidence < 1:
        raise ConfigError("config keys 'statistics.alpha'/'statistics.confidence': expected numbers in (0, 1)")
    from synthmed.utility.metrics import METRIC_NAMES

    for m in s.chart_metrics:
        if m not in METRIC_NAMES:
            raise ConfigError(f"config key 'statistics.chart_metrics': unknown metric {m!r}; expected any of: "
                              f"{', '.join(METRIC_NAMES)}")
    o = cfg.occlusion
    if o.mask_size < 1 or o.n_images < 1 or o.n_batch < 1 or not 0 <= o.overlap < 1:
        raise ConfigError("config section 'occlusion': expected mask_size, n_images, n_batch >= 1 and overlap in [0, 1)")
    if not 0 <= o.fold < cfg.folds:
        raise ConfigError(f"config key 'occlusion.fold': expected 0..{cfg.folds - 1}, got {o.fold}")
    unknown_cmp = [c for c in o.compare if c not in COMPOSITIONS]
    if unknown_cmp:
        raise ConfigError(f"config key 'occlusion.compare': unknown composition {unknown_cmp[0]!r}")


def resolve_utility_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a shipped utility config name (``utility_quick`` -> configs/utility_quick.yaml)."""
    return resolve_config_path(name_or_path, "utility")


def load_utility_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> UtilityConfig:
    """Load a YAML path or shipped utility config name, apply ``--set`` overrides, validate strictly."""
    return load_validated(resolve_utility_config_path(name_or_path), build_utility_config, overrides)


def dump_utility_config(cfg: UtilityConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


_plain = plain  # shared with synthmed.config
