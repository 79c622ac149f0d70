"""The reader-study analysis on answers with a known truth."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import itertools
import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from reader_helpers import make_study
from scipy import stats as sps

from synthmed.cli import main
from synthmed.errors import DataError
from synthmed.reader import store as store_module
from synthmed.reader.analysis import analyze_study, report_section, table2, write_analysis
from synthmed.reader.app import create_app
from synthmed.reader.store import SAVED, AnswerStore
from synthmed.reader.study import load_study, load_truth
from synthmed.report.html import Report, Section, render_html


def _answer(root: Path, plan: dict[str, list[str]]) -> None:
    """Store answers: plan[reader][k] = 'T' (correct) or 'F' (wrong) for the k-th image shown."""
    study, truth = load_study(root), load_truth(root)
    store = AnswerStore(root / "answers.sqlite")
    for reader, marks in plan.items():
        for k, mark in enumerate(marks):
            item = study.orders[reader][k]
            real = truth[item]["source"] == "real"
            said_real = real if mark == "T" else not real
            conf = (k % 5) + 1 if reader != "reader-3" else None
            assert store.record(reader, k, item, "real" if said_real else "synthetic", conf, 1000 + k,
                                study.orders[reader]) == SAVED


@pytest.fixture
def answered(tmp_path: Path) -> Path:
    root = make_study(tmp_path, 2, n_real=5, n_synthetic=5, readers=3, size=8)
    _answer(root, {"reader-1": list("TTTTTTTTFF"), "reader-2": list("TFTFTFTTFT"), "reader-3": list("FFTTF")})
    return root


def _independent(root: Path) -> dict[str, dict[str, str]]:
    study, truth = load_study(root), load_truth(root)
    store = AnswerStore(root / "answers.sqlite")
    out: dict[str, dict[str, str]] = {r: {} for r in study.readers}
    for row in store.rows():
        out[row["reader"]][row["item"]] = row["answer"]
    assert truth
    return out


def test_per_reader_accuracy_and_table2(answered: Path) -> None:
    a = analyze_study(answered)
    truth = load_truth(answered)
    by_reader = _independent(answered)
    assert [r.name for r in a.readers] == ["reader-1", "reader-2", "reader-3"]
    assert [r.answered for r in a.readers] == [10, 10, 5]
    assert [r.complete for r in a.readers] == [True, True, False]
    assert [r.accuracy for r in a.readers] == [0.8, 0.6, 0.4]
    for r in a.readers:
        ans = by_reader[r.name]
        tp = sum(truth[i]["source"] == "real" and v == "real" for i, v in ans.items())
        fp = sum(truth[i]["source"] == "synthetic" and v == "real" for i, v in ans.items())
        assert (r.tp, r.fp, r.tp + r.fn + r.fp + r.tn) == (tp, fp, len(ans))
        assert r.p_two_sided == pytest.approx(sps.binomtest(r.tp + r.tn, r.answered).pvalue)
        n_real = sum(truth[i]["source"] == "real" for i in ans)
        assert r.by_source["real"] == {"n": n_real, "judged_real": tp}
    assert a.readers[2].mean_confidence is None and a.readers[2].auc_confidence is None
    assert a.readers[0].median_browser_seconds == pytest.approx(np.median([1 + k / 1000 for k in range(10)]))
    t = table2(a)
    assert [row[0].split(" ")[0] for row in t.rows] == ["True", "False", "True", "False"]
    r1 = a.readers[0]
    n_real = r1.tp + r1.fn
    assert t.rows[0][1].split(" / ")[0] == f"{100 * r1.tp / n_real:.0f}%"  # TP of reader-1 on real images
    assert t.rows[1][1] == "0% / 0% / 0%"  # no synthetic images in the real column
    assert t.columns[2] == "Synthetic: syn2d"


def test_agreement_matches_independent_formulas(answered: Path) -> None:
    a = analyze_study(answered)
    by_reader = _independent(answered)
    for c in a.cohen:
        common = sorted(set(by_reader[c["reader_a"]]) & set(by_reader[c["reader_b"]]))
        x = np.array([by_reader[c["reader_a"]][i] == "real" for i in common])
        y = np.array([by_reader[c["reader_b"]][i] == "real" for i in common])
        po = np.mean(x == y)
        pe = x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
        assert c["n_items"] == len(common)
        assert c["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert a.fleiss is not None and a.fleiss["n_items"] == 5 and a.fleiss["n_readers"] == 3
    common = sorted(set.intersection(*(set(v) for v in by_reader.values())))
    ratings = np.array([[by_reader[r][i] == "real" for r in by_reader] for i in common])
    pairs = list(itertools.combinations(range(3), 2))
    p_bar = np.mean([np.mean([row[i] == row[j] for i, j in pairs]) for row in ratings])
    p1 = ratings.mean()
    p_e = p1 ** 2 + (1 - p1) ** 2
    assert a.fleiss["kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))


def test_group_tests(answered: Path) -> None:
    a = analyze_study(answered)
    assert a.wilcoxon is not None
    assert a.wilcoxon["p_two_sided"] == pytest.approx(sps.wilcoxon([0.3, 0.1, -0.1]).pvalue)
    assert a.pooled["n"] == 25 and a.pooled["correct"] == 8 + 6 + 2


def test_write_analysis_outputs(answered: Path, tmp_path: Path) -> None:
    paths = write_analysis(answered)
    for name in ("report.html", "analysis.json", "analysis_readers.csv", "analysis_table2.csv",
                 "analysis_agreement.csv", "answers_with_truth.csv"):
        assert (answered / name).is_file(), name
    data = json.loads((answered / "analysis.json").read_text(encoding="utf-8"))
    assert [r["accuracy"] for r in data["readers"]] == [0.8, 0.6, 0.4]
    assert data["agreement"]["fleiss_kappa"]["n_items"] == 5
    assert {r["outcome"] for r in data["table2"]} == {"TP", "FP", "TN", "FN"}
    html = paths["report"].read_text(encoding="utf-8")
    assert "Reader study" in html and "Fleiss" in html and "Table 2" in html and "Wilcoxon" in html
    with open(answered / "answers_with_truth.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25 and {r["source"] for r in rows} == {"real", "synthetic"}
    # elsewhere, and as a section of another report
    write_analysis(answered, tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "report.html").is_file()
    sec = report_section(analyze_study(answered))
    assert isinstance(sec, Section)
    assert "Cohen" in render_html(Report("Combined", [sec]))


def test_two_readers_get_cohen_only_and_idle_readers_are_left_out(tmp_path: Path) -> None:
    root = make_study(tmp_path, 2, n_real=3, n_synthetic=3, readers=3, size=8)
    _answer(root, {"reader-1": list("TTTTTF"), "reader-2": list("TTFTTT")})
    a = analyze_study(root)
    assert a.fleiss is None and len(a.cohen) == 1
    assert a.readers[2].answered == 0 and a.readers[2].accuracy is None
    write_analysis(root)  # a reader without answers does not break the outputs


def test_analysis_errors(tmp_path: Path) -> None:
    root = make_study(tmp_path, 2, n_real=2, n_synthetic=2, readers=1, size=8)
    with pytest.raises(DataError, match="no answers recorded"):
        analyze_study(root)
    (root / "answers.sqlite").unlink()
    with pytest.raises(DataError, match="answers.sqlite: missing"):
        analyze_study(root)
    (root / "truth.csv").unlink()
    with pytest.raises(DataError, match="truth.csv: missing"):
        analyze_study(root)


class _Clock:
    """A fake server clock: the store's timestamps come from here."""

    def __init__(self) -> None:
        self.t = dt.datetime(2024, 5, 1, 9, 0, 0, tzinfo=dt.timezone.utc)

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)

    def __call__(self) -> str:
        return self.t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_reading_times_come_from_the_server_and_fast_readers_are_flagged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_study(tmp_path, 2, n_real=3, n_synthetic=3, readers=3, size=8)
    clock = _Clock()
    monkeypatch.setattr(store_module, "_now", clock)
    app = create_app(root)
    study = app.extensions["synthmed_reader"]["study"]
    c = app.test_client()
    # reader-1 is a script: 0.05 s of server time per image, but it claims 10 s in elapsed_ms
    # reader-2 looks at each image for 3 s and its browser says so; reader-3 takes 2 s and never sends elapsed_ms
    for reader, seconds, elapsed in (("reader-1", 0.05, "10000"), ("reader-2", 3.0, "3000"), ("reader-3", 2.0, "")):
        tok = study.token_of(reader)
        for k, item in enumerate(study.orders[reader]):
            if not (reader == "reader-3" and k == 4):  # one answer posted without loading its page
                page = c.get(f"/r/{tok}").get_data(as_text=True)
                assert f'name="item" value="{item}"' in page
            clock.advance(seconds)
            r = c.post(f"/r/{tok}/answer", data={"item": item, "position": str(k), "answer": "real",
                                                 "elapsed_ms": elapsed})
            assert r.status_code == 303
            clock.advance(60.0)  # a pause between an answer and the next page view is not reading time
    a = analyze_study(root)
    by = {r.name: r for r in a.readers}
    assert by["reader-1"].median_seconds == pytest.approx(0.05)
    assert by["reader-1"].median_browser_seconds == pytest.approx(10.0)
    assert by["reader-2"].median_seconds == pytest.approx(3.0)
    assert by["reader-3"].median_seconds == pytest.approx(2.0) and by["reader-3"].median_browser_seconds is None
    assert [by[n].too_fast for n in ("reader-1", "reader-2", "reader-3")] == [True, False, False]
    times = {(x["reader"], x["position"]): x["server_seconds"] for x in a.answers}
    assert times[("reader-3", 4)] == pytest.approx(62.0)  # no page view: timed from the previous answer
    assert a.study["min_seconds"] == 1.0
    # the report, the JSON and the CSVs say so; --min-seconds moves the threshold
    paths = write_analysis(root)
    html = paths["report"].read_text(encoding="utf-8")
    assert re.search(r"reader-1[^<]*median 0\.05 s per image", html) and "reader-2: median" not in html
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [r["too_fast"] for r in data["readers"]] == [True, False, False]
    assert data["flags"]["too_fast"] == ["reader-1"]
    with open(root / "answers_with_truth.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {"server_seconds", "shown_at", "elapsed_ms"} <= set(rows[0])
    assert main(["reader", "analyze", str(root), "--min-seconds", "2.5"]) == 0
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["flags"]["too_fast"] == ["reader-1", "reader-3"] and data["study"]["min_seconds"] == 2.5
    capsys.readouterr()
    assert main(["reader", "analyze", str(root), "--min-seconds", "-1"]) == 2
    assert "--min-seconds" in capsys.readouterr().err


def test_analyze_checkpoints_the_wal_so_the_database_file_alone_holds_every_answer(answered: Path,
                                                                                     tmp_path: Path) -> None:
    hold = sqlite3.connect(answered / "answers.sqlite")  # e.g. the server, still running
    hold.execute("SELECT COUNT(*) FROM answers").fetchall()  # opens the file; no transaction stays open
    try:
        _answer_more = AnswerStore(answered / "answers.sqlite")
        study = load_study(answered)
        order = study.orders["reader-3"]
        for k in range(5, 10):
            assert _answer_more.record("reader-3", k, order[k], "real", None, None, order) == SAVED
        assert (answered / "answers.sqlite-wal").stat().st_size > 0
        analyze_study(answered)
        assert (answered / "answers.sqlite-wal").stat().st_size == 0
        copy = tmp_path / "only-the-database"
        copy.mkdir()
        shutil.copy(answered / "answers.sqlite", copy / "answers.sqlite")
        with contextlib.closing(sqlite3.connect(copy / "answers.sqlite")) as con:
            assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 30
    finally:
        hold.close()
