"""Config: strict keys and types, overrides, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthmed.config import build_config, dump_config, load_config, read_yaml, shipped_configs
from synthmed.errors import ConfigError


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads(name: str) -> None:
    from synthmed.registry import MODELS

    cfg = load_config(name)
    assert cfg.model.name in MODELS.names()
    assert cfg.train.iterations > 0


def test_shipped_config_kinds_partition_the_folder() -> None:
    kinds = [shipped_configs(k) for k in ("run", "utility", "protocol")]
    assert sorted(sum(kinds, [])) == shipped_configs(None)
    assert "alpha_sngan" in kinds[0] and "utility_quick" in kinds[1]


def test_paper_defaults() -> None:
    cfg = load_config("alpha_sngan")
    assert cfg.model.params.latent_dim == 1000
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.betas == (0.5, 0.999)
    assert cfg.train.batch_size == 4
    assert cfg.train.iterations == 12000
    assert cfg.model.params.adversarial_loss == "hinge"
    assert cfg.model.params.reconstruction_loss == "l1"
    assert cfg.augment.enabled is False


def test_overrides_apply_and_parse_types() -> None:
    cfg = load_config("alpha_sngan", ["train.iterations=100", "train.batch_size=2", "model.latent_dim=64",
                                      "train.betas=[0.0, 0.99]", "augment.enabled=true", "train.lr=1e-3"])
    assert cfg.train.iterations == 100 and cfg.train.batch_size == 2
    assert cfg.model.params.latent_dim == 64
    assert cfg.train.betas == (0.0, 0.99)
    assert cfg.augment.enabled is True
    assert cfg.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(("override", "key"), [
    ("train.iterationz=5", "train.iterationz"),
    ("model.latent=5", "model.latent"),
    ("augment.foo=1", "augment.foo"),
    ("trainer.iterations=5", "trainer"),
])
def test_unknown_keys_are_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("alpha_sngan", [override])


@pytest.mark.parametrize(("override", "key"), [
    ("train.batch_size=four", "train.batch_size"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("train.iterations=true", "train.iterations"),
    ("augment.enabled=3", "augment.enabled"),
    ("train.betas=[0.5]", "train.betas"),
    ("train.precision=fp8", "train.precision"),
    ("model.adversarial_loss=mse", "model.adversarial_loss"),
    ("train.iterations=0", "train.iterations"),
    ("train.lr=-1", "train.lr"),
])
def test_wrong_types_and_values_are_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("alpha_sngan", [override])


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match="alpha_sngan"):
        build_config({"model": {"name": "stylegan9"}})


def test_bad_augment_policy() -> None:
    with pytest.raises(ConfigError, match="augment"):
        build_config({"augment": {"policy": ["rotate90"]}})


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("sngan", ["train.iterations"])


def test_missing_and_unknown_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="shipped configs"):
        load_config("no_such_config")


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  iterations: [1\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(p)
    p.write_text("train:\n  itrations: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*train\.itrations"):
        load_config(p)


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config("sngan_diffaugment", ["model.latent_dim=12", "train.betas=[0.1, 0.2]"])
    p = tmp_path / "resolved.yaml"
    p.write_text(dump_config(cfg))
    again = build_config(read_yaml(p))
    assert again == cfg
