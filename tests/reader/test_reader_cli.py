"""``synthmed reader create|serve|analyze`` end to end on tiny data written here."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from reader_helpers import make_sample_folder

from synthmed.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"


def _http(port: int, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _serve(study: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `synthmed reader serve STUDY --port 0` and read the links it prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive
    # shell inherits SIGINT ignored, and the Ctrl-C below would then not reach the server
    proc = subprocess.Popen([sys.executable, "-m", "synthmed", "reader", "serve", str(study), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    links: dict[str, str] = {}
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"\s+([\w.-]+): (http://\S+)", line)
        if m:
            links[m.group(1)] = m.group(2)
        if "admin" in links:
            return proc, links
    proc.kill()
    raise AssertionError(f"serve printed no links (exit {proc.poll()})")


def test_create_serve_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synth_testdata import make_tiny_prepared

    prep = make_tiny_prepared(tmp_path / "prep", 3, 12, 8)
    syn = make_sample_folder(tmp_path / "syn", 3, 12, 4)
    study = tmp_path / "study"
    assert main(["reader", "create", "--real", str(prep), "--synthetic", str(syn), "--out", str(study),
                 "--n-real", "3", "--n-synthetic", "3", "--readers", "2", "--split", "trainval"]) == 0
    assert "reader study written to" in capsys.readouterr().out

    proc, links = _serve(study)
    try:
        assert set(links) == {"reader-1", "reader-2", "admin"}
        port = urllib.parse.urlsplit(links["admin"]).port
        assert port is not None
        for reader in ("reader-1", "reader-2"):
            path = urllib.parse.urlsplit(links[reader]).path
            for _ in range(6):
                status, page = _http(port, "GET", path)
                assert status == 200
                item = re.search(r'name="item" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
                pos = re.search(r'name="position" value="(\d+)"', page).group(1)  # type: ignore[union-attr]
                body = urllib.parse.urlencode({"item": item, "position": pos, "answer": "real", "confidence": "2"})
                assert _http(port, "POST", f"{path}/answer", body)[0] == 303
            assert 'id="done"' in _http(port, "GET", path)[1]
        assert "6 / 6" in _http(port, "GET", urllib.parse.urlsplit(links["admin"]).path)[1]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

    assert main(["reader", "analyze", str(study)]) == 0
    assert "report.html" in capsys.readouterr().out
    report = (study / "report.html").read_text(encoding="utf-8")
    assert "Reader study" in report and "Cohen" in report
    assert (study / "analysis.json").is_file() and (study / "analysis_table2.csv").is_file()


@pytest.mark.parametrize("argv, message", [
    (["reader", "create", "--real", "{tmp}/missing", "--synthetic", "{tmp}", "--out", "{tmp}/s"], "does not exist"),
    (["reader", "analyze", "{tmp}"], "study.json: missing"),
    (["reader", "serve", "{tmp}/nothing"], "does not exist"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                        message: str) -> None:
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("synthmed: error:") and message in err and len(err.strip().splitlines()) == 1
