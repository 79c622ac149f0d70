"""VAE training steps through the generic loop: 2D and 3D, sampling, exact resume, loss composition."""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.config import load_config
from synthmed.errors import ConfigError
from synthmed.generate.sample import sample
from synthmed.models import get_family
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train
from synthmed.train.steps import STEPS
from synthmed.train.vae_steps import DFCVAEStep, IntroVAEStep, VAEStep, frozen

VAES = ["vae", "dfc_vae", "intro_vae"]
TINY = ["model.latent_dim=8", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.batch_size=4"]


def tiny_cfg(model: str, *extra: str):
    over = [*TINY, *extra]
    if model == "dfc_vae":
        over.append("model.feature_iterations=3")
    return load_config(model, over)


def test_registered_steps() -> None:
    assert STEPS.get("vae") is VAEStep and STEPS.get("dfc_vae") is DFCVAEStep and STEPS.get("intro_vae") is IntroVAEStep
    for m in VAES:
        assert get_family(m).step == m


def test_paper_defaults() -> None:
    vae, dfc, intro = (load_config(m) for m in VAES)
    assert vae.model.params.latent_dim == 200 and vae.model.params.reconstruction_scale == 0.025
    assert vae.train.lr == 1e-4 and vae.train.batch_size == 64
    assert dfc.model.params.latent_dim == 200 and dfc.model.params.feature_network == "indomain"
    assert dfc.train.lr == 1e-4
    p = intro.model.params
    assert (p.latent_dim, p.margin, p.kl_weight, p.reconstruction_weight) == (256, 110.0, 0.25, 0.5)
    assert intro.train.lr == 2e-4 and intro.train.batch_size == 8


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", VAES)
def test_trains_two_steps_and_samples(model: str, dims: int, tiny2d: Path, tiny3d: Path, tmp_path: Path) -> None:
    data = tiny2d if dims == 2 else tiny3d
    run = train(tiny_cfg(model, "train.iterations=2"), data, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and set(ckpt["nets"]) == {"E", "G"}
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(v)) for r in rows for v in r.values() if v != "")
    assert {"loss_kl", "loss_rec"} <= set(rows[0])
    assert (run / "samples" / "step_0000002.png").is_file()
    out = sample(run, 3, tmp_path / "s", seed=5, batch_size=2, progress=False)
    files = [r["file"] for r in csv.DictReader(open(out / "manifest.csv"))]
    assert len(files) == 3 and files[0].endswith(".nii.gz" if dims == 3 else ".png")
    assert json.loads((out / "sample.json").read_text(encoding="utf-8"))["model"] == model


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return {f"{n}.{k}": v for n, sd in ckpt["nets"].items() for k, v in sd.items()}


