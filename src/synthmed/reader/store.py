"""Durable answer storage: SQLite (standard library) in WAL mode, one transaction per answer.

Every answer is committed with ``synchronous=FULL`` before the web app answers the request that
shows the next image, so an answer the reader has seen accepted survives a crash or power cut.
Each call opens its own connection, so any number of server threads can record answers at once;
``BEGIN IMMEDIATE`` serialises writers and the table's keys make a lost or duplicated answer
impossible: one row per (reader, item) and per (reader, position).  Answers are never changed.

Reading times come from the server's clock: table ``shown`` holds when each reader's page for an
image was first sent, and each answer row carries that time (``shown_at``) beside the time the
answer arrived (``answered_at``); the browser's ``elapsed_ms`` is kept as sent, unchecked.

Committed answers may sit in ``answers.sqlite-wal`` until a checkpoint moves them into the
database file; :meth:`AnswerStore.checkpoint` does that, so copy the whole study folder, or
checkpoint first, before copying the database alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmed.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    reader      TEXT    NOT NULL,
    position    INTEGER NOT NULL CHECK (position >= 0),
    item        TEXT    NOT NULL,
    answer      TEXT    NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence  INTEGER CHECK (confidence IS NULL OR confidence BETWEEN 1 AND 5),
    elapsed_ms  INTEGER CHECK (elapsed_ms IS NULL OR elapsed_ms >= 0),
    answered_at TEXT    NOT NULL,
    shown_at    TEXT,
    PRIMARY KEY (reader, item),
    UNIQUE (reader, position)
);
CREATE TABLE IF NOT EXISTS shown (
    reader      TEXT    NOT NULL,
    item        TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    shown_at    TEXT    NOT NULL,
    PRIMARY KEY (reader, item)
);
"""
#: columns of :meth:`AnswerStore.rows` and of the admin CSV export; ``shown_at`` is when the server
#: first sent the page showing the image (None when it never did, e.g. an answer posted by a script)
EXPORT_COLUMNS = ["reader", "position", "item", "answer", "confidence", "elapsed_ms", "answered_at", "shown_at"]

#: outcomes of :meth:`AnswerStore.record`
SAVED, DUPLICATE, STALE = "saved", "duplicate", "stale"


@dataclass(frozen=True)
class ReaderProgress:
    """How far one reader is."""

    answered: int
    first_answer: str | None
    last_answer: str | None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AnswerStore:
    """The answers of one study in an SQLite file.

    Args:
        path: the database file (created with its schema when missing).
        timeout: seconds a writer waits for the lock before giving up.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        try:
            with self.connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(SCHEMA)
                columns = {r[1] for r in con.execute("PRAGMA table_info(answers)")}
                if "shown_at" not in columns:  # a database written before reading times were recorded
                    con.execute("ALTER TABLE answers ADD COLUMN shown_at TEXT")
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: cannot open the answer database ({e})") from None

    def close(self) -> None:
        """Nothing is held open between calls; kept for symmetry."""

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (transactions are explicit)."""
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            con.execute("PRAGMA synchronous=FULL")
            yield con
        finally:
            con.close()

    def record(self, reader: str, position: int, item: str, answer: str, confidence: int | None,
               elapsed_ms: int | None, order: Sequence[str]) -> str:
        """Store one answer in its own transaction, if it answers the reader's current image.

        Args:
            reader: reader name.
            position: the 0-based position the page showed.
            item: the item id the page showed.
            answer: ``real`` or ``synthetic``.
            confidence: 1..5 or None.
            elapsed_ms: time the image was on screen, or None.
            order: the reader's presentation order.

        Returns:
            ``SAVED`` (committed), ``DUPLICATE`` (this item was answered before; nothing changed,
            :meth:`answer_of` gives the kept answer) or ``STALE`` (not the reader's current image;
            nothing changed).
        """
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                if con.execute("SELECT 1 FROM answers WHERE reader = ? AND item = ?", (reader, item)).fetchone():
                    con.execute("ROLLBACK")
                    return DUPLICATE
                (done,) = con.execute("SELECT COUNT(*) FROM answers WHERE reader = ?", (reader,)).fetchone()
                if position != done or done >= len(order) or order[done] != item:
                    con.execute("ROLLBACK")
                    return STALE
                row = con.execute("SELECT shown_at FROM shown WHERE reader = ? AND item = ?", (reader, item)).fetchone()
                con.execute("INSERT INTO answers (reader, position, item, answer, confidence, elapsed_ms, answered_at, "
                            "shown_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (reader, position, item, answer, confidence, elapsed_ms, _now(), row[0] if row else None))
                con.execute("COMMIT")
                return SAVED
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def mark_shown(self, reader: str, position: int, item: str) -> None:
        """Note that the page showing ``item`` at ``position`` was sent to ``reader`` (the first
        time counts; a reload changes nothing)."""
        with self.connect() as con:
            con.execute("INSERT OR IGNORE INTO shown (reader, item, position, shown_at) VALUES (?, ?, ?, ?)",
                        (reader, item, position, _now()))

    def answer_of(self, reader: str, item: str) -> dict[str, Any] | None:
        """The stored answer of ``reader`` to ``item`` (keyed by :data:`EXPORT_COLUMNS`), or None."""
        with self.connect() as con:
            row = con.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM answers WHERE reader = ? AND item = ?",
                              (reader, item)).fetchone()
        return dict(zip(EXPORT_COLUMNS, row, strict=True)) if row else None

    def checkpoint(self) -> bool:
        """Move every committed answer from the write-ahead log into the database file and empty
        the log (``PRAGMA wal_checkpoint(TRUNCATE)``).

        Returns:
            True when the checkpoint completed; False when another connection held it up (a read
            in progress), in which case the log still holds answers the file alone lacks.
        """
        with self.connect() as con:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def count(self, reader: str) -> int:
        """Answers stored for ``reader``."""
        with self.connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM answers WHERE reader = ?", (reader,)).fetchone()[0])

    def progress(self) -> dict[str, ReaderProgress]:
        """Reader name -> progress, for readers with at least one answer."""
        with self.connect() as con:
            rows = con.execute("SELECT reader, COUNT(*), MIN(answered_at), MAX(answered_at) FROM answers "
                               "GROUP BY reader").fetchall()
        return {r: ReaderProgress(int(n), first, last) for r, n, first, last in rows}

    def rows(self) -> list[dict[str, Any]]:
        """Every answer, ordered by reader and position, as dicts keyed by :data:`EXPORT_COLUMNS`."""
        with self.connect() as con:
            cur = con.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM answers ORDER BY reader, position")
            return [dict(zip(EXPORT_COLUMNS, r, strict=True)) for r in cur.fetchall()]
