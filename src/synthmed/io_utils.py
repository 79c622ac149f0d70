"""Small file helpers: atomic writes, hashing, run-folder JSON, output-folder locks."""

from __future__ import annotations

import contextlib
import csv
import errno
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
from typing import Any, NoReturn

from synthmed.errors import SynthmedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


#: longest name (UTF-8 bytes) kept as it is in the names of temporaries and locks (file systems allow 255)
SHORT_NAME_BYTES = 200


def short_name(name: str) -> str:
    """``name`` itself, or for a name longer than :data:`SHORT_NAME_BYTES` bytes its first 120 bytes, ``~``
    and 12 hex digits of its SHA-256: what the hidden temporaries (``.NAME.XXXXXXXX.tmp``) and locks
    (``.NAME.lock``) of a file or folder are named after, so that a long valid name still has them."""
    if len(name.encode("utf-8")) <= SHORT_NAME_BYTES:
        return name
    cut = name.encode("utf-8")[:120].decode("utf-8", "ignore")
    return f"{cut}~{hashlib.sha256(name.encode('utf-8')).hexdigest()[:12]}"


# ------------------------------------------------------------------ OS errors on output
def describe_os_error(e: OSError) -> str:
    """One line for an OSError: ``PATH: reason`` (``PATH -> OTHER: reason`` for a rename), or the reason."""
    reason = e.strerror or str(e)
    if e.filename is not None:
        where = os.fsdecode(e.filename)
        if e.filename2 is not None:
            where += f" -> {os.fsdecode(e.filename2)}"
        return f"{where}: {reason}"
    return reason


def _renamed(e: OSError, path: str | os.PathLike[str], tmp: str | os.PathLike[str] | None = None) -> OSError:
    """``e`` naming ``path`` when it names no file (a failed ``write`` on a file object: disk full ...); a
    name inside the temporary ``tmp`` becomes the same name inside ``path``, where it was going."""
    name = e.filename
    if name is None:
        if e.errno is None:  # numpy's short write ("65536 requested and 15328 written") has no errno
            if _no_space_left(path):
                return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({e})", os.fspath(path))
            return OSError(None, str(e), os.fspath(path))
        return OSError(e.errno, e.strerror or str(e), os.fspath(path))
    if tmp is not None:
        name, t = os.fsdecode(name), os.fspath(tmp)
        if name == t or name.startswith(t + os.sep):
            return OSError(e.errno, e.strerror, os.fspath(path) + name[len(t):])
    return e


def _no_space_left(path: str | os.PathLike[str]) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing parent) has no free block left."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return False
    return st.f_bavail == 0


@contextlib.contextmanager
def naming_path(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an OSError of the block that names no file (a write on a full disk) as one naming ``path``,
    so the one-line message of the CLI can say where it happened."""
    try:
        yield
    except OSError as e:
        new = _renamed(e, path)
        if new is e:
            raise
        raise new from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever visible under the final name.  An OSError that names no file (a full
    disk during a write) or names the temporary is re-raised naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{short_name(path.name)}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except OSError as e:
        _raise_naming(e, path, tmp_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _raise_naming(e: OSError, path: Path, tmp: Path) -> NoReturn:
    """Re-raise ``e`` (inside its ``except`` block) as :func:`_renamed` words it: naming ``path``, not ``tmp``."""
    new = _renamed(e, path, tmp)
    if new is e:
        raise e
    raise new from e


def _swap_folder(new: Path, dst: Path) -> None:
    """Replace the folder ``dst`` by ``new``: the old one is moved aside (``.NAME.old-PID``), then removed."""
    old = dst.with_name(f".{short_name(dst.name)}.old-{os.getpid()}")
    os.rename(dst, old)
    os.rename(new, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _temporary_folder(path: Path, parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder in ``parent`` (``PREFIX.XXXXXXXX.tmp``, with the usual permissions, where mkdtemp gives
    0700), removed when the block leaves it behind; an OSError in the block is re-raised naming ``path``
    (see :func:`_renamed`)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except OSError as e:
        _raise_naming(e, path, tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary folder next to ``path`` (with the usual permissions); on success it
    replaces ``path`` (an old folder there is moved aside, then removed), on failure it is removed.

    A folder written this way appears complete or not at all.  An OSError that names no file (a full
    disk during a write) is re-raised naming ``path``, one naming a file in the temporary folder naming
    that file in ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_folder(path, path.parent, f".{short_name(path.name)}.") as tmp:
        yield tmp
        if path.exists():
            _swap_folder(tmp, path)
        else:
            os.rename(tmp, path)


@contextlib.contextmanager
def staged_contents(path: str | os.PathLike[str], owned: Sequence[str], last: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a new temporary folder inside the folder ``path`` (``.staging.XXXXXXXX.tmp``); on success
    publish what was written there into ``path``, on failure remove it and leave ``path`` as it was.

    For folders that hold other files or a lock of their own (so :func:`atomic_dir` cannot replace them
    as a whole).  Publishing first removes the ``last`` entries from ``path`` (so an interrupted publish
    never shows them beside a mix of old and new files), then moves every staged entry into ``path``
    (a folder replaces the old one of its name as a whole, a file by ``os.replace``), the ``last`` ones
    last, and removes the ``owned`` entries of ``path`` that the new contents lack.  Entries of ``path``
    that are not ``owned`` are never touched.  Hold the folder's :func:`folder_lock` meanwhile; the
    next holder removes the staging folder of a killed process.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _temporary_folder(path, path, ".staging.") as tmp:
        yield tmp
        staged = sorted(os.listdir(tmp), key=lambda n: (n in last, last.index(n) if n in last else 0, n))
        for name in last:
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink()
        for name in staged:
            src, dst = tmp / name, path / name
            if src.is_dir() and dst.is_dir() and not dst.is_symlink():
                _swap_folder(src, dst)
            else:
                os.replace(src, dst)
        for name in owned:
            gone = path / name
            if name not in staged and (gone.exists() or gone.is_symlink()):
                if gone.is_dir() and not gone.is_symlink():
                    shutil.rmtree(gone)
                else:
                    gone.unlink()


def link_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the folder ``src`` to ``dst`` with hard links where the file system allows (copies
    otherwise); nothing when ``src`` is not a folder."""
    if not Path(src).is_dir():
        return

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


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
    target = ".+" if of is None else re.escape(short_name(of))
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
        lock = path.parent / f".{short_name(path.name)}.lock"
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
