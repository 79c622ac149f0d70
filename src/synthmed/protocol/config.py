"""The typed, strict configuration of ``synthmed protocol`` (the whole pipeline of paper 000, plus
paper 004's benchmark sweeps).

Defaults live in the dataclasses below; a YAML file overrides what changes; ``--set a.b=value``
overrides single keys; unknown keys and wrong types are errors that name the key.  Example::

    data:
      path: /data/prepared/ds002748     # synthmed preprocess output (labelled)
      resolution: 0                     # 0: as prepared; N: resample to N^d first (CPU-sized runs)
      max_subjects: 0                   # 0: all; N: a seeded stratified subsample
    candidates:
      models: [alpha_sngan, sngan]      # shipped run configs, YAML paths, or {config: ..., name: ..., set: {...}}
      diffaugment: [false, true]        # every model with and without DiffAugment
      conditioning: none                # one unconditional model on every class (or per-class)
      set: {train.iterations: 12000}    # overrides for every candidate run
    evaluation:
      n_sets: 10                        # synthetic sets the size of the real set per candidate (paper 000)
    ranking:
      metric: fid                       # the winner has the best mean of this metric
    conditioning:
      methods: [per-class, frozen-classifier, projection]   # the winner extended per method (paper 000)
    utility: {...}                      # a `synthmed utility` config without data/synthetic
    sweeps:
      seeds: [0, 1, 2, 3]
      samples_per_class: [5, 20]
      resolution: [16, 32]
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthmed.config import (
    RunConfig,
    _set_dotted,
    from_dict,
    load_config,
    load_validated,
    parse_override,
    plain,
    resolve_config_path,
)
from synthmed.errors import ConfigError

SECTIONS = ("data", "candidates", "evaluation", "ranking", "conditioning", "utility", "sweeps", "stages",
            "device", "seed")
STAGES = ("candidates", "evaluation", "conditioning", "utility", "sweeps")
#: how the candidates are trained: ``none`` one unconditional model on every class (paper 000's basic
#: architectures), ``per-class`` one unconditional model per class (``train.label``).
CANDIDATE_CONDITIONING = ("none", "per-class")
#: the conditioning methods the winner can be extended with (stage (d), paper 000): ``per-class`` (one
#: GAN per class), and the conditional models of ``model.conditioning`` (one model, sampled with labels).
CONDITIONING_METHODS = ("per-class", "frozen-classifier", "ac", "projection", "cvae")
FEATURE_METRICS = ("fid", "kid", "mmd_rbf", "mmd_linear", "precision", "recall", "density", "coverage")
LOWER_IS_BETTER = ("fid", "kid", "mmd_rbf", "mmd_linear")


@dataclass
class DataSection:
    """The real cohort.

    Attributes:
        path: prepared dataset folder (``synthmed preprocess`` output, with labels).
        resolution: resample every image to this edge length first (0: keep the prepared size);
            the resampled copy is written under ``OUT/data``.
        max_subjects: a seeded, stratified subsample of this many subjects (0: all).
    """

    path: str = ""
    resolution: int = 0
    max_subjects: int = 0


@dataclass
class CandidateSpec:
    """One candidate architecture: a run config (shipped name or YAML path) plus overrides."""

    #: a shipped run config name, a YAML path or a registered model name
    config: str = ""
    #: display name of the candidate (default: the config's name)
    name: str = ""
    #: dotted overrides of this candidate's run config, e.g. ``{model.latent_dim: 128}``
    set: Any = field(default_factory=dict)


@dataclass
class CandidatesSection:
    """Stage (a): the candidate generative models.

    Attributes:
        models: shipped run configs (``synthmed list``), YAML paths, or mappings
            ``{config, name, set}`` with per-model overrides.
        diffaugment: train every model with each of these ``augment.enabled`` values
            (paper 000: with and without DiffAugment).
        conditioning: ``per-class``: one unconditional model per class (``train.label``);
            ``none``: one unconditional model trained on every class (paper 000's "basic
            architectures", compared before class conditioning is added in stage (d)).
        set: dotted overrides for every candidate run (e.g. ``train.iterations: 12000``).
        subset: rows of the prepared split the generators train on (``trainval`` keeps the
            prepared test set unseen for the privacy analysis).
    """

    models: list[Any] = field(default_factory=lambda: ["alpha_sngan", "sngan"])
    diffaugment: list[bool] = field(default_factory=lambda: [False, True])
    conditioning: str = "per-class"
    set: Any = field(default_factory=dict)
    subset: str = "trainval"


@dataclass
class ConditioningSection:
    """Stage (d): the winning architecture extended with each conditioning method (paper 000,
    "Architectures for conditional image synthetization" and Fig. 4).

    Every method is trained on every class, sampled into ``evaluation.n_sets`` labelled sets the
    size of the real set, and evaluated per class (each class's synthetic images against that
    class's real images); the methods are ranked by ``ranking.metric`` averaged over classes, with
    a two-way ANOVA (method x class, as paper 000's F(2, 54) and F(1, 54)), a one-way ANOVA of the
    class means and Bonferroni-corrected t-tests between methods.  The best method's runs feed the
    utility protocol and the sweeps.

    Attributes:
        methods: ``per-class`` (one GAN per class; reuses the winner's candidate runs when
            ``candidates.conditioning`` is ``per-class``), ``frozen-classifier`` (paper 000's
            auxiliary classifier: a separate classifier trained on real data, then frozen),
            ``ac`` (auxiliary-classifier discriminator head), ``projection`` (projection
            discriminator), ``cvae`` (VAEs).  Paper 000: per-class, frozen-classifier, projection.
            Empty: no stage (d); the utility stage then uses the winner's candidate runs, which
            needs ``candidates.conditioning: per-class``.
        set: dotted overrides for the conditional runs (not the per-class ones), e.g.
            ``model.classifier_iterations`` or ``train.iterations`` (one model learns every class);
            the sweeps apply them too, before ``sweeps.generator_set``.
        winner: force this method (empty: the best by ``ranking.metric``).
    """

    methods: list[str] = field(default_factory=lambda: ["per-class", "frozen-classifier", "projection"])
    set: Any = field(default_factory=dict)
    winner: str = ""


@dataclass
class EvaluationSection:
    """Stage (b): :func:`synthmed.evaluate.runner.evaluate` of every candidate.

    Attributes:
        n_sets: synthetic sets the size of the real set per candidate (paper 000: 10); each set
            holds as many images of every class as the real set.
        split: real images compared with (paper 000: all).
        max_real: at most this many real images (0: all of the split).
        extractor, weights, extractor_iterations: feature space (default: the in-domain
            autoencoder trained on the prepared training split).
        image_metrics, privacy, ssim_queries, embeddings: parts of the evaluation report.
        batch_size: images per forward pass.
    """

    n_sets: int = 10
    split: str = "all"
    max_real: int = 0
    extractor: str = "indomain-ae"
    weights: str = ""
    extractor_iterations: int = 1000
    image_metrics: bool = True
    privacy: bool = True
    ssim_queries: int = 32
    embeddings: list[str] = field(default_factory=lambda: ["pca", "mds"])
    batch_size: int = 8


@dataclass
class RankingSection:
    """Stage (c): the winner and the statistics between candidates.

    Attributes:
        metric: the feature metric whose mean over synthetic sets ranks the candidates.
        higher_is_better: direction of ``metric`` (None: lower is better for fid, kid, mmd_*,
            higher for precision, recall, density, coverage).
        tested_metrics: metrics with a one-way ANOVA over the per-set scores and Bonferroni-
            corrected pairwise two-tailed t-tests between candidates.
        alpha: family-wise significance level.
        winner: force this candidate as the winner (empty: the best by ``metric``).
    """

    metric: str = "kid"  # FID's small-sample bias can rank a noisy set above a clean one (issue 14)
    higher_is_better: bool | None = None
    tested_metrics: list[str] = field(default_factory=lambda: ["fid", "kid", "precision", "recall", "density",
                                                               "coverage"])
    alpha: float = 0.05
    winner: str = ""

    def lower_is_better(self) -> bool:
        if self.higher_is_better is not None:
            return not self.higher_is_better
        return self.metric in LOWER_IS_BETTER


@dataclass
class SweepsSection:
    """Stage (f): paper 004's benchmark sweeps with the winning architecture.

    Each point of a sweep derives a dataset from the real cohort, partitions it (stratified
    ``folds``-fold, fold 0: 60/20/20), trains the generators (one per class, or one conditional
    model with the method stage (d) chose) on fold 0's training
    subjects only, and runs the utility protocol's ``compositions`` on fold 0 (classifier trained
    on real vs on synthetic images, both tested on fold 0's real test subjects), giving
    AUC_real, AUC_syn, AUC_real - AUC_syn and Delta_syn.  Every point is repeated for each seed
    (subsample, partition, generator and classifier all follow the seed).

    Attributes:
        enabled: run the sweeps.
        seeds: repetitions.
        classes: numbers of classes (the most frequent classes are kept; all samples, at
            ``base_resolution``).  Paper 004: 2 .. 10/20 label combinations.
        samples_per_class: subjects per class (a seeded subsample of every kept class, at
            ``base_resolution``).  Paper 004: 100 .. 5,400/5,950.
        resolution: image edge lengths (every class, ``base_samples_per_class``).  Paper 004:
            32 .. 512 pixels.
        base_resolution: resolution of the classes and samples sweeps (0: as the protocol's data).
        base_samples_per_class: subjects per class in the classes and resolution sweeps (0: all).
        folds: partition of every point (fold 0 is used).
        generator_set: dotted overrides of the winner's run config for the sweep generators.
        utility: overrides of the ``utility`` section for the sweep classifiers.
        compositions: training sets compared (the first is the reference, "real").
        alpha: significance level of the Mann-Whitney U tests between the extremes.
    """

    enabled: bool = True
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    classes: list[int] = field(default_factory=list)
    samples_per_class: list[int] = field(default_factory=list)
    resolution: list[int] = field(default_factory=list)
    base_resolution: int = 0
    base_samples_per_class: int = 0
    folds: int = 5
    generator_set: Any = field(default_factory=dict)
    utility: Any = field(default_factory=dict)
    compositions: list[str] = field(default_factory=lambda: ["real", "synthetic-small"])
    alpha: float = 0.05

    def dimensions(self) -> dict[str, list[int]]:
        """The sweeps that are run: name -> values (in the given order)."""
        out = {"classes": self.classes, "samples_per_class": self.samples_per_class, "resolution": self.resolution}
        return {k: list(v) for k, v in out.items() if v}


@dataclass
class ProtocolConfig:
    """Everything ``synthmed protocol`` needs; see the module docstring.

    ``stages`` lists the stages that are run (``candidates`` and ``evaluation`` are needed by
    everything after them; ``utility`` and ``sweeps`` may be left out).
    """

    data: DataSection = field(default_factory=DataSection)
    candidates: CandidatesSection = field(default_factory=CandidatesSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    ranking: RankingSection = field(default_factory=RankingSection)
    conditioning: ConditioningSection = field(default_factory=ConditioningSection)
    #: the ``synthmed utility`` config of stage (e), without ``data`` and ``synthetic`` (the protocol sets them)
    utility: Any = field(default_factory=dict)
    sweeps: SweepsSection = field(default_factory=SweepsSection)
    #: stages that run: ``candidates``, ``evaluation``, ``conditioning``, ``utility``, ``sweeps`` (the last
    #: three need the first two)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    #: device of every training, sampling and evaluation (``auto``, ``cpu``, ``cuda``)
    device: str = "auto"
    #: seed of the subsample and split of the data, the synthetic pools and evaluation, and the utility protocol
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def conditioning_active(self) -> bool:
        """Whether stage (d) runs (listed in ``stages`` with at least one method)."""
        return "conditioning" in self.stages and bool(self.conditioning.methods)

    def candidate_specs(self) -> list[CandidateSpec]:
        return [_spec(m, i) for i, m in enumerate(self.candidates.models)]


def _spec(entry: Any, i: int) -> CandidateSpec:
    key = f"candidates.models[{i}]"
    if isinstance(entry, str):
        return CandidateSpec(entry, "", {})
    if isinstance(entry, dict):
        spec = from_dict(CandidateSpec, entry, key)
        if spec.set is None:
            spec.set = {}
        if not isinstance(spec.set, dict):
            raise ConfigError(f"config key '{key}.set': expected a mapping, got {spec.set!r}")
        if not spec.config:
            raise ConfigError(f"config key '{key}.config': give a shipped run config name or a YAML path")
        return spec
    raise ConfigError(f"config key '{key}': expected a run config name, a YAML path or a mapping "
                      f"{{config, name, set}}, got {entry!r}")


@dataclass
class Candidate:
    """One resolved candidate: display name, its run config (before the class label) and provenance."""

    name: str
    cfg: RunConfig
    source: str
    diffaugment: bool

    def run_config(self, label: str, seed: int | None = None, extra: dict[str, Any] | None = None,
                   conditioning: str | None = None) -> RunConfig:
        """The config of one run, optionally with another seed and overrides: of one class
        (``train.label``) when ``label`` is given, else on every class with ``model.conditioning``
        set to ``conditioning`` (``none``: unconditional; a conditional method: one model for
        every class, sampled with labels)."""
        raw = copy.deepcopy(self.cfg.to_dict())
        raw["train"]["label"] = label
        if not label and "conditioning" in raw["model"]:
            raw["model"]["conditioning"] = conditioning or "none"
            raw["model"]["num_classes"] = 0  # from the data
        if seed is not None:
            raw["train"]["seed"] = seed
        from synthmed.config import build_config

        return build_config(raw, overrides_from_mapping(extra or {}))


def overrides_from_mapping(mapping: dict[str, Any]) -> list[str]:
    """``{"train.iterations": 10}`` (or nested mappings) -> ``["train.iterations=10"]``."""
    out: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.append(f"{prefix}={json.dumps(value)}")

    for k, v in (mapping or {}).items():
        walk(str(k), v)
    return out


def resolve_candidates(cfg: ProtocolConfig) -> list[Candidate]:
    """Every (model, DiffAugment) candidate with its validated run config; ConfigError naming the key."""
    out: list[Candidate] = []
    common = overrides_from_mapping(cfg.candidates.set)
    for i, spec in enumerate(cfg.candidate_specs()):
        for aug in cfg.candidates.diffaugment:
            over = [*common, *overrides_from_mapping(spec.set), f"augment.enabled={json.dumps(aug)}",
                    f"train.subset={cfg.candidates.subset}", f"train.device={cfg.device}"]
            try:
                run_cfg = _run_config(spec.config, over)
            except ConfigError as e:
                raise ConfigError(f"config key 'candidates.models[{i}]' ({spec.config}): {e}") from None
            base = spec.name or Path(spec.config).stem.removesuffix("_diffaugment")
            name = base + ("+diffaugment" if aug else "")
            out.append(Candidate(name, run_cfg, spec.config, aug))
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config key 'candidates.models': two candidates are both named {dup[0]!r}; give them "
                          "distinct names ({config: ..., name: ...})")
    return out


def _run_config(name: str, overrides: list[str]) -> RunConfig:
    """A shipped run config or YAML path; else a registered model family's defaults (``model.name``)."""
    from synthmed.config import build_config

    try:
        resolve_config_path(name)
    except ConfigError:
        import synthmed.models  # noqa: F401  (fills the registry)
        from synthmed.registry import MODELS

        if name in MODELS.names():
            return build_config({"model": {"name": name}}, overrides)
        raise
    return load_config(name, overrides)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "classifier":
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def utility_mapping(cfg: ProtocolConfig, synthetic: dict[str, str] | None, data_path: str,
                    sweep: bool = False) -> dict[str, Any]:
    """The raw ``synthmed utility`` config of the utility stage (or of a sweep point)."""
    raw = copy.deepcopy(cfg.utility)
    if sweep:
        raw = _deep_merge(raw, cfg.sweeps.utility)
        raw.update(compositions=list(cfg.sweeps.compositions), folds=cfg.sweeps.folds, run_folds=[0])
        raw["occlusion"] = {**(raw.get("occlusion") or {}), "enabled": False}
        raw.setdefault("data", {})
    raw["data"] = {**(raw.get("data") or {}), "path": data_path, "max_subjects": 0}
    raw["synthetic"] = synthetic
    if "seed" not in raw:
        raw["seed"] = cfg.seed
    return raw


def build_protocol_config(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ProtocolConfig:
    """Validate a raw mapping (plus ``--set`` overrides) into a :class:`ProtocolConfig`."""
    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SECTIONS)}")
    cfg = from_dict(ProtocolConfig, data)
    _check(cfg)
    return cfg


def _mappings(cfg: ProtocolConfig) -> None:
    """The free-form sections (overrides, the utility config) must be mappings (None: empty)."""
    items = [("candidates.set", cfg.candidates, "set"), ("conditioning.set", cfg.conditioning, "set"),
             ("utility", cfg, "utility"),
             ("sweeps.generator_set", cfg.sweeps, "generator_set"), ("sweeps.utility", cfg.sweeps, "utility")]
    items += [(f"candidates.models[{i}].set", m, "set") for i, m in enumerate(cfg.candidate_specs())]
    for key, obj, attr in items:
        value = getattr(obj, attr)
        if value is None:
            setattr(obj, attr, {})
        elif not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")


def _check(cfg: ProtocolConfig) -> None:
    from synthmed.utility.compositions import COMPOSITIONS
    from synthmed.utility.config import build_utility_config

    _mappings(cfg)

    if not cfg.data.path:
        raise ConfigError("config key 'data.path': give the prepared dataset folder (synthmed preprocess output)")
    if cfg.data.resolution < 0 or cfg.data.max_subjects < 0:
        raise ConfigError("config keys 'data.resolution'/'data.max_subjects': expected >= 0")
    if cfg.data.resolution and cfg.data.resolution < 8:
        raise ConfigError(f"config key 'data.resolution': expected 0 or at least 8, got {cfg.data.resolution}")
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise ConfigError(f"config key 'stages': unknown stage {bad[0]!r}; expected any of: {', '.join(STAGES)}")
    if ({"conditioning", "utility", "sweeps"} & set(cfg.stages)) and not {"candidates", "evaluation"} <= set(cfg.stages):
        raise ConfigError("config key 'stages': the conditioning, utility and sweeps stages need the winner, so "
                          "'candidates' and 'evaluation' must be listed too")
    c = cfg.candidates
    if not c.models:
        raise ConfigError("config key 'candidates.models': give at least one run config (e.g. alpha_sngan)")
    if not c.diffaugment or len(set(c.diffaugment)) != len(c.diffaugment):
        raise ConfigError("config key 'candidates.diffaugment': expected [false], [true] or [false, true]")
    if c.conditioning not in CANDIDATE_CONDITIONING:
        raise ConfigError(f"config key 'candidates.conditioning': {c.conditioning!r} is not available; expected "
                          "none (one unconditional model on every class) or per-class (one per class); conditional "
                          "models are compared in stage (d), config key 'conditioning.methods'")
    k = cfg.conditioning
    for m in k.methods:
        if m not in CONDITIONING_METHODS:
            raise ConfigError(f"config key 'conditioning.methods': unknown method {m!r}; expected any of: "
                              f"{', '.join(CONDITIONING_METHODS)}")
    if len(set(k.methods)) != len(k.methods):
        raise ConfigError(f"config key 'conditioning.methods': a method is listed twice: {k.methods}")
    if k.winner and k.winner not in k.methods:
        raise ConfigError(f"config key 'conditioning.winner': {k.winner!r} is not one of conditioning.methods "
                          f"({', '.join(k.methods) or 'empty'})")
    if not cfg.conditioning_active() and c.conditioning != "per-class" and ({"utility", "sweeps"} & set(cfg.stages)):
        raise ConfigError("config key 'conditioning.methods': the utility and sweeps stages need synthetic images "
                          "of every class; list conditioning methods (e.g. [per-class, frozen-classifier]) and the "
                          "stage 'conditioning' in 'stages', or set candidates.conditioning: per-class")
    if c.subset not in ("all", "trainval"):
        raise ConfigError(f"config key 'candidates.subset': expected all or trainval, got {c.subset!r}")
    for key, value in (("candidates.set", c.set), ("sweeps.generator_set", cfg.sweeps.generator_set),
                       ("conditioning.set", k.set)):
        for k in overrides_from_mapping(value):
            if k.split("=", 1)[0].split(".")[0] not in ("model", "train", "augment"):
                raise ConfigError(f"config key '{key}': {k.split('=', 1)[0]!r} is not a run config key "
                                  "(model.*, train.*, augment.*)")
    e = cfg.evaluation
    if e.n_sets < 2:
        raise ConfigError(f"config key 'evaluation.n_sets': need at least 2 synthetic sets per candidate for the "
                          f"statistics between candidates, got {e.n_sets}")
    if e.split not in ("all", "trainval", "test"):
        raise ConfigError(f"config key 'evaluation.split': expected all, trainval or test, got {e.split!r}")
    if e.max_real < 0 or e.batch_size < 1 or e.extractor_iterations < 1 or e.ssim_queries < 0:
        raise ConfigError("config section 'evaluation': expected max_real >= 0, batch_size >= 1, "
                          "extractor_iterations >= 1, ssim_queries >= 0")
    for m in e.embeddings:
        if m not in ("pca", "mds"):
            raise ConfigError(f"config key 'evaluation.embeddings': unknown method {m!r}; expected pca, mds")
    r = cfg.ranking
    for key, names in (("ranking.metric", [r.metric]), ("ranking.tested_metrics", r.tested_metrics)):
        for m in names:
            if m not in FEATURE_METRICS:
                raise ConfigError(f"config key '{key}': unknown metric {m!r}; expected any of: "
                                  f"{', '.join(FEATURE_METRICS)}")
    if not 0 < r.alpha < 1 or not 0 < cfg.sweeps.alpha < 1:
        raise ConfigError("config keys 'ranking.alpha'/'sweeps.alpha': expected a number in (0, 1)")
    for key in ("data", "synthetic"):
        if key in cfg.utility or key in cfg.sweeps.utility:
            raise ConfigError(f"config key 'utility.{key}': the protocol sets it (the data of 'data', the winner's "
                              "runs); remove it")
    try:
        build_utility_config(utility_mapping(cfg, {"_": "_"}, cfg.data.path))
    except ConfigError as e:
        raise ConfigError(f"config section 'utility': {e}") from None
    s = cfg.sweeps
    if s.enabled and "sweeps" in cfg.stages:
        if not s.seeds or len(set(s.seeds)) != len(s.seeds):
            raise ConfigError("config key 'sweeps.seeds': expected distinct seeds")
        for key, values, low in (("classes", s.classes, 2), ("samples_per_class", s.samples_per_class, 1),
                                 ("resolution", s.resolution, 8)):
            if any(v < low for v in values) or len(set(values)) != len(values):
                raise ConfigError(f"config key 'sweeps.{key}': expected distinct values >= {low}, got {values}")
        if s.base_resolution < 0 or s.base_samples_per_class < 0:
            raise ConfigError("config keys 'sweeps.base_resolution'/'sweeps.base_samples_per_class': expected >= 0")
        if not s.compositions or s.compositions[0] != "real" or len(s.compositions) < 2:
            raise ConfigError("config key 'sweeps.compositions': expected 'real' first, then the synthetic "
                              f"training sets to compare with it (e.g. [real, synthetic-small]), got {s.compositions}")
        for comp in s.compositions:
            if comp not in COMPOSITIONS:
                raise ConfigError(f"config key 'sweeps.compositions': unknown composition {comp!r}")
        try:
            build_utility_config(utility_mapping(cfg, {"_": "_"}, cfg.data.path, sweep=True))
        except ConfigError as e:
            raise ConfigError(f"config section 'sweeps.utility': {e}") from None


def resolve_protocol_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a shipped protocol config name (``protocol_quick`` -> configs/protocol_quick.yaml)."""
    return resolve_config_path(name_or_path, "protocol")


def load_protocol_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ProtocolConfig:
    """Load a YAML path or shipped protocol config name, apply ``--set`` overrides, validate strictly."""
    return load_validated(resolve_protocol_config_path(name_or_path), build_protocol_config, overrides)


def dump_protocol_config(cfg: ProtocolConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


_plain = plain  # shared with synthmed.config
