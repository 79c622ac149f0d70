"""The command line end to end on tiny data, and its error messages (one line, exit 2, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from synthmed.cli import main
from synthmed.train.checkpoint import load_checkpoint

TINY = ["--set", "model.latent_dim=16", "--set", "model.base_channels=4", "--set", "model.max_channels=8",
        "--set", "model.code_hidden_dim=16", "--set", "train.n_preview=2"]


def run_cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "synthmed", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_list_prints_every_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("models:", "sngan", "alpha_sngan", "losses:", "hinge", "augmentations:", "diffaugment", "extractors:",
                 "medicalnet-resnet50", "indomain-ae", "metrics:", "fid", "density_coverage",
                 "readers:", "shipped configs (synthmed train):", "demo_quick", "shipped utility configs:",
                 "utility_quick", "classifiers:", "diagnosis-cnn", "hagan", "intro_vae"):
        assert word in out


def test_train_then_sample_in_process(tiny3d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "alpha_sngan", "--data", str(tiny3d), "--out", str(run), "--no-progress",
                 "--set", "train.iterations=2", *TINY]) == 0
    assert "model:\n  name: alpha_sngan" in (run / "config.yaml").read_text(encoding="utf-8")
    assert "iterations: 2" in (run / "config.yaml").read_text(encoding="utf-8")
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert len(list((tmp_path / "s").glob("*.nii.gz"))) == 2


@pytest.mark.parametrize(("args", "message"), [
    (["train", "alpha_sngan", "--data", "{data}", "--out", "{tmp}/r", "--set", "train.iterationz=3"],
     "train.iterationz"),
    (["train", "alpha_sngan", "--data", "{tmp}/missing", "--out", "{tmp}/r"], "missing"),
    (["train", "nosuchconfig", "--data", "{data}", "--out", "{tmp}/r"], "shipped configs"),
    (["sample", "{tmp}/norun", "--n", "2", "--out", "{tmp}/s"], "run folder does not exist"),
])
def test_errors_are_one_clear_line(args: list[str], message: str, tiny3d: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(data=tiny3d, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("synthmed: error:") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    proc = run_cli("sample", str(tmp_path / "nope"), "--n", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "run folder does not exist" in proc.stderr


def test_resume_after_kill_matches_uninterrupted_run(tiny3d: Path, tmp_path: Path) -> None:
    """Kill a real training process after a checkpoint, resume it, compare with a straight run."""
    common = ["--data", str(tiny3d), "--no-progress", "--set", "train.iterations=400",
              "--set", "train.checkpoint_every=1", "--set", "train.log_every=1", "--set", "augment.enabled=true", *TINY]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "synthmed", "train", "alpha_sngan", "--out", str(killed), *common],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_step(last) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_step(last)
    assert 3 <= stopped_at < 400, "the run should have been killed part-way"
    target = str(stopped_at + 3)
    # same process settings (thread count) for all three runs: float results depend on them
    resumed = run_cli("train", "alpha_sngan", "--out", str(killed), "--resume", *common,
                      "--set", f"train.iterations={target}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = tmp_path / "straight"
    ref = run_cli("train", "alpha_sngan", "--out", str(straight), *common, "--set", f"train.iterations={target}")
    assert ref.returncode == 0, ref.stderr[-2000:]
    a, b = load_checkpoint(killed / "checkpoints/last.pt"), load_checkpoint(straight / "checkpoints/last.pt")
    assert a["step"] == b["step"] == int(target)
    for net in a["nets"]:
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), f"{net}.{k}"


def load_step(path: Path) -> int:
    for _ in range(5):
        try:
            return int(load_checkpoint(path)["step"])
        except Exception:  # noqa: BLE001 - racing the atomic rename is fine, try again
            time.sleep(0.1)
    return -1


def _write_nifti(path: Path, data) -> None:
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def _bad_input(kind: str, root: Path) -> list[str]:
    import numpy as np

    folder = root / "in"
    folder.mkdir()
    good = np.zeros((20, 20, 20))
    good[5:15, 5:15, 5:15] = 100.0
    labels = folder.parent / "labels.csv"
    labels.write_text("subject_id,label\na,x\nb,y\n")
    _write_nifti(folder / "a.nii.gz", good)
    args = ["preprocess", str(folder), "--reader", "nifti", "--labels", str(labels), "--no-register", "--size", "32"]
    if kind == "empty":
        for p in folder.iterdir():
            p.unlink()
    elif kind == "corrupt":
        (folder / "b.nii.gz").write_bytes(b"\x1f\x8b garbage")
    elif kind == "4d":
        _write_nifti(folder / "b.nii.gz", np.zeros((20, 20, 20, 3)))
    elif kind == "nan":
        bad = good.copy()
        bad[0, 0, 0] = np.nan
        _write_nifti(folder / "b.nii.gz", bad)
    elif kind == "label_column":
        _write_nifti(folder / "b.nii.gz", good)
        args += ["--label-column", "diagnosis"]
    elif kind == "unmatched_ids":
        _write_nifti(folder / "b.nii.gz", good)
        labels.write_text("subject_id,label\na,x\nb,y\nzz,x\n")
    return args


@pytest.mark.parametrize(("kind", "message"), [
    ("empty", "in"), ("corrupt", "b.nii.gz"), ("4d", "b.nii.gz"), ("nan", "b.nii.gz"),
    ("label_column", "diagnosis"), ("unmatched_ids", "zz"),
])
def test_preprocess_bad_input_is_one_clear_line(kind: str, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    assert main([*_bad_input(kind, tmp_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthmed: error:") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_download_medmnist_command_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The downloader is exercised against a file:// 'mirror' the test writes; no network is used."""
    import numpy as np

    from synthmed.data import medmnist

    src = tmp_path / "mirror.npz"
    arrays = {f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(src, **arrays)
    monkeypatch.setattr(medmnist, "medmnist_url", lambda flag, size=None: src.as_uri())
    assert main(["download-medmnist", "breastmnist", "--out", str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "breastmnist.npz").is_file()
    assert "downloaded" in capsys.readouterr().out


# ------------------------------------------------------------------ issue 16: output locations, arguments
def _raw_volumes(folder: Path) -> Path:
    """Two small NIfTI volumes for `preprocess --no-register --size 32`."""
    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        vol = np.zeros((20, 20, 20))
        vol[5:15, 5:15, 5 + i:15] = 100.0 + 10 * rng.random((10, 10, 10 - i))
        _write_nifti(folder / f"s{i}.nii.gz", vol)
    return folder


def _commands(tiny3d: Path, raw: Path, run: Path, out_root: Path) -> dict[str, list[str]]:
    return {
        "preprocess": ["preprocess", str(raw), "--out", str(out_root / "prep"), "--no-register", "--size", "32",
                       "--folds", "2", "--test-fraction", "0", "--no-progress"],
        "train": ["train", "alpha_sngan", "--data", str(tiny3d), "--out", str(out_root / "run"), "--no-progress",
                  "--set", "train.iterations=1", *TINY],
        "sample": ["sample", str(run), "--n", "8", "--out", str(out_root / "s"), "--no-progress"],
    }


@pytest.fixture
def trained(tiny3d: Path, tmp_path: Path) -> Path:
    run = tmp_path / "trained"
    assert main(["train", "alpha_sngan", "--data", str(tiny3d), "--out", str(run), "--no-progress",
                 "--set", "train.iterations=1", *TINY]) == 0
    return run


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs on ``path`` (root with mount rights only); False where that is not possible."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=20)


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder this process cannot write: chmod 555 (not as root, who ignores permissions), or as root a
    read-only tmpfs where it may mount one; skipped otherwise."""
    d = tmp_path / "ro"
    if os.geteuid() != 0:
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
    elif _mount_tmpfs(d, "ro,size=1m"):
        try:
            yield d
        finally:
            _umount(d)
    else:
        pytest.skip("running as root without the right to mount a read-only tmpfs: permissions are not enforced")


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs: writing more than that fails with ENOSPC (root with mount rights only)."""
    d = tmp_path / "full"
    if not _mount_tmpfs(d, "size=64k"):
        pytest.skip("cannot mount a tiny tmpfs here (needs root and mount rights)")
    try:
        yield d
    finally:
        _umount(d)


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthmed: error:") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def test_out_on_a_read_only_location_is_one_line(read_only_dir: Path, tiny3d: Path, trained: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw_volumes(tmp_path / "raw")
    for name, argv in _commands(tiny3d, raw, trained, read_only_dir).items():
        assert main(argv) == 2, name
        err = _one_line(capsys)
        assert str(read_only_dir) in err and ("Permission denied" in err or "Read-only file system" in err), err
    assert not any(read_only_dir.iterdir())


def test_out_under_a_missing_parent_is_created(tiny3d: Path, trained: Path, tmp_path: Path) -> None:
    raw = _raw_volumes(tmp_path / "raw")
    root = tmp_path / "new" / "deeper"
    for name, argv in _commands(tiny3d, raw, trained, root).items():
        assert main(argv) == 0, name
    assert (root / "prep" / "dataset.json").is_file() and (root / "run" / "checkpoints" / "last.pt").is_file()
    assert len(list((root / "s").glob("*.nii.gz"))) == 8


def test_out_on_a_full_disk_is_one_line(full_disk: Path, tiny3d: Path, trained: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    raw = _raw_volumes(tmp_path / "raw")
    cmds = _commands(tiny3d, raw, trained, full_disk)
    for name in ("preprocess", "sample"):
        assert main(cmds[name]) == 2, name
        err = _one_line(capsys)
        assert f"{full_disk}/" in err and "No space left on device" in err, err
        assert not any(full_disk.iterdir()), name  # no half-written folder, no temporaries
    assert main(cmds["train"]) == 2
    err = _one_line(capsys)
    assert f"{full_disk / 'run'}/" in err and "No space left on device" in err, err
    status = json.loads((full_disk / "run" / "run.json").read_text(encoding="utf-8"))
    assert status["status"] == "failed" and "No space left on device" in status["error"]


def test_disk_full_while_training_marks_the_run_failed(tiny3d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Without a tmpfs: the checkpoint's write fails with ENOSPC, as on a full disk."""
    import errno
    import json

    from synthmed.train import checkpoint

    real_open = open

    class FullFile:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self) -> FullFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            pass

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullFile(f) if "w" in mode else f

    monkeypatch.setattr(checkpoint, "open", full_open, raising=False)
    run = tmp_path / "run"
    assert main(["train", "alpha_sngan", "--data", str(tiny3d), "--out", str(run), "--no-progress",
                 "--set", "train.iterations=2", *TINY]) == 2
    err = _one_line(capsys)
    assert err == f"synthmed: error: {run / 'checkpoints' / 'last.pt'}: No space left on device"
    status = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert status["status"] == "failed" and status["error"] == f"{run / 'checkpoints' / 'last.pt'}: No space left on device"
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--batch-size", "-3", "argument --batch-size: must be at least 1, got -3"),
    ("--n", "0", "argument --n: must be at least 1, got 0"),
    ("--seed", "-1", "argument --seed: must be at least 0, got -1"),
    ("--batch-size", "two", "argument --batch-size: expected a positive integer, got 'two'"),
])
def test_sample_numeric_options_are_validated(option: str, value: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "s"), option, value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_refused_resume_leaves_the_run_record_alone(trained: Path, tiny3d: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Only a run this process started is marked failed: a --resume refused for changed settings is not a
    failure of the (killed, still resumable) run."""
    import json

    record = json.loads((trained / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["pid"] == os.getpid()
    record.update(status="running", pid=1)  # as a killed training process left it
    (trained / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert main(["train", "alpha_sngan", "--data", str(tiny3d), "--out", str(trained), "--resume", "--no-progress",
                 "--set", "train.iterations=2", "--set", "train.lr=0.5", *TINY]) == 2
    assert "--resume with settings that change the run" in _one_line(capsys)
    assert json.loads((trained / "run.json").read_text(encoding="utf-8"))["status"] == "running"