@pytest.mark.parametrize("model", VAES)
def test_resume_is_exact(model: str, tiny2d: Path, tmp_path: Path) -> None:
    extra = ["train.iterations=4", "train.checkpoint_every=2"]
    straight = train(tiny_cfg(model, *extra), tiny2d, tmp_path / "a", progress=False)
    half = train(tiny_cfg(model, *extra[1:], "train.iterations=2"), tiny2d, tmp_path / "b", progress=False)
    train(tiny_cfg(model, *extra), tiny2d, half, resume=True, progress=False)
    wa, wb = _weights(straight / "checkpoints/last.pt"), _weights(half / "checkpoints/last.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    if model == "dfc_vae":  # the feature network trained at the start is kept in the checkpoint
        fa = load_checkpoint(straight / "checkpoints/last.pt")["optim"]["feature_network"]
        fb = load_checkpoint(half / "checkpoints/last.pt")["optim"]["feature_network"]
        assert fa["weights_sha256"] == fb["weights_sha256"]
        assert all(torch.equal(fa["encoder"][k], fb["encoder"][k]) for k in fa["encoder"])


def _step(model: str, *extra: str, dims: int = 2):
    from synthmed.train.steps import make_step

    cfg = tiny_cfg(model, *extra)
    fam = get_family(model)
    torch.manual_seed(0)
    nets = fam.build(cfg.model.params, dims, (16,) * dims)
    return make_step(fam, cfg, nets, torch.device("cpu"), None), nets


def test_vae_loss_is_kl_plus_scaled_error(tiny2d: Path) -> None:
    step, nets = _step("vae", "model.kl_weight=2.0")
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    out = step(real)
    assert out["loss"].item() == pytest.approx(2.0 * out["loss_kl"].item() + out["loss_rec"].item(), rel=1e-6)
    # an encoder whose heads output mu = 0, logvar = 0 is the prior: KL exactly 0
    for head in (nets["E"].mu, nets["E"].logvar):
        nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    assert step(real)["loss_kl"].item() == 0.0


def test_intro_vae_losses_and_margin() -> None:
    step, nets = _step("intro_vae")
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    e0 = {k: v.clone() for k, v in nets["E"].state_dict().items()}
    g0 = {k: v.clone() for k, v in nets["G"].state_dict().items()}
    out = step(real)
    # Eq. 8: L_E = 0.25 (KL(E(x)) + [m - KL(E(x'))]^+) + 0.5 L_rec
    assert out["loss_e"].item() == pytest.approx(
        0.25 * (out["loss_kl"].item() + out["hinge"].item()) + 0.5 * out["loss_rec"].item(), rel=1e-5)
    assert out["hinge"].item() == pytest.approx(max(0.0, 110.0 - out["kl_fake"].item()), rel=1e-4)
    assert any(not torch.equal(v, e0[k]) for k, v in nets["E"].state_dict().items() if v.is_floating_point())
    assert any(not torch.equal(v, g0[k]) for k, v in nets["G"].state_dict().items() if v.is_floating_point())
    assert all(p.requires_grad for p in [*nets["E"].parameters(), *nets["G"].parameters()])
    # margin 0: the encoder no longer pushes fakes away
    step0, _ = _step("intro_vae", "model.margin=0.0", "model.reconstructions_as_fakes=true")
    assert step0(real)["hinge"].item() == 0.0


def test_frozen_restores_flags() -> None:
    m = nn.Linear(2, 2)
    m.bias.requires_grad_(False)
    with frozen(m):
        assert not any(p.requires_grad for p in m.parameters())
        x = torch.ones(1, 2, requires_grad=True)
        m(x).sum().backward()
        assert x.grad is not None and m.weight.grad is None
    assert m.weight.requires_grad and not m.bias.requires_grad


def test_dfc_defaults_and_given_feature_network(tiny2d: Path, tmp_path: Path) -> None:
    from synthmed.features.indomain import train_indomain_extractor

    step, _ = _step("dfc_vae")
    assert step.weight == pytest.approx(0.025 * 16 * 16) and step.normalise
    with pytest.raises(RuntimeError, match="prepare"):
        step(torch.zeros(2, 1, 16, 16))
    step.prepare(torch.rand(6, 1, 16, 16) * 2 - 1)
    assert len(step.features(torch.zeros(2, 1, 16, 16))) == 2  # 16 px is halved twice: two activations
    assert not any(p.requires_grad for p in step.features.parameters())
    out = step(torch.rand(4, 1, 16, 16) * 2 - 1)
    assert out["loss"].item() == pytest.approx(out["loss_kl"].item() + out["loss_rec"].item(), rel=1e-6)

    weights = train_indomain_extractor(np.random.default_rng(0).uniform(-1, 1, (6, 1, 16, 16)).astype(np.float32),
                                       tmp_path / "f.pt", iterations=2, progress=False)
    run = train(tiny_cfg("dfc_vae", "train.iterations=1", f"model.feature_weights={weights}",
                         "model.perceptual_weight=0.5"), tiny2d, tmp_path / "run", progress=False)
    saved = load_checkpoint(run / "checkpoints/last.pt")["optim"]["feature_network"]
    assert set(saved) == {"weights_sha256"}  # a given file is referenced by hash, not copied


def test_dfc_vgg16_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="feature_weights"):
        _step("dfc_vae", "model.feature_network=vgg16")
    weights = tmp_path / "vgg16.pt"
    weights.write_bytes(b"stub")

    class StubVGG(nn.Module):  # the interface expected from synthmed.features.vgg
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)

        def relu_features(self, x: torch.Tensor, layers=("relu1_1", "relu2_1", "relu3_1")) -> list[torch.Tensor]:
            h = torch.relu(self.conv(x))
            return [h, torch.relu(h[:, :, ::2, ::2]), torch.relu(h[:, :, ::4, ::4])][: len(layers)]

    stub = types.ModuleType("synthmed.features.vgg")
    stub.load_vgg16 = lambda path: StubVGG()
    monkeypatch.setitem(sys.modules, "synthmed.features.vgg", stub)
    monkeypatch.setattr("synthmed.features.vgg", stub, raising=False)
    step, _ = _step("dfc_vae", "model.feature_network=vgg16", f"model.feature_weights={weights}")
    assert step.weight == 2e-9 and not step.normalise
    out = step(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert torch.isfinite(out["loss_rec"])
    with pytest.raises(ConfigError, match="2D only"):
        _step("dfc_vae", "model.feature_network=vgg16", f"model.feature_weights={weights}", dims=3)


# --- known answers through the steps: networks made constant, so every term is hand-computable -----------

#: four 16 x 16 real images, each of one value: 0.025 x sum of squared errors on [0, 1] against an all-zero
#: ([-1, 1]) reconstruction is 0.025 x 256 x (v / 2)^2 = 1.6 v^2 per image, mean 1.6 x 2.25 / 4 = 0.9.
VALUES = (-1.0, 0.0, 0.5, 1.0)
#: KL of N(1, 2) from N(0, 1) per latent dimension: 1/2 (1 + 2 - 1 - ln 2); 8 dimensions.
KL_KNOWN = 8 * 0.5 * (2.0 - math.log(2.0))


def _known_real() -> torch.Tensor:
    return torch.tensor(VALUES).view(4, 1, 1, 1).expand(4, 1, 16, 16).contiguous()


def _make_constant(nets: dict[str, nn.Module], model: str, mu: float = 1.0, logvar: float = math.log(2.0)) -> None:
    """Encoder heads output (mu, logvar) for every image; the decoder outputs tanh(0) = 0 everywhere."""
    e, g = nets["E"], nets["G"]
    with torch.no_grad():
        if model == "intro_vae":
            e.head.weight.zero_()
            e.head.bias[: e.latent_dim] = mu
            e.head.bias[e.latent_dim:] = logvar
        else:
            for head, v in ((e.mu, mu), (e.logvar, logvar)):
                head.weight.zero_()
                head.bias.fill_(v)
        last = g.body[-2]
        assert isinstance(last, nn.Conv2d) and isinstance(g.body[-1], nn.Tanh)
        last.weight.zero_()
        last.bias.zero_()


def _freeze_weights(step) -> None:
    """Adam with learning rate 0: the updates run but no weight changes, so later terms stay known."""
    for opt in step.opt.values():
        for group in opt.param_groups:
            group["lr"] = 0.0


def test_vae_step_known_answer() -> None:
    step, nets = _step("vae", "model.kl_weight=2.0")
    _make_constant(nets, "vae")
    out = step(_known_real())
    assert out["loss_kl"].item() == pytest.approx(KL_KNOWN, rel=1e-5)  # 8 - 4 ln 2
    assert out["loss_rec"].item() == pytest.approx(0.9, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2.0 * KL_KNOWN + 0.9, rel=1e-5)


def test_dfc_vae_step_known_answer() -> None:
    step, nets = _step("dfc_vae")
    _make_constant(nets, "dfc_vae")

    class Psi(nn.Module):  # two "layers": x and 2x
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x, 2 * x]

    step.features = Psi()
    out = step(_known_real())
    # Eq. 7 per image: v^2 256 / (2 x 256) + 4 v^2 256 / (2 x 256) = 2.5 v^2, mean 2.5 x 2.25 / 4;
    # weight 0.025 x 16 x 16 = 6.4 (the vanilla VAE's weight on the pixel term it replaces)
    assert out["loss_rec"].item() == pytest.approx(6.4 * 2.5 * 2.25 / 4, rel=1e-5)
    assert out["loss_kl"].item() == pytest.approx(KL_KNOWN, rel=1e-5)


