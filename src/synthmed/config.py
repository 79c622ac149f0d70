"""Typed, strict run configuration.

Defaults live in code (the dataclasses below, with the paper's hyper-parameters); a YAML file
overrides only what changes; ``--set a.b=value`` overrides single keys.  Unknown keys and wrong
types are errors that name the key.  The ``model`` section is validated against the parameter
dataclass of the model family it names (see ``synthmed.models``).

Example YAML::

    model:
      name: alpha_sngan
      latent_dim: 1000
    train:
      iterations: 12000
      batch_size: 4
    augment:
      enabled: true
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from synthmed.errors import ConfigError

#: Shipped configs live inside the package so an installed ``synthmed`` finds them.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.  Defaults: paper 000, "GAN training" (Adam, lr 2e-4,
    betas (0.5, 0.999), batch 4, 12,000 iterations)."""

    #: training iterations, one update of every network each (paper 000: 12,000)
    iterations: int = 12000
    #: images per iteration and process (paper 000: 4); under DDP every process takes a batch
    batch_size: int = 4
    #: Adam learning rate of every network (paper 000: 2e-4); ``lr_g`` / ``lr_d`` override it per side
    lr: float = 2e-4
    #: Adam betas (paper 000: (0.5, 0.999))
    betas: tuple[float, float] = (0.5, 0.999)
    #: seed of the weights, the data order and the latents (runs with the same seed are bit-identical)
    seed: int = 0
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun each process takes its local GPU
    device: str = "auto"
    #: ``fp32``, or autocast mixed precision: ``bf16``, ``fp16`` (with loss scaling)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: rows of the prepared split to train on: ``trainval`` (all but the held-out test set), ``train``
    #: (the training part of ``fold``) or ``all``
    subset: Literal["all", "trainval", "train"] = "trainval"
    #: the cross-validation fold of ``subset: train``
    fold: int = 0
    #: train on one class only (class name or integer label; empty = every class): one
    #: unconditional model per class, as paper 000's "one GAN per class" conditioning
    label: str | int = ""
    #: iterations between rows of ``metrics.csv`` / TensorBoard scalars
    log_every: int = 10
    #: iterations between PNG sample grids in ``RUN/samples/``
    sample_every: int = 500
    #: iterations between checkpoints (``RUN/checkpoints/last.pt``, written atomically)
    checkpoint_every: int = 500
    #: images in each sample grid, from fixed latents
    n_preview: int = 8
    #: a mean loss beyond this (or NaN/Inf) stops the run as diverged, keeping the last good checkpoint
    divergence_threshold: float = 1.0e4
    #: data-loader worker processes (0: load in the training process)
    num_workers: int = 0
    #: FID during training (paper 004 S.3): every N iterations (0 = off), against the training images; logged to
    #: ``fid.csv`` and TensorBoard ``eval/fid``, the best model kept as ``checkpoints/best.pt``
    fid_every: int = 0
    #: feature extractor of the FID monitor (``synthmed list``)
    fid_extractor: str = "indomain-ae"
    #: extractor weights; empty with ``indomain-ae`` trains one on the training images first
    fid_weights: str = ""
    #: synthetic samples per evaluation (0 = as many as training images)
    fid_samples: int = 0
    #: training iterations of the in-domain autoencoder when ``fid_weights`` is empty (saved as ``RUN/fid_extractor.pt``)
    fid_extractor_iterations: int = 500
    #: no early stop before this many iterations (paper 004 S.3)
    fid_min_iterations: int = 0
    #: stop after this many evaluations without improvement (0 = never stop early)
    fid_patience: int = 2
    #: separate learning rates of the generator side (G, encoders) and the discriminators (D, CD);
    #: 0 = ``lr`` (TTUR, Heusel et al. 2017; StyleGAN2-ADA trains both at 0.0025 but with R1)
    lr_g: float = 0.0
    #: learning rate of the discriminators (D, CD); 0 = ``lr``
    lr_d: float = 0.0
    #: exponential moving average of G's weights (StyleGAN2-ADA ``ema_kimg``): half-life in thousands of
    #: images (0 = off); previews, FID monitoring and sampling use the average (``synthmed.train.ema``)
    ema_kimg: float = 0.0
    #: ramp-up of the EMA half-life (StyleGAN2-ADA ``ema_rampup``; 0 = none): at most ``images_seen x this``
    ema_rampup: float = 0.0
    #: R1 gradient penalty on real images, ``gamma/2 E|grad_x D(x)|^2`` (Mescheder et al. 2018; 0 = off); the
    #: SN-GAN, alpha-SN-GAN and DCGAN steps take it
    r1_gamma: float = 0.0
    #: lazy regularisation: the penalty every N discriminator updates, scaled by N (Karras et al. 2020)
    r1_every: int = 1
    #: the collapse guards (``synthmed.train.guards``): warn after this many log intervals in a row
    guard_patience: int = 5


