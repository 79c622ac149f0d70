"""Analysis of a reader study: accuracy, paper 002's Table 2, tests against chance, agreement.

Conventions: "positive" means *judged real*, as in paper 002 (Table 2): a true positive is a
real image judged real, a false positive a synthetic image judged real (the generator fooled the
reader), a true negative a synthetic image judged synthetic and a false negative a real image
judged synthetic.  Paper 004 (S.8, S.10) calls the same cells true reals (TR), false reals (FR),
true synthetics (TS) and false synthetics (FS).  Accuracy = (TP + TN) / answers.

Reading times come from the server's clock: from the moment the page showing an image was first
sent (``shown_at``) to the moment the answer arrived (``answered_at``).  An answer whose page was
never requested (only a script does that) is timed from the reader's previous answer, the
earliest moment the image could have been on screen, and the first image without a page view is
not timed.  The browser's ``elapsed_ms`` is reported beside them only for comparison: a client
can send anything.  Readers whose median server time per image is below ``min_seconds`` (default
1 s, ``--min-seconds``) are flagged: no person judges an image that fast.

``synthmed reader analyze STUDY`` writes into the study folder (or ``--out``): ``report.html``,
``analysis.json``, ``analysis_readers.csv``, ``analysis_table2.csv``, ``analysis_agreement.csv``
and ``answers_with_truth.csv``.  It first checkpoints the answer database's write-ahead log
(``PRAGMA wal_checkpoint(TRUNCATE)``), so that ``answers.sqlite`` alone holds every answer.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.errors import DataError
from synthmed.io_utils import write_json_atomic, write_text_atomic
from synthmed.reader.stats import (
    binomial_test,
    cohen_kappa,
    confusion,
    fleiss_kappa,
    rating_table,
    wilcoxon_vs_chance,
)
from synthmed.reader.store import AnswerStore
from synthmed.reader.study import ANSWERS_DB, STUDY_JSON, load_truth, read_meta, write_csv
from synthmed.report.html import Estimate, KeyValues, Report, Section, Table, Text, render_html

TRUTH_FIELDS = ["source", "source_name", "source_index", "source_id", "label"]
ANSWER_TRUTH_COLUMNS = ["reader", "position", "item", "answer", "confidence", "shown_at", "answered_at",
                        "server_seconds", "elapsed_ms", *TRUTH_FIELDS, "correct"]
#: readers whose median server time per image is below this many seconds are flagged
DEFAULT_MIN_SECONDS = 1.0


@dataclass
class ReaderStats:
    """One reader's results (None where undefined, e.g. no answers)."""

    name: str
    answered: int
    complete: bool
    tp: int
    fn: int
    fp: int
    tn: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    sensitivity: float | None  # real judged real / real answered
    specificity: float | None  # synthetic judged synthetic / synthetic answered
    p_two_sided: float | None
    p_greater: float | None
    mean_confidence: float | None
    auc_confidence: float | None  # ROC AUC of the confidence-signed answer, real = positive
    median_seconds: float | None  # server time per image: page sent -> answer received
    median_browser_seconds: float | None  # what the browser reported (elapsed_ms); unchecked
    too_fast: bool | None  # median_seconds below the analysis's min_seconds (None: not timed)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> {n, judged_real}


@dataclass
class StudyAnalysis:
    """Everything ``reader analyze`` computes (see :func:`analyze_study`)."""

    study: dict[str, Any]
    sources: list[str]
    readers: list[ReaderStats]
    wilcoxon: dict[str, Any] | None
    pooled: dict[str, Any]
    cohen: list[dict[str, Any]]
    fleiss: dict[str, Any] | None
    answers: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"study": self.study, "sources": self.sources, "readers": [asdict(r) for r in self.readers],
                "flags": {"too_fast": [r.name for r in self.readers if r.too_fast],
                          "visible_differences": self.study.get("visible_differences", [])},
                "table2": table2_rows(self), "tests": {"wilcoxon_vs_50": self.wilcoxon, "pooled_binomial": self.pooled},
                "agreement": {"cohen_kappa": self.cohen, "fleiss_kappa": self.fleiss}}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:  # the store writes ...Z, which fromisoformat accepts only from Python 3.11
        return _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None


def _server_seconds(rows: list[dict[str, Any]]) -> list[float | None]:
    """Server-side reading time of each of one reader's answers (``rows`` in position order)."""
    out: list[float | None] = []
    previous: _dt.datetime | None = None
    for r in rows:
        answered = _parse_time(r["answered_at"])
        start = _parse_time(r.get("shown_at")) or previous
        out.append(max(0.0, (answered - start).total_seconds()) if answered and start else None)
        previous = answered
    return out


