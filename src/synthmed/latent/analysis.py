"""What ``synthmed latent ridge`` and ``synthmed latent traverse`` do, as library calls.

* :func:`ridge_report`: cross-validated ridge R^2 of measured properties from a codes file (paper 001,
  Table VI), for one or more ridge penalties, with permutation p-values; written as JSON.
* :func:`traverse_run`: fit the latent direction of a property on the encoded real images and write the
  traversal figure (paper 001, Sec. IV-E) plus a JSON of targets and measured values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.data.prepared import load_prepared
from synthmed.errors import ConfigError, DataError
from synthmed.io_utils import write_json_atomic
from synthmed.latent.codes import Codes, load_codes
from synthmed.latent.properties import DEFAULT_THRESHOLDS, ThresholdOptions, subject_property
from synthmed.latent.regression import RidgeResult, cross_validated_r2, fit_linear_direction
from synthmed.latent.traverse import Traversal, save_traversal_figure, traversal_warnings, traverse

log = logging.getLogger(__name__)


def _codes_and_data(codes: str | Path | Codes, data_dir: str | Path) -> tuple[Codes, Any]:
    c = codes if isinstance(codes, Codes) else load_codes(codes)
    ds = load_prepared(data_dir)
    sha = c.meta.get("images_sha256")
    if sha and sha != ds.meta.get("images_sha256"):
        raise DataError(f"{data_dir}: these are not the images the codes were computed from (images_sha256 differs)")
    return c, ds


def ridge_report(codes: str | Path | Codes, data_dir: str | Path, properties: list[str],
                 alphas: list[float | str] | None = None, folds: int = 5, log: bool = False, seed: int = 0,
                 n_permutations: int = 0, table: str | Path | None = None, out: str | Path | None = None,
                 opts: ThresholdOptions = DEFAULT_THRESHOLDS) -> list[RidgeResult]:
    """Ridge R^2 of every property for every penalty (default: paper 001's 1e-4); optionally JSON ``out``."""
    c, ds = _codes_and_data(codes, data_dir)
    results = []
    for name in properties:
        y = subject_property(ds, c.subject_ids, name, table, opts)
        for alpha in alphas or [1e-4]:
            results.append(cross_validated_r2(c.codes, y, name, alpha, folds, log, seed, n_permutations))
    if out is not None:
        write_json_atomic(Path(out), {"synthmed_version": __version__, "codes": c.meta, "folds": folds, "seed": seed,
                                      "log": log, "results": [r.to_dict() for r in results]})
    return results


def format_ridge_table(results: list[RidgeResult]) -> str:
    """Markdown table of :func:`ridge_report` results."""
    lines = ["| property | n | alpha | R^2 (pooled out-of-fold) | R^2 per fold (mean ± sd) | permutation p |",
             "|---|---|---|---|---|---|"]
    for r in results:
        p = "" if r.p_value is None else f"{r.p_value:.3f} ({r.n_permutations})"
        lines.append(f"| {r.property}{' (log)' if r.log else ''} | {r.n} | {r.alpha} | {r.r2:.3f} | "
                     f"{r.r2_mean:.3f} ± {r.r2_std:.3f} | {p} |")
    if any(r.r2 < 0 and r.p_value is not None and r.p_value < 0.05 for r in results):
        lines.append("\nNote: a negative R^2 (worse than predicting the mean) can still have a small permutation p: "
                     "the test compares with ridge on shuffled values, whose R^2 is itself negative at small "
                     "penalties; p < 0.05 then does not mean the codes predict the property (try --alpha cv).")
    return "\n".join(lines)


def traverse_run(run_dir: str | Path, codes: str | Path | Codes, data_dir: str | Path, prop: str, out: str | Path,
                 steps: int = 7, quantiles: tuple[float, float] = (0.05, 0.95), seed: int = 0, alpha: float = 1e-4,
                 table: str | Path | None = None, checkpoint: str | Path | None = None, device: str = "auto",
                 opts: ThresholdOptions = DEFAULT_THRESHOLDS, reference: str = "prior") -> Traversal:
    """Fit ``prop``'s latent direction on the codes, traverse from the ``quantiles`` of its real values, and
    write the figure ``out`` (PNG) and ``out`` with suffix ``.json``.  ``reference``: ``prior`` (a prior
    sample, paper 001) or ``codes-mean`` (the mean of the codes).  The traversal's ``warnings``
    (:func:`synthmed.latent.traverse.traversal_warnings`) are logged and written into the JSON."""
    if reference not in ("prior", "codes-mean"):
        raise ConfigError(f"--reference: expected prior or codes-mean, got {reference!r}")
    from synthmed.generate.sample import load_run

    c, ds = _codes_and_data(codes, data_dir)
    run = load_run(run_dir, checkpoint, device)
    if c.meta.get("run") and Path(c.meta["run"]).resolve() != Path(run_dir).resolve():
        raise DataError(f"the codes were encoded by run {c.meta['run']}, not {run_dir}")
    y = subject_property(ds, c.subject_ids, prop, table, opts)
    direction = fit_linear_direction(c.codes, y, prop, alpha)
    lo, hi = np.nanquantile(y, quantiles)
    spacing = ds.meta.get("spacing") or [1.0] * ds.spatial_dims
    z_ref = c.codes.mean(axis=0, keepdims=True) if reference == "codes-mean" else None
    trav = traverse(run.family, run.cfg.model.params, run.nets, direction, np.linspace(lo, hi, steps), spacing, seed,
                    run.device, opts, z_ref=z_ref)
    trav.warnings = traversal_warnings(trav, y)
    for w in trav.warnings:
        log.warning("%s", w)
    out = Path(out)
    save_traversal_figure(trav, out, spacing, opts)
    write_json_atomic(out.with_suffix(".json"), {"synthmed_version": __version__, "codes": c.meta,
                                                 "direction_r2_train": direction.r2_train, "alpha": alpha,
                                                 "real_values": {"n": int(np.isfinite(y).sum()),
                                                                 "quantiles": list(quantiles), "range": [lo, hi]},
                                                 **trav.to_dict()})
    return trav