@dataclass
class AugmentConfig:
    """Differentiable augmentation of every discriminator input (DiffAugment; paper 000)."""

    #: DiffAugment on every discriminator input, real and fake (paper 000: with and without)
    enabled: bool = False
    #: registered augmentation (``synthmed list``)
    name: str = "diffaugment"
    #: operations, any of ``translation``, ``cutout``, ``intensity`` (DiffAugment's, for any number of spatial dims)
    policy: list[str] = field(default_factory=lambda: ["translation", "cutout", "intensity"])
    #: shift by up to this fraction of each side (paper 000: 1/8)
    translation_ratio: float = 0.125
    #: cut out a box of this fraction of each side (paper 000: half)
    cutout_ratio: float = 0.5
    #: value of translated-in and cut-out voxels (0 as in DiffAugment; -1 is the background of prepared data)
    fill: float = 0.0
    #: probability that each operation is applied to a sample (1 = always, as DiffAugment)
    p: float = 1.0
    #: adaptive augmentation (Karras et al. 2020, "ADA"): > 0 adjusts ``p`` so that the overfitting
    #: heuristic r_t = E[sign D(real)] stays at this target (0.6 in StyleGAN2-ADA); 0 = fixed ``p``
    ada_target: float = 0.0
    #: iterations between adjustments of ``p`` (StyleGAN2-ADA: 4)
    ada_interval: int = 4
    #: how fast ``p`` can move: from 0 to 1 in this many thousand images (StyleGAN2-ADA: 500)
    ada_kimg: float = 500.0


@dataclass
class SampleConfig:
    """How ``synthmed sample`` (and every command that generates from the run: ``evaluate``, ``utility``,
    ``protocol``, ``reference``) draws latent codes by default.  Changing it never changes training, so a
    finished run keeps its fingerprint and ``--resume`` accepts a new value."""

    #: the truncation trick (Brock et al. 2019, "BigGAN", Sec. 3.1; the precision/recall trade-off of
    #: Kynkäänniemi et al. 2019, Fig. 7): every latent component with ``|z_i| > truncation`` is redrawn
    #: until it lies inside, which trades diversity (recall) for fidelity (precision).  None = no truncation
    #: (z ~ N(0, I), the papers' sampling); ``synthmed sample --truncation`` overrides it.
    truncation: float | None = None
    #: the density latent codes are drawn from: ``standard`` = N(0, I), the VAE's own prior; ``gmm`` =
    #: ex-post density estimation (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
    #: ICLR, Sec. 4): a full-covariance Gaussian mixture fitted to the posterior means of the run's training
    #: images, so samples come from where the encoder put the data (the aggregate posterior) rather than from
    #: the parts of N(0, I) it left empty.  Families with a Gaussian posterior only (vae, dfc_vae, intro_vae);
    #: ``synthmed sample --prior`` overrides it.
    prior: Literal["standard", "gmm"] = "standard"
    #: components of the ``gmm`` prior (Ghosh et al. 2020, Sec. 4: 10, full covariance); a conditional
    #: (``cvae``) run fits one mixture per class, with at most as many components as the class has images
    prior_components: int = 10


@dataclass
class ModelConfig:
    """``name`` picks a registered model family; ``params`` is that family's typed parameters."""

    name: str = "alpha_sngan"
    params: Any = None


