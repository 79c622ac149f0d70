"""HA-GAN / alpha-HA-GAN training steps: the generic loop, exact resume, per-network updates and learning rates,
the conditional (auxiliary-classifier) step, and the benchmark of every registered 3D model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthmed.bench import _add_ratios, _variants, bench_one, benchmark_models, format_table
from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.models.base import get_family
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.hagan_steps import frozen
from synthmed.train.loop import train
from synthmed.train.steps import make_step

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2"]


def tiny_cfg(model: str, *extra: str):
    over = [*TINY, *extra]
    if model == "alpha_hagan":
        over.append("model.code_hidden_dim=32")
    return load_config(model, over)


def _step(model: str, *extra: str, size: int = 32):
    cfg = tiny_cfg(model, *extra)
    fam = get_family(model)
    nets = fam.build(cfg.model.params, 3, (size,) * 3)
    return make_step(fam, cfg, nets, torch.device("cpu"), None), nets


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {f"{n}.{k}": v for n, sd in ckpt["nets"].items() for k, v in sd.items()}


@pytest.mark.parametrize("model", ["hagan", "alpha_hagan"])
def test_loop_trains_and_resumes_exactly(model: str, tiny3d: Path, tmp_path: Path) -> None:
    extra = ["train.iterations=3", "train.checkpoint_every=2", "augment.enabled=true"]
    straight = train(tiny_cfg(model, *extra), tiny3d, tmp_path / "a", progress=False)
    half = train(tiny_cfg(model, *extra[1:], "train.iterations=2"), tiny3d, tmp_path / "b", progress=False)
    train(tiny_cfg(model, *extra), tiny3d, half, resume=True, progress=False)
    wa, wb = _weights(straight / "checkpoints/last.pt"), _weights(half / "checkpoints/last.pt")
    assert wa.keys() == wb.keys() and any(k.startswith("EH.") for k in wa)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ckpt = load_checkpoint(straight / "checkpoints/last.pt")
    assert set(ckpt["optim"]["opt"]) == ({"G", "D", "EH", "EG"} | ({"CD"} if model == "alpha_hagan" else set()))
    assert (straight / "samples" / "step_0000003.png").is_file()


def test_learning_rates_per_network() -> None:
    """Sec. III-E: G 1e-4, encoders 1e-4, D 4e-4; Adam betas (0, 0.999)."""
    step, _ = _step("hagan", size=16)
    lrs = {k: o.param_groups[0]["lr"] for k, o in step.opt.items()}
    assert lrs == {"G": 1e-4, "D": 4e-4, "EH": 1e-4, "EG": 1e-4}
    assert step.opt["G"].param_groups[0]["betas"] == (0.0, 0.999)
    step, _ = _step("alpha_hagan", "model.lr_d=0.001", size=16)  # paper 000: train.lr for all, unless set
    assert {k: o.param_groups[0]["lr"] for k, o in step.opt.items()} == {"G": 2e-4, "D": 1e-3, "EH": 2e-4,
                                                                            "EG": 2e-4, "CD": 1e-3}


def test_encoder_updates_touch_only_their_own_networks() -> None:
    step, nets = _step("hagan")
    real = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}
    sub, x_sub, _, _ = step._views(real)
    step._update_high_encoder(x_sub)
    changed = {k for k, m in nets.items()
               if any(not torch.equal(a, p) for a, p in zip(before[k], m.parameters(), strict=True))}
    assert changed == {"EH"}
    assert all(p.grad is None for p in nets["G"].parameters())  # G was frozen: no weight gradients computed
    assert all(p.requires_grad for p in nets["G"].parameters())  # and unfrozen afterwards


def test_frozen_restores_requires_grad() -> None:
    m = torch.nn.Linear(2, 2)
    m.bias.requires_grad_(False)
    with frozen(m):
        assert not any(p.requires_grad for p in m.parameters())
    assert m.weight.requires_grad and not m.bias.requires_grad


@pytest.mark.parametrize("model", ["hagan", "alpha_hagan"])
def test_conditional_step_needs_and_uses_labels(model: str) -> None:
    """Paper 001 Eq. 9: the auxiliary-classifier heads are trained with the real images' classes."""
    step, nets = _step(model, "model.num_classes=2", size=16)
    real = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    with pytest.raises(ConfigError, match="needs the class"):
        step(real)
    head = nets["D"].high.class_head.parametrizations.weight.original.detach().clone()
    losses = step(real, labels=torch.tensor([0, 1]))
    assert all(torch.isfinite(v) for v in losses.values())
    assert not torch.equal(head, nets["D"].high.class_head.parametrizations.weight.original)


def test_bf16_step_runs() -> None:
    step, _ = _step("hagan", "train.precision=bf16", size=16)
    losses = step(torch.rand(2, 1, 16, 16, 16) * 2 - 1)
    assert all(torch.isfinite(v) for v in losses.values())


def test_bench_covers_every_3d_model_with_ratios() -> None:
    assert {"sngan", "alpha_sngan", "hagan", "alpha_hagan"} <= set(benchmark_models(3))
    assert _variants("bf16", True, True) == [("fp32", False, False), ("bf16", False, False), ("bf16", True, False),
                                             ("bf16", True, True)]
    base = bench_one("hagan", 16, 1, iterations=1, warmup=0)
    fast = bench_one("hagan", 16, 1, iterations=1, warmup=0, channels_last=True)
    assert base["status"] == fast["status"] == "ok" and fast["channels_last"]
    for r in (base, fast):
        _add_ratios(r, base)
    assert base["speedup_vs_fp32_eager"] == 1.0 and fast["speedup_vs_fp32_eager"] > 0
    assert "| hagan | 16x16x16 | 1 | cpu | fp32+channels_last |" in format_table([base, fast])


def test_bench_reports_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthmed.train import steps

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(steps, "make_step", oom)
    row = bench_one("hagan", 16, 1, iterations=1, warmup=0)
    assert row["status"] == "out of memory" and row["sec_per_it"] == ""
