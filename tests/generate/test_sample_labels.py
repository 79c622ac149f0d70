"""Sampling with labels: requested balance, label tables, manifest columns, per-class and unconditional
runs, clear errors; the CLI options."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from synth_testdata import make_tiny_prepared

from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import SynthmedError
from synthmed.generate.sample import sample
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=1",
        "train.n_preview=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    prep = make_tiny_prepared(root / "prep", 2, 8, 8)
    return {
        "ac": train(load_config("sngan", [*TINY, "model.conditioning=ac"]), prep, root / "ac", progress=False),
        "none": train(load_config("sngan", TINY), prep, root / "none", progress=False),
        "per-class": train(load_config("sngan", [*TINY, "model.conditioning=per-class", "train.label=a"]), prep,
                           root / "pc", progress=False),
    }


def manifest(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(out / "manifest.csv")))


def test_repeated_labels_set_the_balance(runs: dict[str, Path], tmp_path: Path) -> None:
    out = sample(runs["ac"], 6, tmp_path / "s", labels=["a", "a", "1"], progress=False)
    rows = manifest(out)
    assert [r["label_name"] for r in rows] == ["a", "a", "b"] * 2
    assert [r["label"] for r in rows] == ["0", "0", "1"] * 2
    meta = json.loads((out / "sample.json").read_text(encoding="utf-8"))
    assert meta["label_counts"] == {"a": 4, "b": 2} and meta["conditioning"]["method"] == "ac"


def test_default_labels_cycle_with_the_seed(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = manifest(sample(runs["ac"], 3, tmp_path / "s", seed=1, progress=False))
    assert [r["label_name"] for r in rows] == ["b", "a", "b"]  # class (seed + i) mod K


def test_labels_from_csv(runs: dict[str, Path], tmp_path: Path) -> None:
    counts = tmp_path / "counts.csv"
    counts.write_text("class,count\na,1\nb,3\n", encoding="utf-8")
    rows = manifest(sample(runs["ac"], None, tmp_path / "c", labels_from=counts, progress=False))
    assert Counter(r["label_name"] for r in rows) == {"a": 1, "b": 3}
    column = tmp_path / "column.csv"
    column.write_text("label\nb\n0\nb\n", encoding="utf-8")
    rows = manifest(sample(runs["ac"], 3, tmp_path / "l", labels_from=column, progress=False))
    assert [r["label_name"] for r in rows] == ["b", "a", "b"]
    with pytest.raises(SynthmedError, match="add up to 4 samples but --n is 5"):
        sample(runs["ac"], 5, tmp_path / "x", labels_from=counts, progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("class,count\na,many\n", encoding="utf-8")
    with pytest.raises(SynthmedError, match="line 2: count 'many' is not an integer"):
        sample(runs["ac"], None, tmp_path / "y", labels_from=bad, progress=False)
    with pytest.raises(SynthmedError, match="does not exist"):
        sample(runs["ac"], None, tmp_path / "z", labels_from=tmp_path / "missing.csv", progress=False)


def test_bad_labels_and_unconditional_runs_are_clear_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SynthmedError, match=r"no class 'c'.*classes: a \(0\), b \(1\)"):
        sample(runs["ac"], 2, tmp_path / "a", labels=["c"], progress=False)
    with pytest.raises(SynthmedError, match="trained without conditioning"):
        sample(runs["none"], 2, tmp_path / "b", labels=["a"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [r["label"] for r in manifest(sample(runs["none"], 2, tmp_path / "c", progress=False))] == ["", ""]


def test_per_class_runs_generate_their_class_only(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = manifest(sample(runs["per-class"], 2, tmp_path / "a", progress=False))
    assert [(r["label"], r["label_name"]) for r in rows] == [("0", "a")] * 2
    assert len(manifest(sample(runs["per-class"], 1, tmp_path / "b", labels=["a"], progress=False))) == 1
    with pytest.raises(SynthmedError, match=r"per-class run .* class 'a' only.*train\.label=b"):
        sample(runs["per-class"], 2, tmp_path / "c", labels=["b"], progress=False)


def test_cli_label_options(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(runs["ac"]), "--n", "2", "--out", str(tmp_path / "s"), "--label", "b",
                 "--no-progress"]) == 0
    assert [r["label_name"] for r in manifest(tmp_path / "s")] == ["b", "b"]
    assert main(["sample", str(runs["none"]), "--n", "2", "--out", str(tmp_path / "t"), "--label", "b",
                 "--no-progress"]) == 2
    assert "trained without conditioning" in capsys.readouterr().err
    assert main(["sample", str(runs["ac"]), "--out", str(tmp_path / "u"), "--no-progress"]) == 2
    assert "--n is required" in capsys.readouterr().err