def _reader_stats(name: str, rows: list[dict[str, Any]], n_items: int, sources: list[str],
                  min_seconds: float) -> ReaderStats:
    from sklearn.metrics import roc_auc_score

    is_real = [r["source"] == "real" for r in rows]
    said_real = [r["answer"] == "real" for r in rows]
    c = confusion(is_real, said_real)
    b = binomial_test(c["tp"] + c["tn"], len(rows))
    confs = [r["confidence"] for r in rows if r["confidence"] is not None]
    auc = None
    if confs and 0 < sum(is_real) < len(rows):  # a confidence-rated ROC needs both classes
        score = [(1 if s else -1) * (r["confidence"] if r["confidence"] is not None else 3)
                 for s, r in zip(said_real, rows, strict=True)]
        auc = float(roc_auc_score(is_real, score))
    times = [r["server_seconds"] for r in rows if r["server_seconds"] is not None]
    browser = [r["elapsed_ms"] / 1000 for r in rows if r["elapsed_ms"] is not None]
    median = float(np.median(times)) if times else None
    by_source = {s: {"n": 0, "judged_real": 0} for s in sources}
    for r, sr in zip(rows, said_real, strict=True):
        by_source[r["source_name"]]["n"] += 1
        by_source[r["source_name"]]["judged_real"] += int(sr)
    return ReaderStats(name, len(rows), len(rows) == n_items, c["tp"], c["fn"], c["fp"], c["tn"], b["accuracy"],
                       b["ci_low"], b["ci_high"], _ratio(c["tp"], c["tp"] + c["fn"]), _ratio(c["tn"], c["tn"] + c["fp"]),
                       b["p_two_sided"], b["p_greater"], float(np.mean(confs)) if confs else None, auc,
                       median, float(np.median(browser)) if browser else None,
                       None if median is None else median < min_seconds, by_source)


def _agreement(readers: list[str], by_reader: dict[str, dict[str, str]]) -> tuple[list[dict[str, Any]], dict | None]:
    cohen = []
    for a, b in itertools.combinations(readers, 2):
        common = sorted(set(by_reader[a]) & set(by_reader[b]))
        k = cohen_kappa([by_reader[a][i] for i in common], [by_reader[b][i] for i in common])
        agree = sum(by_reader[a][i] == by_reader[b][i] for i in common)
        cohen.append({"reader_a": a, "reader_b": b, "n_items": len(common), "kappa": k,
                      "percent_agreement": _ratio(agree, len(common))})
    fleiss = None
    if len(readers) >= 3:
        common = sorted(set.intersection(*(set(by_reader[r]) for r in readers)))
        if common:
            fk = fleiss_kappa(rating_table([[by_reader[r][i] for r in readers] for i in common]))
            fleiss = {"n_items": len(common), "n_readers": len(readers), "kappa": _finite(fk.kappa),
                      "p_observed": fk.p_observed, "p_expected": fk.p_expected, "z": _finite(fk.z),
                      "p_value": _finite(fk.p_value)}
    return cohen, fleiss


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def analyze_study(study_dir: str | os.PathLike[str], min_seconds: float = DEFAULT_MIN_SECONDS) -> StudyAnalysis:
    """Join the stored answers with the ground truth and compute every statistic.

    Readers with no answers are listed but left out of the tests; agreement uses the items
    that the compared readers have all answered.  The answer database is checkpointed first.

    Args:
        study_dir: the study folder.
        min_seconds: readers whose median server time per image is below this are flagged
            (``ReaderStats.too_fast``); they stay in every statistic.

    Raises:
        DataError: when the study folder, its truth or its answers are missing, no reader has
            answered yet, or ``min_seconds`` is negative.
    """
    if not (math.isfinite(min_seconds) and min_seconds >= 0):
        raise DataError(f"--min-seconds must be a number >= 0, got {min_seconds}")
    root = Path(study_dir)
    meta = read_meta(root)
    truth = load_truth(root)
    if sorted(truth) != sorted(meta["items"]):
        raise DataError(f"{root / 'truth.csv'}: its items do not match {root / STUDY_JSON}")
    if not (root / ANSWERS_DB).is_file():
        raise DataError(f"{root / ANSWERS_DB}: missing; serve the study (`synthmed reader serve {root}`) first")
    store = AnswerStore(root / ANSWERS_DB)
    store.checkpoint()  # answers.sqlite alone then holds every answer (a copy of it loses none)
    answers = []
    stored = store.rows()
    seconds: dict[tuple[str, int], float | None] = {}
    for reader in {r["reader"] for r in stored}:
        mine = [r for r in stored if r["reader"] == reader]
        seconds.update({(reader, r["position"]): s for r, s in zip(mine, _server_seconds(mine), strict=True)})
    for row in stored:
        t = truth.get(row["item"])
        if t is None:
            raise DataError(f"{root / ANSWERS_DB}: answer for unknown item {row['item']!r}")
        answers.append({**row, "server_seconds": seconds[(row["reader"], row["position"])],
                        **{k: t.get(k, "") for k in TRUTH_FIELDS},
                        "correct": (row["answer"] == "real") == (t["source"] == "real")})
    if not answers:
        raise DataError(f"{root / ANSWERS_DB}: no answers recorded yet")
    names = [r["name"] for r in meta["readers"]]
    sources = ["real"] + sorted({t["source_name"] for t in truth.values() if t["source"] == "synthetic"})
    n_items = len(meta["items"])
    readers = [_reader_stats(n, [a for a in answers if a["reader"] == n], n_items, sources, min_seconds)
               for n in names]
    active = [r for r in readers if r.answered]
    by_reader = {r.name: {a["item"]: a["answer"] for a in answers if a["reader"] == r.name} for r in active}
    cohen, fleiss = _agreement([r.name for r in active], by_reader)
    pooled = binomial_test(sum(r.tp + r.tn for r in active), sum(r.answered for r in active))
    study = {"folder": str(root.resolve()), "n_items": n_items, "n_real": meta.get("n_real"),
             "n_synthetic": meta.get("n_synthetic"), "n_readers": len(names), "readers_with_answers": len(active),
             "spatial_dims": meta["spatial_dims"], "shape": meta["shape"], "created": meta.get("created"),
             "sources": meta.get("sources", {}), "min_seconds": float(min_seconds),
             "visible_differences": meta.get("visible_differences", {}).get("findings", [])}
    return StudyAnalysis(study, sources, readers, wilcoxon_vs_chance([r.accuracy for r in active]), pooled,
                         cohen, fleiss, answers)


