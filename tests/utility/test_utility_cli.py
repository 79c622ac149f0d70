"""``synthmed utility`` on the command line: end to end on tiny data, resume, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from utility_helpers import blob_images, make_cohort, write_sampled_folder

from synthmed.cli import main

TINY = ["--set", "classifier.channels=[2,4]", "--set", "classifier.hidden=[8]", "--set", "train.max_epochs=1",
        "--set", "folds=3", "--set", "run_folds=[0,1]", "--set", "data.max_subjects=0",
        "--set", "occlusion.mask_size=8", "--set", "train.threads=1", "--no-progress"]


def test_utility_cli_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prep = make_cohort(tmp_path / "prep", 24)
    a = write_sampled_folder(tmp_path / "a", blob_images(24, 0, seed=3))
    b = write_sampled_folder(tmp_path / "b", blob_images(24, 1, seed=4))
    args = ["utility", "utility_quick", "--out", str(tmp_path / "out"), "--set", f"data.path={prep}",
            "--set", f"synthetic.a={a}", "--set", f"synthetic.b={b}", *TINY]
    assert main(args) == 0
    assert "utility report written to" in capsys.readouterr().out
    out = tmp_path / "out"
    for name in ("report.html", "metrics.json", "per_fold_metrics.csv", "summary.csv", "tests.csv",
                 "training_history.csv", "config.yaml", "partition.json", "figures/accuracy_bars.png",
                 "figures/occlusion.png"):
        assert (out / name).is_file(), name
    rows = (out / "per_fold_metrics.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 2 * 5  # two folds, five compositions of utility_quick
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    first = json.loads((out / "folds" / "real" / "fold0.json").read_text(encoding="utf-8"))
    assert main([*args, "--resume", "--set", "run_folds=[0,1,2]"]) == 0
    assert json.loads((out / "folds" / "real" / "fold0.json").read_text(encoding="utf-8")) == first  # kept, not recomputed
    assert len((out / "per_fold_metrics.csv").read_text(encoding="utf-8").splitlines()) == 1 + 3 * 5


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "train.lrr=1"], "train.lrr"),
    (["--set", "compositions=[real,more-real]"], "unknown composition 'more-real'"),
    (["--set", "classifier.name=resnet"], "unknown classifier 'resnet'"),
])
def test_utility_cli_errors_are_one_line(extra: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["utility", "utility_quick", "--out", str(tmp_path / "o"), "--set", "data.path=/nowhere",
            "--set", "synthetic.a=/x", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_utility_cli_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["utility", "utility_quick", "--out", str(tmp_path / "o"), "--set", f"data.path={tmp_path / 'no'}",
                 "--set", "synthetic.a=/x"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o").exists()
