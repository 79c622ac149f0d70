"""The generic loop: every model trains in 2D and 3D, exact resume, divergence, bad checkpoints."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from synthmed.config import load_config
from synthmed.errors import CheckpointError, ConfigError, TrainingDiverged
from synthmed.models.base import get_family
from synthmed.registry import MODELS
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2"]


def tiny_cfg(model: str, *extra: str):
    over = [*TINY, *extra]
    if model == "alpha_sngan":
        over.append("model.code_hidden_dim=32")
    if model == "dfc_vae":  # its in-domain feature network is trained first: keep that tiny too
        over.append("model.feature_iterations=2")
    if model == "cpdgan":  # paper 004's batch of 256 would make two steps take half a minute
        over.append("train.batch_size=4")
    return load_config(model, over)


def _all_models() -> list[str]:
    get_family("sngan")  # fills the registry
    return MODELS.names()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", _all_models())
def test_every_model_trains_two_steps(model: str, dims: int, tiny2d: Path, tiny3d: Path, tmp_path: Path) -> None:
    data = tiny2d if dims == 2 else tiny3d
    run = train(tiny_cfg(model, "train.iterations=2", "augment.enabled=true"), data, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["model"] == model
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(v)) for r in rows for v in r.values() if v != "")
    assert (run / "samples" / "step_0000002.png").is_file()
    assert list((run / "logs").glob("events.out.tfevents.*"))
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["model"] == model
    data_meta = json.loads((run / "data.json").read_text(encoding="utf-8"))
    assert data_meta["n_train"] == 6  # 8 subjects minus the 25% held-out test set
    # the weights changed
    fresh = get_family(model).build(ckpt_params(ckpt, model), dims, tuple(data_meta["shape"]))
    w0 = fresh["G"].state_dict()
    assert any(not torch.equal(w0[k], v) for k, v in ckpt["nets"]["G"].items() if v.is_floating_point())


def ckpt_params(ckpt: dict, model: str):
    return get_family(model).Params(**ckpt["params"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {f"{n}.{k}": v for n, sd in ckpt["nets"].items() for k, v in sd.items()}


@pytest.mark.parametrize("model", ["alpha_sngan", "sngan"])
def test_resume_is_exact(model: str, tiny3d: Path, tmp_path: Path) -> None:
    extra = ["train.iterations=4", "train.checkpoint_every=2", "augment.enabled=true"]
    straight = train(tiny_cfg(model, *extra), tiny3d, tmp_path / "a", progress=False)
    # a run that stopped at step 2 (as if killed after its checkpoint), then resumed to 4
    half = train(tiny_cfg(model, *extra[1:], "train.iterations=2"), tiny3d, tmp_path / "b", progress=False)
    train(tiny_cfg(model, *extra), tiny3d, half, resume=True, progress=False)
    wa, wb = _weights(straight / "checkpoints/last.pt"), _weights(half / "checkpoints/last.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    opt_a = load_checkpoint(straight / "checkpoints/last.pt")["optim"]["opt"]["G"]["state"]
    opt_b = load_checkpoint(half / "checkpoints/last.pt")["optim"]["opt"]["G"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    rows = list(csv.DictReader(open(half / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert json.loads((half / "run.json").read_text(encoding="utf-8"))["resumed_at_steps"] == [2]


def test_existing_run_needs_resume(tiny3d: Path, tmp_path: Path) -> None:
    train(tiny_cfg("sngan", "train.iterations=1"), tiny3d, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_cfg("sngan", "train.iterations=1"), tiny3d, tmp_path / "run", progress=False)


def test_resume_without_checkpoint(tiny3d: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_cfg("sngan"), tiny3d, tmp_path / "empty", resume=True, progress=False)


def test_resume_with_other_model_or_params_is_refused(tiny3d: Path, tmp_path: Path) -> None:
    run = train(tiny_cfg("sngan", "train.iterations=1"), tiny3d, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="model 'sngan'.*'alpha_sngan'"):
        train(tiny_cfg("alpha_sngan", "train.iterations=2"), tiny3d, run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="model.latent_dim"):
        train(tiny_cfg("sngan", "train.iterations=2", "model.latent_dim=17"), tiny3d, run, resume=True, progress=False)


def test_resume_on_other_data_is_refused(tiny3d: Path, tiny2d: Path, tmp_path: Path) -> None:
    run = train(tiny_cfg("sngan", "train.iterations=1"), tiny3d, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="2D images|3D images"):
        train(tiny_cfg("sngan", "train.iterations=2"), tiny2d, run, resume=True, progress=False)


def test_divergence_stops_and_keeps_last_good_checkpoint(tiny3d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    bad = tiny_cfg("sngan", "train.iterations=6", "train.checkpoint_every=2", "train.log_every=3",
                   "train.divergence_threshold=1e-9")
    with pytest.raises(TrainingDiverged, match=r"step 2: loss_d = .*limit 1e-09.*no checkpoint had been written"):
        train(bad, tiny3d, run, progress=False)
    assert not (run / "checkpoints" / "last.pt").exists()  # nothing good had been saved yet
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["status"] == "diverged"


def test_nan_loss_is_caught(tiny3d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthmed.train import steps

    orig = steps.GANStep.__call__
    calls = {"n": 0}

    def poisoned(self, real):  # the third iteration produces NaN
        calls["n"] += 1
        out = orig(self, real)
        if calls["n"] >= 3:
            out["loss_d"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(steps.GANStep, "__call__", poisoned)
    cfg = tiny_cfg("sngan", "train.iterations=6", "train.checkpoint_every=2", "train.log_every=1")
    with pytest.raises(TrainingDiverged, match="loss_d = nan"):
        train(cfg, tiny3d, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 2


def test_bf16_mixed_precision_trains(tiny3d: Path, tmp_path: Path) -> None:
    run = train(tiny_cfg("alpha_sngan", "train.iterations=2", "train.precision=bf16"), tiny3d,
                tmp_path / "run", progress=False)
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 2