@dataclass
class RunConfig:
    """A validated ``synthmed train`` config: the model family with its parameters, training and
    augmentation (built by :func:`load_config` / :func:`build_config`; every key is listed in the
    configuration reference)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the YAML written into every run folder)."""
        out = {
            "model": {"name": self.model.name, **_plain(self.model.params)},
            "train": _plain(self.train),
            "augment": _plain(self.augment),
            "sample": _plain(self.sample),
        }
        return out


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {', '.join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)}"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp``; return it converted (int→float, list→tuple).

    Raises:
        ConfigError: naming ``key`` and the expected type.
    """
    origin = get_origin(tp)
    bad = ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is list:
        (arg,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"config key {key!r}: unsupported type {tp!r}")  # pragma: no cover


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    where = prefix or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        full = [f"{prefix}.{k}" if prefix else str(k) for k in unknown]
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, full))}; "
                          f"allowed in {where!r}: {', '.join(names)}")
    kwargs = {k: coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.iterations=100"`` → ``("train.iterations", 100)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.iterations=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({e})") from None
    return key, value


def resolve_config_path(name_or_path: str | Path, kind: str = "run") -> Path:
    """A YAML path, or the name of a shipped config of ``kind`` (see :func:`shipped_configs`;
    ``alpha_sngan`` → configs/alpha_sngan.yaml)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    names = shipped_configs(kind)
    if str(name_or_path) in names:
        return CONFIG_DIR / f"{name_or_path}.yaml"
    what = "config" if kind == "run" else f"{kind} config"
    raise ConfigError(f"{name_or_path!r} is neither a YAML file nor a shipped {what}; "
                      f"shipped {what}s: {', '.join(names)}")


#: shipped-config name prefixes of the configs that are not training runs (``synthmed utility``, ``synthmed protocol``).
CONFIG_KINDS = {"utility": "utility_", "protocol": "protocol_"}


