"""Issue 16: resume refuses changed settings and a changed split; checkpoints carry a checksum;
one process per run folder; stale temporaries of a killed run are removed."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import synthmed
from synthmed.cli import main
from synthmed.config import load_config
from synthmed.errors import CheckpointError, DataError
from synthmed.train import checkpoint as ckpt_mod
from synthmed.train.checkpoint import checksum_path, load_checkpoint
from synthmed.train.loop import RESUME_SAFE_KEYS, _kept_checkpoint, train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.log_every=1",
        "train.sample_every=100", "train.checkpoint_every=100", "train.n_preview=2"]
CLI_TINY = [a for s in TINY for a in ("--set", s)]


def cfg(*extra: str):
    return load_config("sngan", [*TINY, *extra])


@pytest.fixture
def run1(tiny3d: Path, tmp_path: Path) -> Path:
    """A one-step sngan run."""
    return train(cfg("train.iterations=1"), tiny3d, tmp_path / "run", progress=False)


# ------------------------------------------------------------------ 1. changed settings on resume
@pytest.mark.parametrize(("setting", "shown"), [
    ("train.lr=0.01", "train.lr 0.0002 -> 0.01"),
    ("train.seed=3", "train.seed 0 -> 3"),
    ("train.batch_size=2", "train.batch_size 4 -> 2"),
    ("model.latent_dim=17", "model.latent_dim 16 -> 17"),
    ("augment.enabled=true", "augment.enabled False -> True"),
])
def test_resume_with_changed_settings_is_refused(setting: str, shown: str, run1: Path, tiny3d: Path) -> None:
    config_before = (run1 / "config.yaml").read_text(encoding="utf-8")
    run_before = (run1 / "run.json").read_text(encoding="utf-8")
    with pytest.raises(CheckpointError, match="settings that change the run") as e:
        train(cfg("train.iterations=2", setting), tiny3d, run1, resume=True, progress=False)
    assert shown in str(e.value) and "\n" not in str(e.value)
    assert "train.iterations" not in str(e.value).split("(keys that may change")[0]  # iterations may change
    # nothing was rewritten: the run still says what it trains with
    assert (run1 / "config.yaml").read_text(encoding="utf-8") == config_before
    assert (run1 / "run.json").read_text(encoding="utf-8") == run_before
    assert load_checkpoint(run1 / "checkpoints/last.pt")["step"] == 1


def test_resume_may_extend_the_run_and_change_logging(run1: Path, tiny3d: Path) -> None:
    safe = ["train.iterations=2", "train.log_every=2", "train.sample_every=1", "train.checkpoint_every=1",
            "train.n_preview=1", "train.device=cpu", "train.guard_patience=9", "train.divergence_threshold=1e5"]
    assert all(s.split("=")[0] in RESUME_SAFE_KEYS for s in safe)
    train(cfg(*safe), tiny3d, run1, resume=True, progress=False)
    assert load_checkpoint(run1 / "checkpoints/last.pt")["step"] == 2


def test_cli_resume_with_changed_lr_is_one_line(run1: Path, tiny3d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "sngan", "--data", str(tiny3d), "--out", str(run1), "--resume", "--no-progress", *CLI_TINY,
            "--set", "train.iterations=2", "--set", "train.lr=0.01"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and err.count("\n") == 1 and "train.lr 0.0002 -> 0.01" in err


# ------------------------------------------------------------------ 2. changed split on resume
def _move_one_test_subject(prepared: Path) -> None:
    """``preprocess`` rerun with another split: same images, one test subject now in trainval."""
    path = prepared / "splits.json"
    splits = json.loads(path.read_text(encoding="utf-8"))
    old_test = splits["test"][0]
    newcomer = next(s for fold in splits["folds"] for s in fold)
    splits["test"][0] = newcomer
    splits["folds"] = [[old_test if s == newcomer else s for s in fold] for fold in splits["folds"]]
    path.write_text(json.dumps(splits), encoding="utf-8")


def test_resume_after_the_split_changed_is_refused(run1: Path, tiny3d: Path) -> None:
    data_before = (run1 / "data.json").read_text(encoding="utf-8")
    _move_one_test_subject(tiny3d)
    with pytest.raises(DataError, match="splits.json") as e:
        train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    assert str(tiny3d) in str(e.value) and "splits_sha256" in str(e.value)
    assert (run1 / "data.json").read_text(encoding="utf-8") == data_before
    assert load_checkpoint(run1 / "checkpoints/last.pt")["step"] == 1


def test_resume_after_the_labels_changed_is_refused(run1: Path, tiny3d: Path) -> None:
    manifest = tiny3d / "manifest.csv"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(",a,", ",z,"), encoding="utf-8")
    with pytest.raises(DataError, match="manifest.csv"):
        train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)


# ------------------------------------------------------------------ 4. checkpoint checksums
def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in (len(data) // 2, len(data) // 2 + 7, len(data) // 3):
        data[i] ^= 0x10
    path.write_bytes(bytes(data))


def test_checkpoint_with_flipped_bytes_is_refused(run1: Path, tiny3d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last = run1 / "checkpoints" / "last.pt"
    assert json.loads(checksum_path(last).read_text(encoding="utf-8"))["file"] == "last.pt"
    _flip_bytes(last)
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as e:
        load_checkpoint(last)
    assert str(last) in str(e.value)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    assert main(["sample", str(run1), "--n", "1", "--out", str(run1.parent / "s"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and "corrupt checkpoint" in err and err.count("\n") == 1
    # the divergence message never calls it the last good checkpoint
    assert "last good checkpoint" not in _kept_checkpoint(last) and "corrupt" in _kept_checkpoint(last)


def test_checkpoint_without_checksum_loads_with_a_warning(run1: Path, caplog: pytest.LogCaptureFixture) -> None:
    last = run1 / "checkpoints" / "last.pt"
    checksum_path(last).unlink()  # a run written before checksums existed
    with caplog.at_level(logging.WARNING, logger="synthmed.train.checkpoint"):
        assert load_checkpoint(last)["step"] == 1
    assert "no checksum file" in caplog.text and str(last) in caplog.text
    assert "last good checkpoint" in _kept_checkpoint(last)


def test_killed_between_checksum_and_checkpoint_rename_still_loads(run1: Path, tiny3d: Path) -> None:
    last = run1 / "checkpoints" / "last.pt"
    old = run1.parent / "step1.pt"
    shutil.copy(last, old)
    train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    shutil.copy(old, last)  # the new checksum file is in place, the rename of the checkpoint was not done
    assert load_checkpoint(last)["step"] == 1


def test_failed_write_keeps_the_previous_checkpoint(run1: Path, tiny3d: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckpt_mod, "sha256_file", lambda p, *a: "0" * 64)  # the read-back never matches
    with pytest.raises(CheckpointError, match="read back"):
        train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(run1 / "checkpoints/last.pt")["step"] == 1
    assert not list((run1 / "checkpoints").glob(".*.tmp"))


# ------------------------------------------------------------------ 3/5. locks and stale temporaries
def hold_lock(path: Path, beside: bool = False) -> subprocess.Popen[str]:
    """Another process holding the folder lock of ``path`` until killed."""
    code = ("import sys, time\nfrom synthmed.io_utils import folder_lock\n"
            "with folder_lock(sys.argv[1], beside=sys.argv[2] == '1'):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    env = {"PYTHONPATH": str(Path(synthmed.__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), "1" if beside else "0"], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_train_into_the_same_run_is_refused(run1: Path, tiny3d: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    stale = run1 / "checkpoints" / ".last.pt.abc_1234.tmp"
    holder = hold_lock(run1)
    try:
        stale.write_bytes(b"a live process's temporary")
        argv = ["train", "sngan", "--data", str(tiny3d), "--out", str(run1), "--resume", "--no-progress", *CLI_TINY,
                "--set", "train.iterations=2"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("synthmed: error:") and err.count("\n") == 1
        assert f"{run1} is in use by another synthmed process (pid {holder.pid})" in err
        assert stale.exists()  # never removed while another process holds the lock
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's lock does not block; its temporaries are removed
    train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    assert not stale.exists() and not (run1 / ".lock").exists()
    assert load_checkpoint(run1 / "checkpoints/last.pt")["step"] == 2


def test_resume_removes_stale_temporaries(run1: Path, tiny3d: Path, caplog: pytest.LogCaptureFixture) -> None:
    stale = [run1 / "checkpoints" / ".last.pt.k2x9_q0a.tmp", run1 / ".run.json.00000000.tmp",
             run1 / "samples" / ".step_0000001.png.abcdefgh.tmp"]
    keep = [run1 / "checkpoints" / ".keep.tmp", run1 / "notes.tmp", run1 / "checkpoints" / "last.pt.abcdefgh.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="synthmed.io_utils"):
        train(cfg("train.iterations=2"), tiny3d, run1, resume=True, progress=False)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert "removed 3 stale temporary file(s)" in caplog.text and str(stale[0]) in caplog.text


def test_failed_train_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        train(cfg("train.iterations=1"), tmp_path / "missing", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_lock_helper_on_the_other_commands(tiny3d: Path, run1: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """preprocess and sample replace their folder as a whole (lock beside it); evaluate writes into it."""
    cases = [
        (tmp_path / "prepared", True, ["preprocess", str(tmp_path / "raw"), "--reader", "nifti", "--size", "16",
                                       "--out", str(tmp_path / "prepared"), "--no-progress"]),
        (tmp_path / "s", True, ["sample", str(run1), "--n", "1", "--out", str(tmp_path / "s"), "--no-progress"]),
        (tmp_path / "report", False, ["evaluate", "--real", str(tiny3d), "--synthetic", str(run1), "--out",
                                      str(tmp_path / "report"), "--no-progress"]),
    ]
    for out, beside, argv in cases:
        holder = hold_lock(out, beside)
        try:
            assert main(argv) == 2, argv[0]
            err = capsys.readouterr().err
            assert f"{out} is in use by another synthmed process (pid {holder.pid})" in err, argv[0]
        finally:
            holder.kill()
            holder.wait()


def test_sample_removes_its_stale_temporary_folder(run1: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    stale = tmp_path / ".s.abcd_123.tmp"  # atomic_dir's folder, left by a killed `synthmed sample`
    (stale / "sub").mkdir(parents=True)
    other = tmp_path / ".s2.abcd_123.tmp"  # another output's temporary
    other.mkdir()
    assert main(["sample", str(run1), "--n", "1", "--out", str(out), "--no-progress"]) == 0
    assert not stale.exists() and other.exists() and not (tmp_path / ".s.lock").exists()
    assert len(list(out.glob("*.nii.gz"))) == 1


def test_threads_contending_for_a_lock(tmp_path: Path) -> None:
    import threading

    from synthmed.errors import SynthmedError
    from synthmed.io_utils import folder_lock

    barrier, results, refused = threading.Barrier(2), [], threading.Event()

    def worker() -> None:
        barrier.wait()
        try:
            with folder_lock(tmp_path / "out"):
                refused.wait(5)  # hold the lock until the other thread has been refused
                results.append("got it")
        except SynthmedError as e:
            results.append(str(e))
            refused.set()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results.count("got it") == 1, results
    assert any("out is in use by this process" in r for r in results), results
