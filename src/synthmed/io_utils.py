"""Small file helpers: atomic writes, hashing, run-folder JSON, output-folder locks."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from synthmed.errors import SynthmedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever visible under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary folder next to ``path`` (with the usual permissions); on success it
    replaces ``path`` (an old folder there is moved aside, then removed), on failure it is removed.

    A folder written this way appears complete or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def csv_text(rows: list[list[Any]], header: list[str]) -> str:
    """CSV text (LF line ends) of ``header`` and ``rows``; None cells are written empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ temporaries and folder locks
#: what ``tempfile.mkstemp``/``mkdtemp`` add between the prefix and the suffix (8 characters of this set)
_RANDOM = "[a-z0-9_]{8}"


def is_temporary_name(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a temporary of :func:`atomic_path`/:func:`atomic_dir`: ``.NAME.XXXXXXXX.tmp``
    (``NAME`` = ``of`` when given, any name otherwise)."""
    target = ".+" if of is None else re.escape(of)
    return re.fullmatch(rf"\.{target}\.{_RANDOM}\.tmp", name) is not None


def remove_stale_temporaries(folders: Sequence[Path], of: str | None = None) -> list[Path]:
    """Remove the temporaries of atomic writes (see :func:`is_temporary_name`) directly inside
    ``folders`` (not below them) and log what was removed.

    Only call this while holding the :func:`folder_lock` of the folder being written, so that no
    live process's temporaries are removed: what is left then comes from a killed process.
    """
    removed: list[Path] = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if not is_temporary_name(e.name, of):
                continue
            p = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(p)
                else:
                    p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    if removed:
        log.warning("removed %d stale temporary file(s) left by an interrupted synthmed process: %s",
                    len(removed), ", ".join(map(str, removed)))
    return removed


def _holder_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _acquire(lock: Path, what: Path) -> int | None:
    """An open descriptor of ``lock`` holding an exclusive ``flock``; SynthmedError when another process
    holds it; None (with a warning) when the file system has no locks."""
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the folder was removed by a process releasing its lock: make it again
            lock.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            for _ in range(10):  # the holder writes its pid just after taking the lock
                if pid != "unknown":
                    break
                time.sleep(0.02)
                pid = _holder_pid(fd)
            os.close(fd)
            who = "this process" if pid == str(os.getpid()) else f"another synthmed process (pid {pid})"
            raise SynthmedError(f"{what} is in use by {who}; wait until it has finished, or choose another "
                                "output folder") from None
        except OSError as e:
            os.close(fd)
            log.warning("%s: cannot lock (%s); nothing stops another process writing %s at the same time",
                        lock, e, what)
            return None
        # a process releasing its lock unlinks the file: hold the lock only on the file that is still there
        try:
            st, fst = os.stat(lock), os.fstat(fd)
            current = (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)
    raise SynthmedError(f"{lock}: could not take the lock of {what} (it keeps being replaced)")


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str], beside: bool = False,
                subfolders: Sequence[str] = ()) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``path`` for the duration of the block.

    The lock is an ``flock`` on ``path/.lock`` (``beside=True``: on ``.NAME.lock`` next to ``path``, for
    folders that :func:`atomic_dir` replaces as a whole).  A second process asking for it gets one
    SynthmedError naming the holder's pid; the kernel drops the lock of a killed process, so a stale
    lock file never blocks.  With the lock held, the temporaries of atomic writes that a killed process
    left in ``path`` and its ``subfolders`` (``beside``: ``.NAME.*.tmp`` next to ``path``) are removed.

    The lock file is removed on release, and so is ``path`` if this call created it and it is empty.
    Yields the lock file's path.
    """
    path = Path(path)
    created = False
    if beside:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.parent / f".{path.name}.lock"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            created = True
        except FileExistsError:
            created = False
            if not path.is_dir():
                raise SynthmedError(f"{path} exists and is not a folder; choose another output folder") from None
        lock = path / ".lock"
    fd = _acquire(lock, path) if fcntl is not None else None
    try:
        if fd is not None:
            if beside:
                remove_stale_temporaries([path.parent], of=path.name)
            else:
                remove_stale_temporaries([path, *(path / s for s in subfolders)])
        yield lock
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # while still holding it (see _acquire)
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if nothing was written
