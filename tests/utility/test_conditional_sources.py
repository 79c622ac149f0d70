"""A conditional run folder as the synthetic source of the utility protocol: one run for every class,
class ``c`` generated with label ``c`` from the documented seeds; clear errors for mismatched classes
and for a single unconditional run; and the protocol end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_testdata import make_tiny_prepared

from synthmed.config import load_config
from synthmed.data.prepared import Record, load_prepared, write_prepared
from synthmed.errors import ConfigError
from synthmed.generate.sample import generate_batch, load_run
from synthmed.train.loop import train
from synthmed.utility.sources import TEST, TRAIN, open_sources

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2", "train.iterations=2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("condsrc")
    prep = make_tiny_prepared(root / "prep", 2, 16, 24)
    cond = train(load_config("sngan", [*TINY, "model.conditioning=ac"]), prep, root / "cond", progress=False)
    plain = train(load_config("sngan", TINY), prep, root / "plain", progress=False)
    return {"root": root, "prep": prep, "cond": cond, "plain": plain}


def _with_classes(src: Path, out: Path, classes: list[str]) -> Path:
    """The same images as ``src`` under other class names."""
    ds = load_prepared(src)
    labels = ds.labels.tolist()
    records = [Record(sid, int(lab), classes[int(lab)], f"synthetic://{i}", "0" * 64)
               for i, (sid, lab) in enumerate(zip(ds.subject_ids, labels, strict=True))]
    meta = {"spacing": [2.0, 2.0], "affine": np.eye(4), "classes": classes, "source": "test"}
    return write_prepared(out, np.asarray(ds.images, dtype=np.float32), records, meta, None)


def _seeds(seed: int, fold: int, purpose: int, label: int, start: int, n: int) -> list[int]:
    """The seed layout documented in synthmed.utility.sources, recomputed independently."""
    return [seed * 10**9 + fold * 10**8 + purpose * 2 * 10**7 + label * 10**6 + i for i in range(start, start + n)]


def test_string_and_mapping_give_every_class_with_its_label(env: dict[str, Path]) -> None:
    ds = load_prepared(env["prep"])
    run = load_run(env["cond"], device="cpu")
    for spec in (str(env["cond"]), {"a": str(env["cond"]), "b": str(env["cond"])}):
        sources = open_sources(spec, ds, batch_size=3, seed=7)
        assert sorted(sources) == [0, 1]
        assert sources[0].run is sources[1].run  # the run folder is loaded once, shared by its classes
        for c, name in enumerate(["a", "b"]):
            src = sources[c]
            assert src.cond_label == c
            assert src.provenance["conditioning"] == "ac"
            assert src.provenance["label"] == c and src.provenance["label_name"] == name
            got = src.take(1, TRAIN, 0, 5)
            seeds = _seeds(7, 1, TRAIN, c, 0, 5)
            want = generate_batch(run, seeds, torch.full((5,), c, dtype=torch.long))
            assert got.shape == (5, 1, 16, 16)
            np.testing.assert_allclose(got, want, atol=1e-5)
            # later images continue the same seeds; the synthetic test set has its own
            np.testing.assert_allclose(src.take(1, TRAIN, 3, 4)[:2], want[3:5], atol=1e-5)
            want_test = generate_batch(run, _seeds(7, 0, TEST, c, 0, 2), torch.full((2,), c, dtype=torch.long))
            np.testing.assert_allclose(src.take(0, TEST, 0, 2), want_test, atol=1e-5)
        assert not np.allclose(sources[0].take(0, TRAIN, 0, 4), sources[1].take(0, TRAIN, 0, 4))


def test_same_seeds_other_label_give_other_images(env: dict[str, Path]) -> None:
    """The label reaches the generator (not only the seed differs between classes)."""
    run = load_run(env["cond"], device="cpu")
    seeds = _seeds(0, 0, TRAIN, 0, 0, 4)
    a = generate_batch(run, seeds, torch.zeros(4, dtype=torch.long))
    b = generate_batch(run, seeds, torch.ones(4, dtype=torch.long))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("classes", [["x", "y"], ["b", "a"]])
def test_run_with_other_classes_is_rejected(classes: list[str], env: dict[str, Path]) -> None:
    other = load_prepared(_with_classes(env["prep"], env["root"] / f"other_{''.join(classes)}", classes))
    for spec in (str(env["cond"]), {classes[0]: str(env["cond"]), classes[1]: str(env["cond"])}):
        with pytest.raises(ConfigError) as e:
            open_sources(spec, other)
        msg = str(e.value)
        assert str(env["cond"]) in msg and "[a, b]" in msg and f"[{', '.join(classes)}]" in msg
        assert "expected" in msg


def test_single_unconditional_run_is_rejected(env: dict[str, Path]) -> None:
    ds = load_prepared(env["prep"])
    with pytest.raises(ConfigError, match="unconditional") as e:
        open_sources(str(env["plain"]), ds)
    assert str(env["plain"]) in str(e.value) and "one run folder per class" in str(e.value)
    assert "conditional run" in str(e.value)


def test_multi_label_conditional_run_is_rejected(env: dict[str, Path], tmp_path: Path) -> None:
    """A multi-label run (labels (B, K) 0/1) is not a per-class source (checked from its record)."""
    import shutil

    fake = tmp_path / "multi"
    shutil.copytree(env["cond"], fake)
    data = json.loads((fake / "data.json").read_text(encoding="utf-8"))
    data["conditioning"]["multi_label"] = True
    (fake / "data.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="multi-label"):
        open_sources(str(fake), load_prepared(env["prep"]))


def test_utility_end_to_end_with_a_conditional_run(env: dict[str, Path], tmp_path: Path) -> None:
    from synthmed.utility.config import load_utility_config
    from synthmed.utility.runner import run_utility

    over = [f"data.path={env['prep']}", f"synthetic={env['cond']}", "compositions=[real,synthetic-small]",
            "classifier.channels=[2,4]", "classifier.hidden=[8]", "train.max_epochs=1", "folds=3",
            "run_folds=[0]", "data.max_subjects=0", "occlusion.enabled=false", "train.threads=1"]
    cfg = load_utility_config("utility_quick", over)
    out = tmp_path / "out"
    run_utility(cfg, out, progress=False)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    res = m.get("results", m)
    assert set(res["sources"]) == {"a", "b"}
    assert res["sources"]["a"]["conditioning"] == "ac" and res["sources"]["b"]["label"] == 1
    assert (out / "per_fold_metrics.csv").is_file()
    assert len((out / "per_fold_metrics.csv").read_text(encoding="utf-8").splitlines()) == 1 + 2
