"""Lazy regularisation of the WGAN-GP step (``model.gp_every``; Karras et al. 2020 Sec. 3.1): the penalty
is k times the gradient penalty on critic updates 0, k, 2k, ... and 0 on the others, enters the critic loss
as ``gp_weight x gp``, and a resumed run takes it on the same updates; the generator update through a
frozen D gives the same gradients; a kernel covering the whole input is computed as a dense layer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import synthmed.train.wgan_steps as wgan_steps
from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.models.base import get_family
from synthmed.nn.progressive import EqualizedConv
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train
from synthmed.train.steps import frozen, make_step

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.batch_size=4"]


def _step(model: str, *extra: str):
    cfg = load_config(model, [*TINY, *extra])
    fam = get_family(model)
    torch.manual_seed(0)
    nets = fam.build(cfg.model.params, 2, (8, 8))
    return make_step(fam, cfg, nets, torch.device("cpu"), None)


@pytest.mark.parametrize("model", ["cpdgan", "stylegan_lite"])
def test_lazy_penalty_is_k_times_the_penalty_when_due_and_zero_otherwise(model: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    raw: list[float] = []
    penalty = wgan_steps.gradient_penalty

    def recording_penalty(*args, **kwargs):
        value = penalty(*args, **kwargs)
        raw.append(float(value.detach()))
        return value

    monkeypatch.setattr(wgan_steps, "gradient_penalty", recording_penalty)
    step = _step(model, "model.gp_every=3", "model.gp_weight=10", "model.drift_weight=0")
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    outs = [step(real) for _ in range(7)]
    assert len(raw) == 3  # computed on updates 0, 3 and 6 only
    gp = [float(o["gp"]) for o in outs]
    assert gp[0] == pytest.approx(3 * raw[0], rel=1e-6) and gp[3] == pytest.approx(3 * raw[1], rel=1e-6)
    assert gp[6] == pytest.approx(3 * raw[2], rel=1e-6) and all(raw)
    assert [gp[i] for i in (1, 2, 4, 5)] == [0.0] * 4
    for o in outs:  # Wasserstein critic loss plus lambda x the (lazy) penalty
        expected = float(o["d_fake"] - o["d_real"] + 10 * o["gp"])
        assert float(o["loss_d"]) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_first_lazy_penalty_is_k_times_the_eager_one_from_the_same_state() -> None:
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    eager = _step("cpdgan")(real)
    torch.manual_seed(1)
    lazy = _step("cpdgan", "model.gp_every=4")(real)
    assert float(eager["gp"]) > 0
    assert float(lazy["gp"]) == pytest.approx(4 * float(eager["gp"]), rel=1e-6)
    assert float(lazy["loss_d"]) - float(eager["loss_d"]) == pytest.approx(10 * 3 * float(eager["gp"]), rel=1e-5)


def test_zero_gp_weight_skips_the_penalty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wgan_steps, "gradient_penalty", lambda *a, **k: pytest.fail("penalty computed"))
    out = _step("cpdgan", "model.gp_weight=0")(torch.rand(4, 1, 8, 8))
    assert float(out["gp"]) == 0.0


def test_lazy_penalty_resumes_exactly(tiny2d: Path, tmp_path: Path) -> None:
    over = [*TINY, "model.gp_every=3", "train.checkpoint_every=2", "train.ema_kimg=0.01"]
    straight = train(load_config("stylegan_lite", [*over, "train.iterations=5"]), tiny2d, tmp_path / "a",
                     progress=False)
    gp = [float(r["gp"]) for r in csv.DictReader(open(straight / "metrics.csv"))]
    assert [v > 0 for v in gp] == [True, False, False, True, False]  # update 3 comes after the resume below
    half = train(load_config("stylegan_lite", [*over, "train.iterations=2"]), tiny2d, tmp_path / "b",
                 progress=False)
    train(load_config("stylegan_lite", [*over, "train.iterations=5"]), tiny2d, half, resume=True, progress=False)
    a, b = load_checkpoint(straight / "checkpoints/last.pt"), load_checkpoint(half / "checkpoints/last.pt")
    assert a["optim"]["critic_updates"] == b["optim"]["critic_updates"] == 5
    for net in a["nets"]:
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), f"{net}.{k}"
    resumed = [float(r["gp"]) for r in csv.DictReader(open(half / "metrics.csv"))]
    assert resumed == gp


@pytest.mark.parametrize("value", [0, -2])
def test_bad_gp_every_is_a_config_error(value: int) -> None:
    params = load_config("cpdgan", [f"model.gp_every={value}"]).model.params
    with pytest.raises(ConfigError, match="model.gp_every"):
        get_family("cpdgan").build(params, 2, (16, 16))


def test_bad_gp_every_is_one_cli_line(tiny2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "stylegan_lite", "--data", str(tiny2d), "--out", str(tmp_path / "r"), "--no-progress",
                 "--set", "model.gp_every=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthmed: error:") and "model.gp_every" in err and "\n" not in err


def test_generator_gradients_through_a_frozen_discriminator_are_unchanged() -> None:
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                            torch.nn.Linear(3 * 36, 1))
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    (g_plain,) = torch.autograd.grad(-d(x).mean(), x)
    with frozen(d):
        assert not any(p.requires_grad for p in d.parameters())
        loss = -d(x).mean()
        loss.backward()
    assert torch.equal(x.grad, g_plain)
    assert all(p.grad is None for p in d.parameters())  # no weight gradients were computed
    assert all(p.requires_grad for p in d.parameters())
    with pytest.raises(RuntimeError), frozen(d):
        raise RuntimeError("restored on error too")
    assert all(p.requires_grad for p in d.parameters())


def test_frozen_leaves_already_frozen_parameters_frozen() -> None:
    net = torch.nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with frozen(net):
        pass
    assert net.weight.requires_grad and not net.bias.requires_grad


@pytest.mark.parametrize("shape", [(7, 7), (3, 2, 4)])
def test_whole_input_kernel_is_a_dense_layer_with_the_convolutions_values(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    conv = EqualizedConv(len(shape), 5, 6, shape, padding=0)
    x = torch.randn(4, 5, *shape, requires_grad=True)
    out = conv(x)
    ref = {2: F.conv2d, 3: F.conv3d}[len(shape)](x, conv.weight * conv.scale, conv.bias)
    assert out.shape == ref.shape == (4, 6, *([1] * len(shape)))
    assert torch.allclose(out, ref, atol=1e-5)
    g_out = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, conv.weight))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(g_out, g_ref, strict=True))
    # a padded or smaller kernel stays a convolution
    assert EqualizedConv(2, 5, 6, 3)(torch.randn(1, 5, 3, 3)).shape == (1, 6, 3, 3)