def shipped_configs(kind: str | None = "run") -> list[str]:
    """Names of the shipped configs of one kind: ``run`` (``synthmed train``), ``utility``,
    ``protocol`` (by name prefix), or every one with ``kind=None``."""
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    #: the reference runs of issue 13 (``synthmed reference``), trainable as ``reference/<name>``
    reference = sorted(f"reference/{p.stem}" for p in (CONFIG_DIR / "reference").glob("*.yaml"))
    if kind is None:
        return sorted(names + reference)
    if kind == "run":
        return [n for n in names if not n.startswith(tuple(CONFIG_KINDS.values()))] + reference
    return [n for n in names if n.startswith(CONFIG_KINDS[kind])]


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def build_config(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a raw config mapping (plus ``--set`` overrides) into a ``RunConfig``."""
    import copy

    from synthmed.models import get_family

    data = copy.deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    unknown = sorted(set(data) - {"model", "train", "augment", "sample"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(map(repr, unknown))}; "
                          "allowed: model, train, augment, sample")
    model_raw = dict(data.get("model") or {})
    if not isinstance(data.get("model", {}) or {}, dict):
        raise ConfigError("config section 'model': expected a mapping")
    name = model_raw.pop("name", ModelConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"config key 'model.name': expected str, got {name!r}")
    family = get_family(name)
    params = from_dict(family.Params, model_raw, "model")
    check_conditioning = getattr(family, "check_conditioning", None)
    if check_conditioning is not None:  # the GAN families' conditioning keys (synthmed.models.gan.conditioning)
        check_conditioning(params, need_classes=False)
    cfg = RunConfig(
        model=ModelConfig(name=name, params=params),
        train=from_dict(TrainConfig, data.get("train"), "train"),
        augment=from_dict(AugmentConfig, data.get("augment"), "augment"),
        sample=from_dict(SampleConfig, data.get("sample"), "sample"),
    )
    check_truncation(cfg.sample.truncation, "config key 'sample.truncation'")
    check_prior(cfg.sample.prior, cfg.sample.prior_components, family, "config key 'sample.prior'")
    make_augment(cfg)  # validates augment.name / policy / ratios even when disabled
    _check_train(cfg.train)
    return cfg


def check_truncation(psi: float | None, where: str) -> float | None:
    """``psi`` if it is None or a finite number > 0 (a truncation threshold in standard deviations), else
    a ConfigError naming ``where``."""
    import math

    if psi is not None and not (math.isfinite(psi) and psi > 0):
        raise ConfigError(f"{where}: expected a threshold > 0 in standard deviations (e.g. 0.7-1.0) or none, got {psi}")
    return psi


def check_prior(prior: str, components: int, family: Any, where: str) -> str:
    """``prior`` if it is a latent prior ``family`` can be sampled from (``sample.prior``), else a ConfigError
    naming ``where``: ``gmm`` (ex-post density estimation, Ghosh et al. 2020) needs a family with a Gaussian
    posterior and at least one component."""
    if prior not in ("standard", "gmm"):
        raise ConfigError(f"{where}: expected 'standard' or 'gmm', got {prior!r}")
    if components < 1:
        raise ConfigError(f"config key 'sample.prior_components': expected a positive integer, got {components}")
    if prior == "gmm" and not getattr(family, "gaussian_posterior", False):
        from synthmed.registry import MODELS

        names = ", ".join(n for n, cls in MODELS.items() if getattr(cls, "gaussian_posterior", False))
        name = next((n for n, cls in MODELS.items() if cls is type(family)), type(family).__name__)
        raise ConfigError(f"{where}: the gmm prior (ex-post density estimation, Ghosh et al. 2020) is fitted to the "
                          f"posterior means of a VAE encoder; model family {name} has none (families "
                          f"with one: {names}); sample it with the standard prior (--prior standard)")
    return prior


def make_augment(cfg: RunConfig) -> Any:
    """The configured differentiable augmentation (ConfigError naming the key if invalid)."""
    import synthmed.augment  # noqa: F401  (fills AUGMENTS)
    from synthmed.registry import AUGMENTS

    a = cfg.augment
    try:
        cls = AUGMENTS.get(a.name)
    except ConfigError as e:
        raise ConfigError(f"config key 'augment.name': {e}") from None
    try:
        aug = cls(policy=a.policy, translation_ratio=a.translation_ratio, cutout_ratio=a.cutout_ratio, fill=a.fill)
    except (ValueError, ConfigError) as e:
        raise ConfigError(f"config section 'augment': {e}") from None
    if not 0.0 <= a.p <= 1.0:
        raise ConfigError(f"config key 'augment.p': expected a probability in [0, 1], got {a.p}")
    if not 0.0 <= a.ada_target < 1.0:
        raise ConfigError(f"config key 'augment.ada_target': expected a number in [0, 1) (0 = off), got {a.ada_target}")
    if a.ada_interval < 1 or not a.ada_kimg > 0:
        raise ConfigError("config keys 'augment.ada_interval' / 'augment.ada_kimg': expected a positive integer / "
                          f"number, got {a.ada_interval} / {a.ada_kimg}")
    if hasattr(aug, "p"):
        aug.p = a.p
    elif a.p != 1.0 or a.ada_target:
        raise ConfigError(f"config key 'augment.p': augmentation {a.name!r} has no application probability")
    return aug


def _check_train(t: TrainConfig) -> None:
    positive = ("iterations", "batch_size", "log_every", "sample_every", "checkpoint_every", "n_preview", "r1_every",
                "guard_patience")
    for key in positive:
        if getattr(t, key) < 1:
            raise ConfigError(f"config key 'train.{key}': expected a positive integer, got {getattr(t, key)}")
    for key in ("fid_every", "fid_samples", "fid_min_iterations", "fid_patience", "num_workers"):
        if getattr(t, key) < 0:
            raise ConfigError(f"config key 'train.{key}': expected a non-negative integer, got {getattr(t, key)}")
    if t.fid_every:
        from synthmed.features.base import EXTRACTORS

        if t.fid_extractor not in EXTRACTORS and not t.fid_extractor.startswith("planes:"):
            raise ConfigError(f"config key 'train.fid_extractor': unknown extractor {t.fid_extractor!r}; "
                              f"expected one of: {', '.join(EXTRACTORS.names())}")
    if not t.lr > 0:
        raise ConfigError(f"config key 'train.lr': expected a positive number, got {t.lr}")
    for key in ("lr_g", "lr_d", "ema_kimg", "ema_rampup", "r1_gamma"):
        if getattr(t, key) < 0:
            raise ConfigError(f"config key 'train.{key}': expected a non-negative number (0 = off), got {getattr(t, key)}")
    if not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"config key 'train.betas': expected two numbers in [0, 1), got {list(t.betas)}")


def load_validated(path: Path, build: Any, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """``build(read_yaml(path), overrides)`` with the file named in any ConfigError (shared by the run,
    utility and protocol configs)."""
    try:
        return build(read_yaml(path), overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def plain(obj: Any) -> Any:
    """Dataclasses, lists, tuples and dicts, recursively, as plain dicts and lists (for YAML/JSON)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a YAML path or shipped config name, apply overrides, validate strictly."""
    return load_validated(resolve_config_path(name_or_path), build_config, overrides)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
