"""The demo path (phantom → preprocess → train → sample → comparison) and the benchmark command."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from synthmed.bench import COLUMNS, format_table, run_bench
from synthmed.demo import DemoPlan, run_demo
from synthmed.errors import SynthmedError


def test_demo_end_to_end_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    plan = DemoPlan(n_per_class=3, size=32, config="demo_quick", n_samples=3, eval_sets=2, extractor_iterations=5)
    run_demo(out, plan=plan, progress=False, overrides=["train.iterations=2", "train.checkpoint_every=1"])
    assert (out / "demo.done").is_file()
    img = Image.open(out / "comparison.png")
    assert img.size[0] > 100 and img.size[1] > 50
    files = sorted((out / "synthetic").glob("*.nii.gz"))
    assert len(files) == 3
    prepared_affine = np.asarray(nib.load(files[0]).affine)
    import json

    assert np.allclose(prepared_affine, json.loads((out / "prepared" / "dataset.json").read_text(encoding="utf-8"))["affine"])
    labels = list(csv.DictReader(open(out / "prepared" / "manifest.csv")))
    assert {r["label_name"] for r in labels} == {"atrophy", "control"}
    # the demo ends with the evaluation report: ten (here two) synthetic sets the size of the real set
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    fid = next(r for r in metrics["results"]["sources"]["alpha-SN-GAN"]["feature_metrics"] if r["metric"] == "fid")
    assert fid["n_sets"] == 2 and metrics["results"]["real"]["n"] == 6
    assert "alpha-SN-GAN" in (out / "report" / "report.html").read_text(encoding="utf-8")
    # a finished demo folder may be replaced; any other non-empty folder is refused
    run_demo(out, plan=plan, progress=False, overrides=["train.iterations=1"])
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(SynthmedError, match="not a finished demo"):
        run_demo(other, plan=plan, progress=False)
    assert (other / "notes.txt").exists()


def test_bench_writes_rows_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    rows = run_bench(["sngan"], [16], [2], spatial_dims=2, iterations=1, warmup=1, out=out, progress=False)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert rows[0]["sec_per_it"] > 0 and rows[0]["peak_mem_mb"] > 0 and rows[0]["n_params"] > 0
    assert list(next(csv.reader(open(out)))) == COLUMNS
    assert "| sngan | 16x16 | 2 |" in format_table(rows)


def test_bench_unknown_model_is_one_line_before_any_run(tmp_path: Path) -> None:
    """`synthmed bench --models badname` named the model only inside a child's traceback."""
    out = tmp_path / "bench.csv"
    with pytest.raises(SynthmedError, match=r"unknown model 'badname'; expected one of: .*sngan") as e:
        run_bench(["sngan", "badname"], [16], [2], spatial_dims=2, iterations=1, warmup=1, out=out, progress=False)
    assert "Traceback" not in str(e.value) and not out.exists()


@pytest.mark.slow
def test_demo_on_real_bids_data(shared_data: Path, tmp_path: Path) -> None:
    """`synthmed demo --data ../shared/data/ds002748-t1w-2mm --label-column group` (all 72 brains)."""
    out = tmp_path / "demo_real"
    plan = DemoPlan(n_per_class=0, size=32, config="demo_quick", n_samples=2, eval_sets=2, extractor_iterations=5)
    run_demo(out, data=shared_data / "ds002748-t1w-2mm", label_column="group", plan=plan, progress=False,
             overrides=["train.iterations=2"])
    labels = list(csv.DictReader(open(out / "prepared" / "manifest.csv")))
    assert len(labels) == 72 and {r["label_name"] for r in labels} == {"control", "depr"}
    assert (out / "comparison.png").is_file() and (out / "report" / "report.html").is_file()
