"""The truncation trick (BigGAN): a truncated-normal latent, per-seed reproducible, recorded, validated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.generate.sample import sample, truncated_latent
from synthmed.models import get_family
from synthmed.protocol.candidates import ensure_run
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
        "train.n_preview=2"]


def _codes(psi: float | None, n: int = 4000, dim: int = 8) -> np.ndarray:
    fam = get_family("sngan")
    params = load_config("sngan", [f"model.latent_dim={dim}"]).model.params
    return np.stack([truncated_latent(fam, params, torch.Generator().manual_seed(s), psi).numpy() for s in range(n)])


def test_truncated_latent_is_the_truncated_normal() -> None:
    """Known answer: redrawing |z_i| > psi gives the standard normal truncated to [-psi, psi] (KS test against
    scipy's truncnorm), per component and independent of the others."""
    z = _codes(0.7)
    assert np.abs(z).max() <= 0.7
    p = stats.kstest(z.ravel(), stats.truncnorm(-0.7, 0.7).cdf).pvalue
    assert p > 1e-3
    # not the same as uniform on [-psi, psi] or the untruncated normal: the test can fail
    assert stats.kstest(z.ravel(), stats.uniform(-0.7, 1.4).cdf).pvalue < 1e-6
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.06


def test_no_truncation_is_the_family_latent_and_seeds_are_stable() -> None:
    fam = get_family("sngan")
    params = load_config("sngan", ["model.latent_dim=8"]).model.params
    plain = truncated_latent(fam, params, torch.Generator().manual_seed(5), None)
    assert torch.equal(plain, fam.sample_latent(params, 1, torch.Generator().manual_seed(5))[0])
    a = truncated_latent(fam, params, torch.Generator().manual_seed(5), 1.0)
    b = truncated_latent(fam, params, torch.Generator().manual_seed(5), 1.0)
    assert torch.equal(a, b)
    inside = plain.abs() <= 1.0  # components already inside are kept: truncation only redraws the outliers
    assert torch.equal(a[inside], plain[inside])


@pytest.mark.parametrize("psi", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_thresholds_are_refused(psi: float) -> None:
    with pytest.raises(ConfigError, match="truncation"):
        _codes(psi, n=1)
    with pytest.raises(ConfigError, match="sample.truncation"):
        load_config("sngan", [f"sample.truncation={psi}"])


def test_cli_records_truncation_and_none_overrides_the_run(tiny2d: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = train(load_config("sngan", [*TINY, "sample.truncation=0.5"]), tiny2d, tmp_path / "run", progress=False)
    default = sample(run, 3, tmp_path / "default", progress=False)
    rows = list(csv.DictReader(open(default / "manifest.csv", encoding="utf-8")))
    assert {r["truncation"] for r in rows} == {"0.5"}
    assert json.loads((default / "sample.json").read_text(encoding="utf-8"))["truncation"] == 0.5
    argv = ["sample", str(run), "--n", "3", "--no-progress", "--out"]
    assert main([*argv, str(tmp_path / "none"), "--truncation", "none"]) == 0
    assert json.loads((tmp_path / "none" / "sample.json").read_text(encoding="utf-8"))["truncation"] is None
    assert main([*argv, str(tmp_path / "half"), "--truncation", "0.5"]) == 0
    same = [(tmp_path / d / "synthetic_00001.png").read_bytes() for d in ("default", "half")]
    assert same[0] == same[1]
    assert (tmp_path / "none" / "synthetic_00001.png").read_bytes() != same[0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*argv, str(tmp_path / "bad"), "--truncation", "-2"])
    assert e.value.code == 2 and "--truncation" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_sampling_settings_do_not_change_what_is_trained(tiny2d: Path, tmp_path: Path) -> None:
    """A finished run is kept when only sample.* differs (the protocol's fingerprint), and --resume accepts it."""
    cfg = load_config("sngan", TINY)
    first = ensure_run(cfg, tiny2d, tmp_path / "run", progress=False)
    assert not first["reused"]
    again = ensure_run(load_config("sngan", [*TINY, "sample.truncation=0.8"]), tiny2d, tmp_path / "run", progress=False)
    assert again["reused"]
    more = load_config("sngan", [*TINY, "train.iterations=3", "sample.truncation=0.8"])
    train(more, tiny2d, tmp_path / "run", resume=True, progress=False)
