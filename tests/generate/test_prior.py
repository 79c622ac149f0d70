"""Ex-post density estimation (Ghosh et al. 2020, Sec. 4): the gmm prior of the VAEs, its fit, cache,
per-seed determinism, the CLI record and the refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import ConfigError, DataError
from synthmed.generate import prior as P
from synthmed.generate.sample import generate_batch, latent_code, load_run, sample
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=2",
        "train.n_preview=2", "train.batch_size=4"]
GMM = ["sample.prior=gmm", "sample.prior_components=2"]


def _vae(data: Path, out: Path, *overrides: str) -> Path:
    return train(load_config("vae", [*TINY, *overrides]), data, out, progress=False)


def _known_mixture(n: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` codes from 0.3 N(m0, C0) + 0.7 N(m1, C1) in ``dim`` dimensions (means 6 apart on z0, z1)."""
    rng = np.random.default_rng(seed)
    means = np.zeros((2, dim))
    means[0, :2], means[1, :2] = (-3.0, 1.0), (3.0, -1.0)
    covs = []
    for _ in range(2):
        a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
        covs.append(a @ a.T + 0.2 * np.eye(dim))
    weights = np.array([0.3, 0.7])
    k = rng.random(n) < weights[0]
    codes = np.where(k[:, None], rng.multivariate_normal(means[0], covs[0], n), rng.multivariate_normal(means[1], covs[1], n))
    return codes, {"weights": weights, "means": means, "covariances": np.stack(covs)}


def test_fit_recovers_a_known_mixture_and_samples_have_its_moments(tiny2d: Path, tmp_path: Path) -> None:
    """Known answer: EM on 4000 codes of a known 2-component mixture recovers its weights, means and
    covariances; codes drawn through the sampler (``latent_code``) have the mixture's mean, covariance and
    component fractions, unlike N(0, I)."""
    codes, truth = _known_mixture(4000)
    gm, fit = P.fit_gmm(codes, 2)
    assert fit["components"] == 2 and fit["converged"]
    order = np.argsort(gm.means[:, 0])  # component order is EM's: sort by the first coordinate
    assert gm.weights[order] == pytest.approx(truth["weights"], abs=0.03)
    assert np.abs(gm.means[order] - truth["means"]).max() < 0.15
    assert np.abs(gm.covariances[order] - truth["covariances"]).max() < 0.15

    run = load_run(_vae(tiny2d, tmp_path / "run"), device="cpu")
    run.prior, run.prior_components = "gmm", 2
    run.latent_prior = P.LatentPrior({P.ALL: gm}, {"checkpoint_sha256": run.checkpoint_sha256, "components": 2})
    z = torch.stack([latent_code(run, s) for s in range(4000)]).double().numpy()
    w, m, c = truth["weights"], truth["means"], truth["covariances"]
    mean = w @ m
    cov = sum(w[k] * (c[k] + np.outer(m[k] - mean, m[k] - mean)) for k in range(2))
    assert np.abs(z.mean(0) - mean).max() < 0.12  # ~4 standard errors (sd <= 3.2, n = 4000)
    assert np.abs(np.cov(z.T) - cov).max() < 0.35
    assert (z[:, 0] < 0).mean() == pytest.approx(0.3, abs=0.03)
    run.prior = "standard"  # the test can fail: N(0, I) has neither the mean nor the spread
    z0 = torch.stack([latent_code(run, s) for s in range(500)]).double().numpy()
    assert np.abs(z0.mean(0)[:2] - mean[:2]).max() > 1.0


def test_codes_are_deterministic_per_seed_and_independent_of_the_batch(tiny2d: Path, tmp_path: Path) -> None:
    run = load_run(_vae(tiny2d, tmp_path / "run", *GMM), device="cpu")
    assert run.prior == "gmm" and run.prior_components == 2
    codes = torch.stack([latent_code(run, s) for s in range(5)])
    assert torch.equal(codes, torch.stack([latent_code(run, s) for s in (4, 3, 2, 1, 0)]).flip(0))
    # the decoder's batched convolutions may differ in the last float bit, never more
    one = np.concatenate([generate_batch(run, [s]) for s in range(5)])
    together = generate_batch(run, list(range(5)))
    assert np.allclose(one, together, atol=1e-6, rtol=0)
    assert np.allclose(generate_batch(run, [3]), together[3:4], atol=1e-6, rtol=0)
    run.prior = "standard"
    assert not np.allclose(generate_batch(run, list(range(5))), together)
    # the mixture is of the posterior means of the run's 6 training images (8 minus the test split)
    assert run.latent_prior.meta["n_codes"] == len(json.loads((tmp_path / "run" / "data.json").read_text())["train_subject_ids"])


