"""What the best GAN codebases use on small data: EMA of G, adaptive augmentation, R1, separate learning
rates; the VAE weighting options; the collapse guards.  Known answers computed independently here."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.augment.ada import AdaptiveAugment
from synthmed.augment.diffaugment import DiffAugment
from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.generate.sample import load_run, sample
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.ema import EMA_KEY, GeneratorEMA, ema_beta
from synthmed.train.guards import Guards, diversity_ratio
from synthmed.train.logger import MetricsLogger
from synthmed.train.loop import train
from synthmed.train.steps import r1_penalty

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2"]


# -- EMA ------------------------------------------------------------------------------------------------
def test_ema_beta_has_the_configured_half_life() -> None:
    beta = ema_beta(batch_size=8, ema_kimg=0.4, images_seen=10_000)
    assert beta ** (400 / 8) == pytest.approx(0.5, rel=1e-12)  # 400 images: the weight of the past halves
    # ramp-up: early on the half-life is images_seen x rampup
    assert ema_beta(8, 10.0, images_seen=80, rampup=0.5) == pytest.approx(0.5 ** (8 / 40))
    assert ema_beta(8, 10.0, images_seen=10**7, rampup=0.5) == pytest.approx(0.5 ** (8 / 10_000))


def test_ema_equals_the_closed_form_average_on_a_toy_model() -> None:
    torch.manual_seed(3)
    model = nn.Linear(3, 2)
    model.register_buffer("count", torch.zeros(()))
    ema = GeneratorEMA(model, ema_kimg=0.01, rampup=0.0)  # half-life 10 images
    beta = 0.5 ** (2 / 10)  # batch 2
    weights = [model.weight.detach().double().clone()]
    for t in range(1, 6):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
            model.count.fill_(t)
        weights.append(model.weight.detach().double().clone())
        assert ema.update(model, batch_size=2, images_seen=2 * t) == pytest.approx(beta)
    # w_ema(T) = beta^T w_0 + sum_t (1 - beta) beta^(T - t) w_t
    expected = beta ** 5 * weights[0] + sum((1 - beta) * beta ** (5 - t) * weights[t] for t in range(1, 6))
    assert torch.allclose(ema.module.weight.double(), expected, atol=1e-6)
    assert float(ema.module.count) == 5  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())


# -- ADA ------------------------------------------------------------------------------------------------
def test_ada_probability_follows_a_scripted_sign_sequence() -> None:
    aug = DiffAugment(p=0.0)
    ada = AdaptiveAugment(aug, target=0.6, interval=4, ada_kimg=0.1, batch_size=5)  # step 5 x 4 / 100 = 0.2
    p_after = []
    # r_t = 1 (> 0.6): up; r_t = 0.5: down; r_t = 0.75: up; r_t = -1: down, twice, clamped at 0
    for r_t in [1, 1, 1, 1, 0.5, 0.75, -1, -1, -1]:
        for _ in range(4):
            changed = ada.observe(r_t)
        assert changed
        p_after.append(round(ada.p, 12))
    assert p_after == [0.2, 0.4, 0.6, 0.8, 0.6, 0.8, 0.6, 0.4, 0.2]
    for _ in range(5):
        for _ in range(4):
            ada.observe(-1.0)
    assert ada.p == 0.0 and aug.p == 0.0
    for _ in range(3):
        assert not ada.observe(1.0)  # no adjustment before the interval is full
    state = ada.state_dict()
    other = AdaptiveAugment(DiffAugment(), 0.6, 4, 0.1, 5)
    other.load_state_dict(state)
    assert other.observe(1.0) and other.p == pytest.approx(0.2)


def test_diffaugment_probability_zero_is_identity_and_one_is_unchanged() -> None:
    x = torch.randn(6, 1, 8, 8)
    assert torch.equal(DiffAugment(p=0.0)(x), x)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(DiffAugment(p=1.0)(x, g1), DiffAugment()(x, g2))
    # p = 0.5: some samples untouched, some changed (intensity changes every augmented sample)
    out = DiffAugment(policy=["intensity"], p=0.5)(x, torch.Generator().manual_seed(0))
    same = [torch.equal(out[i], x[i]) for i in range(6)]
    assert any(same) and not all(same)


# -- R1 -------------------------------------------------------------------------------------------------
def test_r1_value_and_gradient_on_a_linear_discriminator() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    x = torch.randn(5, 1, 2, 2, requires_grad=True)
    logits = (x[:, 0] * w).sum(dim=(1, 2))  # D(x) = <w, x>: grad_x D = w for every sample
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(float((w.detach() ** 2).sum()))
    (g,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(g, 2 * w)  # d/dw |w|^2


def test_r1_on_a_quadratic_discriminator() -> None:
    x = torch.randn(4, 1, 3, requires_grad=True)
    penalty = r1_penalty((x ** 2).sum(dim=(1, 2)), x)  # grad = 2x
    assert penalty.item() == pytest.approx(float((4 * x.detach() ** 2).sum(dim=(1, 2)).mean()), rel=1e-6)


# -- guards ---------------------------------------------------------------------------------------------
def test_posterior_collapse_guard_fires_after_patience_once() -> None:
    g = Guards(patience=3)
    kl = [20.0, 0.5, 0.4, 0.3, 0.2, 0.1, 5.0, 0.2, 0.2, 0.2]
    fired = []
    for step, v in enumerate(kl, 1):
        vals = {"loss_kl": v}
        if g.check(step, vals):
            fired.append(step)
        assert vals["guard_posterior_collapse"] == float(step in (4, 5, 6, 10))
    assert fired == [4, 10]  # after 3 low checks in a row; again only after it cleared
    assert [w["guard"] for w in g.warnings] == ["posterior_collapse"] * 2
    assert "0.3 nats" in g.warnings[0]["message"]


def test_discriminator_wins_and_mode_collapse_guards() -> None:
    g = Guards(patience=2)
    assert not g.check(1, {"d_acc": 1.0, "loss_d": 0.0})
    assert set(g.check(2, {"d_acc": 0.995})) == {"d_wins"}
    assert not g.check(3, {"diversity": 0.05})
    assert set(g.check(4, {"diversity": 0.02, "d_acc": 0.5})) == {"mode_collapse"}
    state = g.state_dict()
    h = Guards(patience=2)
    h.load_state_dict(json.loads(json.dumps(state)))
    assert h.warnings == g.warnings and not h.check(5, {"diversity": 0.01})  # already fired: stays quiet
    # the collapsed brain tumour run's previews: fires at the second low one in a row, whatever the patience
    brain = Guards(patience=5)
    fired = [step for step, v in [(500, 0.26), (1000, 0.49), (1500, 0.24), (2000, 0.17), (2500, 0.20)]
             if brain.check(step, {"diversity": v})]
    assert fired == [2000]
    healthy = Guards(patience=5)
    assert not any(healthy.check(i, {"diversity": v}) for i, v in enumerate([0.64, 0.78, 0.95, 1.4, 0.7]))


def test_diversity_ratio_known_answers() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(6, 1, 4, 4))
    assert diversity_ratio(real, real) == pytest.approx(1.0)
    assert diversity_ratio(np.repeat(real[:1], 6, axis=0), real) == 0.0
    assert diversity_ratio(2 * real, real) == pytest.approx(2.0)


def test_metrics_logger_adds_new_columns(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path / "m.csv", tmp_path / "tb")
    log.log(1, {"a": 1.0})
    log.log(2, {"a": 2.0, "b": 0.5})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert rows == [{"step": "1", "a": "1", "b": ""}, {"step": "2", "a": "2", "b": "0.5"}]


# -- the loop -------------------------------------------------------------------------------------------
SMALL_DATA = ["train.ema_kimg=0.01", "train.ema_rampup=0.05", "train.r1_gamma=1", "train.r1_every=2",
              "augment.enabled=true", "augment.ada_target=0.6", "augment.p=0.3", "augment.ada_interval=1",
              "augment.ada_kimg=0.1", "train.lr_d=0.0004", "train.lr_g=0.0001"]


def test_small_data_options_train_log_and_resume_exactly(tiny2d: Path, tmp_path: Path) -> None:
    cfg = load_config("sngan", [*TINY, *SMALL_DATA, "train.iterations=4", "train.checkpoint_every=2"])
    straight = train(cfg, tiny2d, tmp_path / "a", progress=False)
    ckpt = load_checkpoint(straight / "checkpoints/last.pt")
    assert EMA_KEY in ckpt["nets"]
    assert ckpt["ada"]["p"] != 0.3  # moved every update
    assert not torch.equal(ckpt["nets"][EMA_KEY]["project.weight"], ckpt["nets"]["G"]["project.weight"])
    opt = ckpt["optim"]["opt"]
    assert opt["D"]["param_groups"][0]["lr"] == 0.0004 and opt["G"]["param_groups"][0]["lr"] == 0.0001
    rows = list(csv.DictReader(open(straight / "metrics.csv")))
    assert [r["r1"] != "" for r in rows] == [True] * 4
    assert all(r["ada_p"] and r["d_acc"] and r["d_real_sign"] for r in rows)
    assert rows[-1]["diversity"] != ""
    # killed after step 2, resumed: the same weights, EMA and ADA state as the straight run
    half = train(load_config("sngan", [*TINY, *SMALL_DATA, "train.iterations=2"]), tiny2d, tmp_path / "b",
                 progress=False)
    train(cfg, tiny2d, half, resume=True, progress=False)
    other = load_checkpoint(half / "checkpoints/last.pt")
    for net in ("G", "D", EMA_KEY):
        for k, v in ckpt["nets"][net].items():
            assert torch.equal(v, other["nets"][net][k]), (net, k)
    assert other["ada"] == ckpt["ada"]


def test_r1_is_lazy(tiny2d: Path, tmp_path: Path) -> None:
    cfg = load_config("sngan", [*TINY, "train.iterations=4", "train.r1_gamma=2", "train.r1_every=2"])
    rows = list(csv.DictReader(open(train(cfg, tiny2d, tmp_path / "r", progress=False) / "metrics.csv")))
    r1 = [float(r["r1"]) for r in rows]
    assert r1[0] > 0 and r1[2] > 0 and r1[1] == 0 and r1[3] == 0  # iterations 0 and 2 of the step's count


def test_sampling_uses_the_average_unless_told_not_to(tiny2d: Path, tmp_path: Path) -> None:
    cfg = load_config("sngan", [*TINY, "train.iterations=3", "train.ema_kimg=0.01"])
    run = train(cfg, tiny2d, tmp_path / "run", progress=False)
    ema, raw = load_run(run, device="cpu"), load_run(run, device="cpu", ema=False)
    assert ema.ema and not raw.ema
    ckpt = load_checkpoint(run / "checkpoints/last.pt")
    assert torch.equal(ema.nets["G"].state_dict()["project.weight"], ckpt["nets"][EMA_KEY]["project.weight"])
    assert torch.equal(raw.nets["G"].state_dict()["project.weight"], ckpt["nets"]["G"]["project.weight"])
    out = sample(run, 2, tmp_path / "s", progress=False)
    meta = json.loads((out / "sample.json").read_text())
    assert meta["ema"] is True and meta["training_warnings"] == []


def test_collapse_guard_reaches_run_json_and_sample_json(tiny2d: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import synthmed.train.guards as guards

    monkeypatch.setattr(guards, "KL_COLLAPSE_NATS", 1e9)  # any KL counts as collapsed: fires at the first check
    cfg = load_config("vae", [*TINY, "train.iterations=3", "train.guard_patience=2"])
    run = train(cfg, tiny2d, tmp_path / "vae", progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["guard_posterior_collapse"] for r in rows] == ["0", "1", "1"]  # patience 2
    warnings = json.loads((run / "run.json").read_text())["warnings"]
    assert [(w["step"], w["guard"]) for w in warnings] == [(2, "posterior_collapse")]
    meta = json.loads((sample(run, 2, tmp_path / "s", progress=False) / "sample.json").read_text())
    assert meta["training_warnings"] == warnings


@pytest.mark.parametrize("override, key", [
    ("augment.p=1.5", "augment.p"), ("augment.ada_target=1.2", "augment.ada_target"),
    ("train.r1_gamma=-1", "train.r1_gamma"), ("train.ema_kimg=-2", "train.ema_kimg"),
    ("train.r1_every=0", "train.r1_every"), ("model.kl_warmup=-1", "model.kl_warmup"),
])
def test_bad_small_data_options_name_the_key(override: str, key: str) -> None:
    model = "vae" if override.startswith("model.") else "sngan"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(model, [override])


@pytest.mark.parametrize("model, override, key", [("pggan", "train.r1_gamma=1", "train.r1_gamma"),
                                                  ("cpdgan", "augment.ada_target=0.6", "augment.ada_target")])
def test_options_a_step_cannot_apply_are_refused(model: str, override: str, key: str, tiny2d: Path,
                                                 tmp_path: Path) -> None:
    cfg = load_config(model, [*TINY, "train.iterations=1", "augment.enabled=true", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(cfg, tiny2d, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_ada_needs_augmentation(tiny2d: Path, tmp_path: Path) -> None:
    cfg = load_config("sngan", [*TINY, "train.iterations=1", "augment.ada_target=0.6"])
    with pytest.raises(ConfigError, match="augment.enabled=true"):
        train(cfg, tiny2d, tmp_path / "r", progress=False)


# -- VAE weighting --------------------------------------------------------------------------------------
def _vae_step(model: str, *over: str):
    from synthmed.models.base import get_family
    from synthmed.train.steps import make_step

    cfg = load_config(model, [*TINY, *over])
    fam = get_family(model)
    nets = fam.build(cfg.model.params, 2, (16, 16))
    return make_step(fam, cfg, nets, torch.device("cpu"), None)


def test_reconstruction_pixels_keeps_the_papers_balance_at_any_size() -> None:
    step = _vae_step("vae", "model.reconstruction_pixels=16384")
    real, rec = torch.zeros(2, 1, 16, 16), torch.full((2, 1, 16, 16), 0.2)  # [0, 1] error 0.1 per pixel
    # 0.025 x 16384 x MSE, MSE = 0.01 on [0, 1] intensities
    assert step.reconstruction_loss(rec, real).item() == pytest.approx(0.025 * 16384 * 0.01, rel=1e-6)
    plain = _vae_step("vae")
    assert plain.reconstruction_loss(rec, real).item() == pytest.approx(0.025 * 256 * 0.01, rel=1e-6)


def test_kl_warmup_and_free_bits() -> None:
    step = _vae_step("vae", "model.kl_warmup=4", "model.free_bits=0.5")
    mu = torch.tensor([[1.0] + [0.0] * 15, [1.0] + [0.0] * 15])  # KL_0 = 0.5 nats, other dims 0
    logvar = torch.zeros(2, 16)
    step.iteration = 1
    penalty, kl = step.kl_term(mu, logvar)
    assert kl.item() == pytest.approx(0.5)
    # free bits: every dimension counts at least 0.5 nats -> 16 x 0.5 = 8; warm-up weight 1/4
    assert penalty.item() == pytest.approx(8 * 0.25)
    step.iteration = 10
    assert step.kl_term(mu, logvar)[0].item() == pytest.approx(8.0)
    exact = _vae_step("vae")
    exact.iteration = 1
    assert exact.kl_term(mu, logvar)[0].item() == pytest.approx(0.5)


def test_kl_warmup_counts_iterations_in_training(tiny2d: Path, tmp_path: Path) -> None:
    cfg = load_config("vae", [*TINY, "train.iterations=2", "model.kl_warmup=1000"])
    run = train(cfg, tiny2d, tmp_path / "w", progress=False)
    ckpt = load_checkpoint(run / "checkpoints/last.pt")
    assert ckpt["optim"]["iteration"] == 2
    assert math.isfinite(float(list(csv.DictReader(open(run / "metrics.csv")))[-1]["loss"]))