# ---------------------------------------------------------------------------------------------
# tables


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.0f}%" if b else "\u2014"


def _outcomes(r: ReaderStats, source: str) -> tuple[dict[str, int], int]:
    """TP/FP/TN/FN counts of one reader on one source's images, and how many it answered."""
    n, jr = r.by_source[source]["n"], r.by_source[source]["judged_real"]
    if source == "real":
        return {"TP": jr, "FP": 0, "TN": 0, "FN": n - jr}, n
    return {"TP": 0, "FP": jr, "TN": n - jr, "FN": 0}, n


def table2_rows(analysis: StudyAnalysis) -> list[dict[str, Any]]:
    """Paper 002's Table 2 in long form: one row per (outcome, source, reader), with counts and
    percentages of that source's images the reader answered."""
    rows = []
    for r in analysis.readers:
        for s in analysis.sources:
            cells, n = _outcomes(r, s)
            for outcome, k in cells.items():
                rows.append({"outcome": outcome, "source": s, "reader": r.name, "count": k, "n": n,
                             "percent": 100.0 * k / n if n else None})
    return rows


def table2(analysis: StudyAnalysis) -> Table:
    """Rows TP/FP/TN/FN, one column per source, cells "r1 / r2 / ..." in percent (paper 002, Table 2)."""
    active = [r for r in analysis.readers if r.answered]
    names = {"TP": "True positives (real judged real)", "FP": "False positives (synthetic judged real)",
             "TN": "True negatives (synthetic judged synthetic)", "FN": "False negatives (real judged synthetic)"}
    rows = []
    for key, label in names.items():
        cells: list[Any] = [label]
        for s in analysis.sources:
            parts = []
            for r in active:
                counts, n = _outcomes(r, s)
                parts.append(_pct(counts[key], n))
            cells.append(" / ".join(parts))
        rows.append(cells)
    cols = ["", *[("Real images" if s == "real" else f"Synthetic: {s}") for s in analysis.sources]]
    return Table(cols, rows, caption="Paper 002 Table 2 layout: percentage of each source's images, one entry per "
                                     f"reader ({' / '.join(r.name for r in active)})")