def test_the_fit_is_cached_and_refitted_for_a_new_checkpoint(tiny2d: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _vae(tiny2d, tmp_path / "run", *GMM)
    first = sample(run_dir, 3, tmp_path / "a", progress=False)
    cached = sorted((run_dir / "prior").glob("*.npz"))
    assert len(cached) == 1 and cached[0].name.startswith("gmm2-")
    fits: list[int] = []
    real_fit = P.fit_prior
    monkeypatch.setattr(P, "fit_prior", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    second = sample(run_dir, 3, tmp_path / "b", progress=False)
    assert fits == []  # reused: not refitted
    assert (first / "synthetic_00002.png").read_bytes() == (second / "synthetic_00002.png").read_bytes()
    assert json.loads((second / "sample.json").read_text())["prior_fit"]["cache"] == str(cached[0])
    # other components: another cache file
    sample(run_dir, 1, tmp_path / "c", progress=False, prior_components=3)
    assert fits == [1] and (run_dir / "prior" / cached[0].name.replace("gmm2-", "gmm3-")).is_file()
    # a new checkpoint (two more iterations): refitted under its own hash
    train(load_config("vae", [*TINY, *GMM, "train.iterations=4"]), tiny2d, run_dir, resume=True, progress=False)
    sample(run_dir, 1, tmp_path / "d", progress=False)
    assert fits == [1, 1] and len(list((run_dir / "prior").glob("gmm2-*.npz"))) == 2
    # a cache that disagrees with the run (here: another checkpoint's record) is refitted, not trusted
    newest = P.cache_path(load_run(run_dir, device="cpu"), 2)
    prior = P.load_prior(newest)
    prior.meta["checkpoint_sha256"] = "0" * 64
    P.save_prior(prior, newest)
    sample(run_dir, 1, tmp_path / "e", progress=False)
    assert fits == [1, 1, 1]


def test_cli_records_the_prior(tiny2d: Path, tmp_path: Path) -> None:
    run_dir = _vae(tiny2d, tmp_path / "run")
    argv = ["sample", str(run_dir), "--n", "3", "--no-progress", "--out"]
    assert main([*argv, str(tmp_path / "gmm"), "--prior", "gmm", "--prior-components", "2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "gmm" / "manifest.csv", encoding="utf-8")))
    assert {(r["prior"], r["prior_components"]) for r in rows} == {("gmm", "2")}
    meta = json.loads((tmp_path / "gmm" / "sample.json").read_text(encoding="utf-8"))
    assert meta["prior"] == "gmm" and meta["prior_components"] == 2
    assert meta["prior_fit"]["components"] == 2 and meta["prior_fit"]["checkpoint_sha256"] == meta["checkpoint_sha256"]
    assert main([*argv, str(tmp_path / "std")]) == 0  # the run's default: standard
    rows = list(csv.DictReader(open(tmp_path / "std" / "manifest.csv", encoding="utf-8")))
    assert {(r["prior"], r["prior_components"]) for r in rows} == {("standard", "")}
    assert json.loads((tmp_path / "std" / "sample.json").read_text(encoding="utf-8"))["prior_fit"] is None
    assert (tmp_path / "gmm" / "synthetic_00001.png").read_bytes() != (tmp_path / "std" / "synthetic_00001.png").read_bytes()


def test_gan_families_refuse_the_gmm_prior(tiny2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"sample.prior.*family sngan has none \(families with one: dfc_vae, intro_vae, vae\)"):
        load_config("sngan", ["sample.prior=gmm"])
    run_dir = train(load_config("sngan", TINY), tiny2d, tmp_path / "run", progress=False)
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--n", "2", "--no-progress", "--out", str(tmp_path / "s"), "--prior", "gmm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prior" in err and "gmm prior" in err and "sngan" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="sample.prior"):
        load_config("vae", ["sample.prior=flow"])
    with pytest.raises(ConfigError, match="sample.prior_components"):
        load_config("vae", ["sample.prior_components=0"])


def test_missing_training_data_is_one_clear_line(tiny2d: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _vae(tiny2d, tmp_path / "run")
    moved = tmp_path / "moved"
    shutil.move(str(tiny2d), moved)
    argv = ["sample", str(run_dir), "--n", "2", "--no-progress", "--prior", "gmm", "--prior-components", "2", "--out"]
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tiny2d) in err and "is gone" in err and "--prior-data" in err
    assert not (tmp_path / "s").exists()
    assert main([*argv, str(tmp_path / "s"), "--prior-data", str(moved)]) == 0  # its new place
    other = tmp_path / "other"
    from synth_testdata import make_tiny_prepared

    make_tiny_prepared(other, 2, 16, 8, seed=1)  # same subjects, other images
    with pytest.raises(DataError, match="not those the run was trained on"):
        sample(run_dir, 1, tmp_path / "t", progress=False, prior="gmm", prior_components=3, prior_data=other)


def test_a_conditional_vae_gets_one_mixture_per_class(tiny2d: Path, tmp_path: Path) -> None:
    run = load_run(_vae(tiny2d, tmp_path / "run", "model.conditioning=cvae", "model.num_classes=2", *GMM),
                   device="cpu")
    prior = P.run_prior(run)
    assert set(prior.mixtures) == {0, 1} and prior.meta["per_class"]
    assert all(m.n_components == 2 for m in prior.mixtures.values())
    eps, u = torch.zeros(16), 0.0  # eps = 0, first component: the class's first mean
    assert torch.allclose(prior.draw(eps, u, 1),
                          torch.from_numpy(prior.mixtures[1].means[0]).float())
    z0, z1 = (torch.stack([latent_code(run, s, c) for s in range(3)]) for c in (0, 1))
    assert not torch.allclose(z0, z1)  # same seeds, another class's mixture
    imgs = generate_batch(run, [0, 1], torch.tensor([1, 1]))
    assert np.allclose(imgs[1:], generate_batch(run, [1], torch.tensor([1])), atol=1e-6, rtol=0)