@pytest.mark.parametrize(("extra", "hinge", "kl_fakes"), [
    ((), 110.0 - KL_KNOWN, KL_KNOWN),  # paper 002: fakes x' = G(z) only
    (("model.reconstructions_as_fakes=true",), 2 * (110.0 - KL_KNOWN), 2 * KL_KNOWN),  # IntroVAE Alg. 1
    (("model.margin=3.0",), 0.0, KL_KNOWN),  # KL of the fakes already beyond m: no hinge
])
def test_intro_vae_step_known_answer(extra: tuple[str, ...], hinge: float, kl_fakes: float) -> None:
    step, nets = _step("intro_vae", *extra)
    _make_constant(nets, "intro_vae")
    _freeze_weights(step)
    out = step(_known_real())
    # L_rec: sum of squared errors on [0, 1]: 256 (v / 2)^2 = 64 v^2 per image, mean 64 x 2.25 / 4 = 36
    assert out["loss_rec"].item() == pytest.approx(36.0, rel=1e-5)
    assert out["loss_kl"].item() == pytest.approx(KL_KNOWN, rel=1e-5)
    assert out["kl_fake"].item() == pytest.approx(KL_KNOWN, rel=1e-5)
    assert out["hinge"].item() == pytest.approx(hinge, rel=1e-5, abs=1e-6)
    # Eq. 8: 0.25 (KL(E(x)) + [m - KL(E(x'))]^+) + 0.5 L_rec; Eq. 9: 0.25 KL(E(x')) + 0.5 L_rec
    assert out["loss_e"].item() == pytest.approx(0.25 * (KL_KNOWN + hinge) + 0.5 * 36.0, rel=1e-5)
    assert out["loss_g"].item() == pytest.approx(0.25 * kl_fakes + 0.5 * 36.0, rel=1e-5)


