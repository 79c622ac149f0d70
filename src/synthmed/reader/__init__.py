"""Blinded real-versus-synthetic reader studies: create a study, serve it in a browser, analyse it.

- :func:`create_study` draws real and synthetic images, renders them identically and writes a
  study folder with a random, blinded presentation order and a secret link per reader.
- :func:`create_app` / :func:`serve` run the web app (Flask, answers in SQLite).
- :func:`analyze_study` computes per-reader accuracy, the TP/FP/TN/FN table of paper 002
  (Table 2), binomial and Wilcoxon signed-rank tests against 50% (paper 004, S.8) and
  Cohen's / Fleiss' kappa; :func:`write_analysis` writes ``report.html``, ``analysis.json``
  and CSVs; :func:`report_section` gives the section for any other report.

Names are imported lazily so that ``synthmed --help`` does not load Flask or SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnswerStore": "synthmed.reader.store",
    "Study": "synthmed.reader.study",
    "create_study": "synthmed.reader.study",
    "load_study": "synthmed.reader.study",
    "load_truth": "synthmed.reader.study",
    "create_app": "synthmed.reader.app",
    "serve": "synthmed.reader.app",
    "make_reader_server": "synthmed.reader.app",
    "study_links": "synthmed.reader.app",
    "StudyAnalysis": "synthmed.reader.analysis",
    "analyze_study": "synthmed.reader.analysis",
    "report_section": "synthmed.reader.analysis",
    "write_analysis": "synthmed.reader.analysis",
    "FleissKappa": "synthmed.reader.stats",
    "binomial_test": "synthmed.reader.stats",
    "cohen_kappa": "synthmed.reader.stats",
    "fleiss_kappa": "synthmed.reader.stats",
    "wilcoxon_vs_chance": "synthmed.reader.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synthmed.reader' has no attribute {name!r}")