def _reader_table(analysis: StudyAnalysis) -> Table:
    rows = []
    for r in analysis.readers:
        acc = Estimate(r.accuracy, r.ci_low, r.ci_high) if r.accuracy is not None else None
        rows.append([r.name, r.answered, r.complete, r.tp, r.fn, r.fp, r.tn, acc, r.sensitivity, r.specificity,
                     r.p_two_sided, r.p_greater, r.mean_confidence, r.auc_confidence, r.median_seconds,
                     "yes" if r.too_fast else ("no" if r.too_fast is False else None), r.median_browser_seconds])
    return Table(["Reader", "Answered", "Complete", "TP", "FN", "FP", "TN", "Accuracy [95% CI]", "Sensitivity",
                  "Specificity", "Binomial p (two-sided)", "Binomial p (> 50%)", "Mean confidence",
                  "AUC (confidence)", "Median s / image (server)",
                  f"Too fast (< {analysis.study.get('min_seconds', DEFAULT_MIN_SECONDS):g} s)",
                  "Median s / image (browser, unchecked)"], rows,
                 caption="Per reader: positive = judged real; exact binomial test of the accuracy against 50%; "
                         "reading time from the server's clock (page sent to answer received)")


def _confusion_summary(analysis: StudyAnalysis) -> Table:
    active = [r for r in analysis.readers if r.answered]

    def ms(vals: list[int]) -> str:
        a = np.asarray(vals, dtype=float)
        return f"{a.mean():.1f} (\u00b1{a.std(ddof=1) if a.size > 1 else 0.0:.1f})"

    return Table(["Actual \\ judged", "Real", "Synthetic"],
                 [["Real", f"TR = {ms([r.tp for r in active])}", f"FS = {ms([r.fn for r in active])}"],
                  ["Synthetic", f"FR = {ms([r.fp for r in active])}", f"TS = {ms([r.tn for r in active])}"]],
                 caption="Mean (\u00b1 SD) over readers, as in paper 004 Tables S2-S5 (TR/FR/TS/FS)")


def _tests_table(analysis: StudyAnalysis) -> Table:
    w, p = analysis.wilcoxon, analysis.pooled
    rows = []
    if w is not None:
        rows.append(["Wilcoxon signed-rank, per-reader accuracies vs 0.5 (paper 004 S.8)", w["n_nonzero"],
                     w["statistic"], w["p_two_sided"], w["p_greater"], w["p_less"]])
    else:
        rows.append(["Wilcoxon signed-rank, per-reader accuracies vs 0.5 (paper 004 S.8)", 0, None, None, None, None])
    rows.append(["Binomial, all answers pooled (treats answers as independent)", p["n"], p["accuracy"],
                 p["p_two_sided"], p["p_greater"], None])
    return Table(["Test", "n", "Statistic / accuracy", "p (two-sided)", "p (readers > 50%)", "p (readers < 50%)"],
                 rows, caption="Tests against chance (50%)")


def _agreement_blocks(analysis: StudyAnalysis) -> list[Any]:
    blocks: list[Any] = []
    if analysis.cohen:
        blocks.append(Table(["Reader A", "Reader B", "Items", "Agreement", "Cohen's kappa"],
                            [[c["reader_a"], c["reader_b"], c["n_items"], c["percent_agreement"], c["kappa"]]
                             for c in analysis.cohen],
                            caption="Cohen's kappa per pair of readers (items both answered; paper 002)"))
    f = analysis.fleiss
    if f is not None:
        blocks.append(KeyValues({"Fleiss' kappa": f["kappa"], "readers": f["n_readers"],
                                 "items answered by all": f["n_items"], "observed agreement (P bar)": f["p_observed"],
                                 "chance agreement (P e)": f["p_expected"], "z (Fleiss, Nee & Landis 1979)": f["z"],
                                 "p (kappa > 0)": f["p_value"]},
                                caption="Fleiss' kappa over all readers (Fleiss 1971)"))
    return blocks