def test_intro_vae_gradients_reach_only_the_updated_network() -> None:
    """The encoder loss (Eq. 8) leaves no gradient on G (fakes detached: E is the discriminator); the
    decoder loss (Eq. 9) leaves E's gradients as they were."""
    step, nets = _step("intro_vae", "model.reconstructions_as_fakes=true")
    grads: list[dict[str, dict[str, torch.Tensor | None]]] = []
    update = step.update

    def spy(loss: torch.Tensor, keys: tuple[str, ...]) -> None:
        update(loss, keys)
        grads.append({n: {k: None if p.grad is None else p.grad.clone() for k, p in nets[n].named_parameters()}
                      for n in ("E", "G")})

    step.update = spy
    step(torch.rand(4, 1, 16, 16) * 2 - 1)
    after_e, after_g = grads
    assert all(g is None for g in after_e["G"].values())
    assert all(g is not None for g in after_e["E"].values())
    assert all(g is not None for g in after_g["G"].values())
    for k, g in after_e["E"].items():
        assert torch.equal(g, after_g["E"][k]), k


@pytest.mark.parametrize("model", VAES)
def test_one_model_per_class(model: str, tiny2d: Path, tmp_path: Path) -> None:
    """``train.label``: a VAE trained on one class only (per-class conditioning, as for the GANs)."""
    from synthmed.data.prepared import load_prepared

    run = train(tiny_cfg(model, "train.iterations=1", "train.label=b", "train.subset=all"), tiny2d, tmp_path / "r",
                progress=False)
    data = json.loads((run / "data.json").read_text(encoding="utf-8"))
    ds = load_prepared(tiny2d)
    want = [s for s, y in zip(ds.subject_ids, ds.labels, strict=True) if y == 1]
    assert data["label"] == "b" and data["train_subject_ids"] == want and len(want) == 4
    out = sample(run, 2, tmp_path / "s", progress=False)
    assert len(list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))) == 2
