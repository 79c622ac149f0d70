"""Several readers answering at once against a real server on loopback: nothing lost or duplicated."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import socket
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from reader_helpers import make_study
from werkzeug.serving import BaseWSGIServer

from synthmed.reader.app import create_app, make_reader_server
from synthmed.reader.study import Study

N_READERS = 4
TIME_LIMIT_S = 30.0


def _expected(reader: str, item: str) -> str:
    """A deterministic answer per (reader, item), whichever client's request wins."""
    return "real" if hashlib.sha256(f"{reader}/{item}".encode()).digest()[0] % 2 else "synthetic"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, Study, BaseWSGIServer]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = make_study(tmp_path, 2, n_real=6, n_synthetic=6, readers=N_READERS, size=8)
    app = create_app(root)
    srv = make_reader_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, app.extensions["synthmed_reader"]["study"], srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _answer_all(port: int, study: Study, reader: str, deadline: float, log: list[tuple[str, int]]) -> None:
    """Read the current page and answer it until the reader is done (bounded in requests and time)."""
    tok = study.token_of(reader)
    for _ in range(6 * study.n_items):
        if time.monotonic() > deadline:
            return
        status, page = _request(port, "GET", f"/r/{tok}")
        assert status == 200
        if 'id="done"' in page:
            return
        item = re.search(r'name="item" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        pos = re.search(r'name="position" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
        body = urllib.parse.urlencode({"item": item, "position": pos, "answer": _expected(reader, item),
                                       "confidence": "3", "elapsed_ms": "10"})
        status, _ = _request(port, "POST", f"/r/{tok}/answer", body)
        log.append((item, status))
        assert status in (303, 409), status  # 409: another client of the same reader was faster


def test_concurrent_readers_lose_and_duplicate_nothing(server: tuple[Path, Study, BaseWSGIServer]) -> None:
    root, study, srv = server
    port = srv.server_port
    deadline = time.monotonic() + TIME_LIMIT_S
    logs: dict[str, list[tuple[str, int]]] = {}
    errors: list[BaseException] = []

    def run(name: str, reader: str) -> None:
        logs[name] = []
        try:
            _answer_all(port, study, reader, deadline, logs[name])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # one client per reader, plus two more clients racing on reader-1 (two tabs, a double click)
    jobs = [(f"client-{r}", r) for r in study.readers] + [("race-a", "reader-1"), ("race-b", "reader-1")]
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIME_LIMIT_S + 5)
    assert not errors, errors
    assert time.monotonic() < deadline, "clients did not finish in time"

    with sqlite3.connect(root / "answers.sqlite") as con:
        rows = con.execute("SELECT reader, position, item, answer FROM answers ORDER BY reader, position").fetchall()
    assert len(rows) == N_READERS * study.n_items
    for reader in study.readers:
        mine = [r for r in rows if r[0] == reader]
        assert [r[1] for r in mine] == list(range(study.n_items))  # every position once
        assert [r[2] for r in mine] == study.orders[reader]  # in the reader's order, no item twice
        assert all(r[3] == _expected(reader, r[2]) for r in mine)
    # readers with a single client had every answer accepted on the first try
    for reader in study.readers[1:]:
        log = logs[f"client-{reader}"]
        assert [s for _, s in log] == [303] * study.n_items
        assert [i for i, _ in log] == study.orders[reader]
    status, csv_text = _request(port, "GET", f"/admin/{study.admin_token}/answers.csv")
    assert status == 200 and len(csv_text.strip().splitlines()) == 1 + len(rows)


def test_idle_connections_time_out_and_handler_threads_are_capped(tmp_path: Path) -> None:
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # "Request timed out" lines
    root = make_study(tmp_path, 2, n_real=2, n_synthetic=2, readers=1, size=8)
    app = create_app(root)
    study = app.extensions["synthmed_reader"]["study"]
    srv = make_reader_server(app, "127.0.0.1", 0, timeout=0.5, max_threads=4)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    idle: list[socket.socket] = []
    try:
        base = threading.active_count()
        # clients that connect and never send a byte (or stop half-way through their headers)
        for k in range(12):
            sock = socket.create_connection(("127.0.0.1", srv.server_port), timeout=5)
            if k % 2:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        # within the first 0.3 s no handler has timed out yet (each waits 0.5 s from its start), so no
        # finishing thread can blur the count: at most max_threads handler threads, however many clients wait
        peak = base
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.3:
            peak = max(peak, threading.active_count())
            time.sleep(0.01)
        assert peak <= base + 4
        # a real reader is still answered: idle connections are closed after the timeout
        start = time.monotonic()
        status, page = _request(srv.server_port, "GET", f"/r/{study.token_of('reader-1')}")
        assert status == 200 and "Image 1 of 4" in page
        assert time.monotonic() - start < 5.0
        idle[0].settimeout(5)
        assert idle[0].recv(1024) == b""  # the server closed the first idle connection
    finally:
        for s in idle:
            s.close()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