def report_section(analysis: StudyAnalysis) -> Section:
    """The reader study as one section of a :class:`synthmed.report.html.Report`."""
    s = analysis.study
    active = [r for r in analysis.readers if r.answered]
    w = analysis.wilcoxon
    summary = [f"{len(active)} of {s['n_readers']} readers answered; each was shown {s['n_items']} images "
               f"({s['n_real']} real, {s['n_synthetic']} synthetic) in their own random order, without being "
               "told how many of each."]
    if active:
        accs = [r.accuracy for r in active if r.accuracy is not None]
        summary.append(f"Mean accuracy {np.mean(accs):.3f} (range {min(accs):.3f}-{max(accs):.3f}); 0.5 is guessing.")
    if w is not None and w["min_p_one_sided"] > 0.05:
        summary.append(f"With {w['n_nonzero']} readers whose accuracy differs from 0.5 the Wilcoxon test cannot reach "
                       f"p < 0.05 one-sided (its smallest possible p is {w['min_p_one_sided']:.3g}); paper 004 ran it "
                       "with 9-11 readers.")
    warnings = [f"- {r.name}: median {r.median_seconds:.2f} s per image (server time, from sending the page to "
                f"receiving the answer), below the {s.get('min_seconds', DEFAULT_MIN_SECONDS):g} s threshold "
                "(--min-seconds): check that a person gave these answers."
                for r in analysis.readers if r.too_fast and r.median_seconds is not None]
    warnings += [f"- {f['source']} differs from the real images at a glance: {f['statistic']} is "
                 f"{f['real']['min']:.3f}-{f['real']['max']:.3f} in the real images and {f['synthetic']['min']:.3f}-"
                 f"{f['synthetic']['max']:.3f} in the synthetic ones, so a threshold on it alone sorts them with "
                 f"balanced accuracy {f['balanced_accuracy']:.0%} ({f['description']}; found by `reader create`)."
                 for f in s.get("visible_differences", [])]
    notes = ("- Positive = judged real (paper 002 Table 2): TP real judged real, FP synthetic judged real, "
             "TN synthetic judged synthetic, FN real judged synthetic.\n"
             "- Binomial: exact test of each reader's correct answers against 50%, Clopper-Pearson 95% CI.\n"
             "- Wilcoxon: one-sample signed-rank test of per-reader accuracies against 0.5, zero differences "
             "dropped; 'readers > 50%' asks whether readers can tell the sources apart, 'readers < 50%' is the "
             "direction paper 004 reports.\n"
             "- AUC (confidence): ROC AUC of the answer signed by its confidence (1-5, 3 when not given).\n"
             "- Reading time: server clock, from the first time the page showing the image was sent to the arrival "
             "of the answer (an answer without a page view: from the previous answer); the browser's own figure "
             "is shown for comparison only.")
    src = s.get("sources", {})
    kv = {"study folder": s["folder"], "created": s.get("created"), "image shape": s["shape"],
          "real images from": src.get("real", {}).get("path"), "real subset": src.get("real", {}).get("split"),
          "synthetic images from": [x.get("source") or x.get("name") for x in src.get("synthetic", [])]}
    blocks: list[Any] = [Text("\n".join(summary))]
    if warnings:
        blocks.append(Text("Warnings:\n\n" + "\n".join(warnings)))
    blocks += [KeyValues(kv, caption="Study"), _reader_table(analysis),
                         table2(analysis), _confusion_summary(analysis), _tests_table(analysis),
                         *_agreement_blocks(analysis), Text(notes)]
    return Section("Reader study: real or synthetic?", blocks)


def write_analysis(study_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                   min_seconds: float = DEFAULT_MIN_SECONDS) -> dict[str, Path]:
    """Analyse a study and write ``report.html``, ``analysis.json`` and the CSVs (atomically).

    Args:
        study_dir: the study folder.
        out: output folder (default: the study folder).
        min_seconds: see :func:`analyze_study`.

    Returns:
        Name -> path of every written file.
    """
    analysis = analyze_study(study_dir, min_seconds=min_seconds)
    dest = Path(out) if out is not None else Path(study_dir)
    dest.mkdir(parents=True, exist_ok=True)
    html = render_html(Report("Reader study", [report_section(analysis)]))
    paths = {
        "answers": write_csv(dest / "answers_with_truth.csv", ANSWER_TRUTH_COLUMNS, analysis.answers),
        "readers": write_csv(dest / "analysis_readers.csv", [f.name for f in fields(ReaderStats) if f.name != "by_source"],
                             [{k: v for k, v in asdict(r).items() if k != "by_source"} for r in analysis.readers]),
        "table2": write_csv(dest / "analysis_table2.csv", ["outcome", "source", "reader", "count", "n", "percent"],
                            table2_rows(analysis)),
        "agreement": write_csv(dest / "analysis_agreement.csv", ["reader_a", "reader_b", "n_items",
                                                                 "percent_agreement", "kappa"], analysis.cohen),
    }
    write_json_atomic(dest / "analysis.json", _json_safe(analysis.to_json()))
    paths["json"] = dest / "analysis.json"
    write_text_atomic(dest / "report.html", html)
    paths["report"] = dest / "report.html"
    return paths


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.integer, np.floating)):
        return _json_safe(obj.item())
    return obj


__all__: Sequence[str] = ["StudyAnalysis", "ReaderStats", "analyze_study", "report_section", "table2",
                          "table2_rows", "write_analysis"]
