"""Conditional training through the real loop: SN-GAN, alpha-SN-GAN and HA-GAN with every conditioning
method, multi-label data, per-class runs, exact resume and clear errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synth_testdata import make_tiny_prepared

from synthmed.config import load_config
from synthmed.data.prepared import attach_multi_labels, load_prepared
from synthmed.errors import ConfigError, DataError
from synthmed.generate.sample import load_run, sample
from synthmed.train.checkpoint import load_checkpoint
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.iterations=2",
        "model.classifier_iterations=3"]
METHODS = ["frozen-classifier", "ac", "projection"]


def cfg(model: str, *extra: str):
    over = [*TINY, *extra]
    if model == "alpha_sngan":
        over.append("model.code_hidden_dim=16")
    return load_config(model, over)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("cond")
    return {2: make_tiny_prepared(root / "p2", 2, 16, 8), 3: make_tiny_prepared(root / "p3", 3, 8, 8)}


def check_conditional_run(run: Path, method: str, tmp: Path) -> None:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    assert ckpt["conditioning"]["method"] == method and ckpt["conditioning"]["class_names"] == ["a", "b"]
    assert ckpt["params"]["num_classes"] == 2 and ckpt["params"]["conditioning"] == method  # filled in from the data
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["model"]
    assert resolved["num_classes"] == 2 and resolved["conditioning"] == method
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert meta["conditioning"]["method"] == method and meta["status"] == "finished"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert all(math.isfinite(float(v)) for r in rows for k, v in r.items() if v != "")
    if method != "projection":
        assert "loss_g_class" in rows[0]
    if method == "frozen-classifier":
        assert int(ckpt["nets"]["C"]["trained"]) == 1
    # the generator depends on the label, and sampling with a label records it
    loaded = load_run(run, device="cpu")
    z = torch.randn(2, 16)
    a = loaded.family.generate_images(loaded.nets, z, torch.tensor([0, 0]))
    b = loaded.family.generate_images(loaded.nets, z, torch.tensor([1, 1]))
    assert not np.allclose(a, b)
    out = sample(run, 3, tmp / "s", labels=["b"], progress=False)
    m = list(csv.DictReader(open(out / "manifest.csv")))
    assert [(r["label"], r["label_name"]) for r in m] == [("1", "b")] * 3


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", ["sngan", "alpha_sngan"])
def test_sngan_families_train_with_every_method(model: str, method: str, dims: int, data: dict[int, Path],
                                                 tmp_path: Path) -> None:
    run = train(cfg(model, f"model.conditioning={method}", "augment.enabled=true"), data[dims], tmp_path / "run",
                progress=False)
    check_conditional_run(run, method, tmp_path)


def test_hagan_ac_goes_through_the_same_interface(tmp_path: Path) -> None:
    prep = make_tiny_prepared(tmp_path / "p", 3, 16, 8)
    run = train(load_config("hagan", ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8",
                                      "model.conditioning=ac", "train.iterations=2", "train.n_preview=2"]),
                prep, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["conditioning"]["method"] == "ac" and ckpt["params"]["num_classes"] == 2
    out = sample(run, 2, tmp_path / "s", labels=["a", "1"], progress=False)
    m = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["label_name"] for r in m] == ["a", "b"]
    with pytest.raises(ConfigError, match="supports none, per-class, ac; got 'projection'"):
        load_config("hagan", ["model.conditioning=projection"])
    with pytest.raises(ConfigError, match="label_embedding_dim"):
        load_config("sngan", ["model.label_embedding_dim=-1"])


def test_auto_means_the_papers_method(tmp_path: Path, data: dict[int, Path]) -> None:
    """num_classes alone: paper 000's frozen classifier for SN-GAN (paper 001's AC head for HA-GAN)."""
    run = train(cfg("sngan", "model.num_classes=2"), data[2], tmp_path / "run", progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["conditioning"]["method"] == "frozen-classifier"
    with pytest.raises(ConfigError, match="has 2 classes"):
        train(cfg("sngan", "model.num_classes=3"), data[2], tmp_path / "bad", progress=False)


def test_multi_label_conditioning(tmp_path: Path) -> None:
    prep = make_tiny_prepared(tmp_path / "p", 2, 16, 8)
    table = tmp_path / "findings.csv"
    ds = load_prepared(prep)
    with open(table, "w", encoding="utf-8") as f:
        f.write("subject_id,edema,effusion,device\n")
        for i, sid in enumerate(ds.subject_ids):
            f.write(f"{sid},{i % 2},{(i // 2) % 2},{int(i % 3 == 0)}\n")
    attach_multi_labels(prep, table)
    assert load_prepared(prep).multi_labels.shape == (8, 3) and load_prepared(prep).findings == ["edema", "effusion", "device"]
    for method in ("ac", "projection", "frozen-classifier"):
        run = train(cfg("sngan", f"model.conditioning={method}", "model.multi_label=true"), prep,
                    tmp_path / method, progress=False)
        rec = load_checkpoint(run / "checkpoints" / "last.pt")["conditioning"]
        assert rec["multi_label"] and rec["class_names"] == ["edema", "effusion", "device"]
        assert all(len(c) == 3 for c in rec["label_combinations"])
    out = sample(run, 2, tmp_path / "s", labels=["edema+device", "none"], progress=False)
    m = list(csv.DictReader(open(out / "manifest.csv")))
    assert [(r["label_name"], r["findings"]) for r in m] == [("edema+device", "1;0;1"), ("none", "0;0;0")]
    bad = tmp_path / "bad.csv"
    bad.write_text("subject_id,edema\nsub-00,2\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 0 or 1|no row"):
        attach_multi_labels(prep, bad)
    with pytest.raises(DataError, match="multi-label matrix"):
        train(cfg("sngan", "model.conditioning=ac", "model.multi_label=true"), make_tiny_prepared(tmp_path / "q", 2, 16, 8),
              tmp_path / "nomulti", progress=False)


def test_per_class_runs(tmp_path: Path, data: dict[int, Path]) -> None:
    with pytest.raises(ConfigError, match="once per class"):
        train(cfg("sngan", "model.conditioning=per-class"), data[2], tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="needs every class"):
        train(cfg("sngan", "model.conditioning=ac", "train.label=a"), data[2], tmp_path / "y", progress=False)
    run = train(cfg("sngan", "model.conditioning=per-class", "train.label=b"), data[2], tmp_path / "b", progress=False)
    rec = json.loads((run / "run.json").read_text(encoding="utf-8"))["conditioning"]
    assert rec["method"] == "per-class" and rec["label_name"] == "b"
    assert "C" not in load_checkpoint(run / "checkpoints" / "last.pt")["nets"]  # unconditional networks


def test_unlabelled_data_is_a_clear_error(tmp_path: Path) -> None:
    prep = make_tiny_prepared(tmp_path / "p", 2, 16, 8)
    manifest = prep / "manifest.csv"
    rows = list(csv.DictReader(open(manifest)))
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": ""})
    with pytest.raises(DataError, match="needs a label for every image"):
        train(cfg("sngan", "model.conditioning=projection"), prep, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="model.conditioning"):
        load_config("sngan", ["model.conditioning=bogus"])


@pytest.mark.parametrize("method", ["frozen-classifier", "ac"])
def test_conditional_resume_is_exact(method: str, data: dict[int, Path], tmp_path: Path) -> None:
    extra = [f"model.conditioning={method}", "train.checkpoint_every=2"]
    straight = train(cfg("sngan", *extra, "train.iterations=4"), data[2], tmp_path / "a", progress=False)
    half = train(cfg("sngan", *extra, "train.iterations=2"), data[2], tmp_path / "b", progress=False)
    train(cfg("sngan", *extra, "train.iterations=4"), data[2], half, resume=True, progress=False)
    wa = load_checkpoint(straight / "checkpoints/last.pt")["nets"]
    wb = load_checkpoint(half / "checkpoints/last.pt")["nets"]
    for net in wa:
        for k in wa[net]:
            assert torch.equal(wa[net][k], wb[net][k]), f"{net}.{k}"


def test_frozen_classifier_is_trained_first_then_frozen() -> None:
    """Paper 000: the auxiliary classifier is trained in advance on real data and only used in inference."""
    from synthmed.models.base import get_family
    from synthmed.train.steps import make_step

    c = cfg("sngan", "model.conditioning=frozen-classifier", "model.num_classes=2", "model.classifier_iterations=5")
    fam = get_family("sngan")
    nets = fam.build(c.model.params, 2, (16, 16))
    step = make_step(fam, c, nets, torch.device("cpu"), None)
    images, labels = torch.rand(6, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1, 0, 1])
    before = {k: v.clone() for k, v in nets["C"].state_dict().items()}
    step.prepare(images, labels=labels)
    trained = {k: v.clone() for k, v in nets["C"].state_dict().items()}
    assert int(trained["trained"]) == 1
    assert any(not torch.equal(before[k], trained[k]) for k in before if k != "trained")
    assert not any(p.requires_grad for p in nets["C"].parameters()) and not nets["C"].training
    g0 = {k: v.clone() for k, v in nets["G"].state_dict().items()}
    for _ in range(2):
        out = step(images[:4], labels=labels[:4])
        assert out["loss_g_class"] > 0
    assert all(torch.equal(trained[k], v) for k, v in nets["C"].state_dict().items())  # incl. spectral-norm vectors
    assert any(not torch.equal(g0[k], v) for k, v in nets["G"].state_dict().items())
    step.prepare(images, labels=labels)  # already trained (e.g. a resumed run): nothing changes
    assert all(torch.equal(trained[k], v) for k, v in nets["C"].state_dict().items())
