"""The privacy section of ``synthmed evaluate`` (paper 004, S.6): every synthetic sample audited, the
near-copy fraction as the headline, the flagged samples beside their training images, aggregate
statistics second.

:class:`PrivacyStream` is fed every synthetic set of a source as it is loaded or generated (at most one
set in memory) and runs three analyses on each:

* the near-copy audit (:class:`synthmed.evaluate.copies.CopyAuditor`): flips and shifts found, blur not
  mistaken for copying, false-positive rate calibrated and measured on held-out real images;
* distance to closest record and membership inference in pixel space (L2) and in the feature space
  (cosine, as paper 004), accumulated over the sets (:class:`synthmed.evaluate.privacy.StreamedDistances`);
* the most copy-like samples, kept for the figure and the SSIM check.

Training and held-out subjects are the generating run's own (``data.json``'s ``train_subject_ids``, for
run folders and for sampled folders whose run is found, :func:`synthmed.evaluate.synthetic.generating_runs`)
against every other subject of the dataset; only when no run is known, the prepared trainval vs test split.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from synthmed.data.prepared import PreparedDataset
from synthmed.errors import DataError
from synthmed.evaluate.copies import CopyAuditor, SearchConfig
from synthmed.evaluate.privacy import (
    SSIMConfig,
    StreamedDistances,
    nearest_neighbour_figure,
    nearest_neighbours,
)
from synthmed.evaluate.synthetic import SyntheticSet
from synthmed.report.html import Figure, KeyValues, Table, Text

#: synthetic samples kept in memory for the figure and the SSIM check (the most copy-like)
KEPT = 12
#: flagged samples listed in the report's table (all of them are in metrics.json)
LISTED = 50
#: the audit's default target false-positive rate
ALPHA = 0.01


def train_holdout(ds: PreparedDataset, first: SyntheticSet) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows the generator was trained on, rows it never saw, and where that came from."""
    ids = ds.subject_ids
    if first.train_subject_ids:
        seen = set(first.train_subject_ids)
        unknown = seen - set(ids)
        if unknown:
            raise DataError(f"{ds.root}: the run was trained on subjects this dataset does not have "
                            f"(e.g. {sorted(unknown)[:3]}); evaluate against the dataset it was trained on")
        train = np.array([i for i, s in enumerate(ids) if s in seen], dtype=np.int64)
        hold = np.array([i for i, s in enumerate(ids) if s not in seen], dtype=np.int64)
        return train, hold, "the run's training subjects (data.json) vs every other subject"
    if ds.splits is not None:
        return ds.indices("trainval"), ds.indices("test"), (
            "prepared splits: trainval vs test (the generating run was not found, so its own training "
            "subjects are unknown)")
    return np.arange(0), np.arange(0), "no split and no run: cannot tell training from held-out subjects"


class PrivacyStream:
    """The privacy analyses of one source, fed set by set (module docstring).

    Args:
        ds: the prepared real dataset.
        first: the source's first set (tells whose training subjects to use).
        real_features: (len(ds), D) features of every real image, in dataset order.
        device: torch device of the near-copy search.
    """

    def __init__(self, ds: PreparedDataset, first: SyntheticSet, real_features: np.ndarray, device: str = "cpu",
                 alpha: float = ALPHA) -> None:
        self.ds = ds
        self.train_rows, self.hold_rows, self.how = train_holdout(ds, first)
        self.skipped: str | None = None
        if len(self.train_rows) == 0:
            self.skipped = f"Privacy not assessed: {self.how}."
        elif len(self.hold_rows) < 4 or len(self.train_rows) < 4:
            self.skipped = (f"Privacy not assessed: {len(self.train_rows)} training and {len(self.hold_rows)} held-out "
                            f"subject(s) ({self.how}); the near-copy audit needs at least 4 of each.")
        if self.skipped:
            return
        self.train_img = np.asarray(ds.images[self.train_rows], dtype=np.float32)
        hold_img = np.asarray(ds.images[self.hold_rows], dtype=np.float32)
        k = min(10, len(self.train_rows) - 1)
        self.audit = CopyAuditor(self.train_img, hold_img, SearchConfig(device=device), alpha=alpha, neighbours=k)
        self.spaces = {"pixel (L2)": StreamedDistances(self.train_img, hold_img, "l2"),
                       "features (cosine)": StreamedDistances(real_features[self.train_rows],
                                                              real_features[self.hold_rows], "cosine")}
        self.kept: list[tuple[float, int, str, np.ndarray]] = []  # (-score, position, id, image): the lowest scores
        self.n = 0

    def add(self, s: SyntheticSet, features: np.ndarray) -> None:
        """Audit one set: ``s.images`` (M, 1, *spatial) and their ``features`` (M, D)."""
        if self.skipped:
            return
        ids = s.ids or [str(self.n + i) for i in range(len(s.images))]
        scores = self.audit.add(s.images, ids)
        self.spaces["pixel (L2)"].add(s.images)
        self.spaces["features (cosine)"].add(features)
        for i in np.argsort(scores, kind="stable")[:KEPT]:
            item = (-float(scores[i]), self.n + int(i), ids[i], np.array(s.images[i]))
            if len(self.kept) < KEPT:
                heapq.heappush(self.kept, item)
            elif item[0] > self.kept[0][0]:
                heapq.heapreplace(self.kept, item)
        self.n += len(s.images)

    def section(self, figure_path: Path, ssim_queries: int = 0,
                ssim_candidates: int = 4) -> tuple[list[Any], dict[str, Any]]:
        """The report blocks and the JSON results (headline first, aggregate statistics after)."""
        if self.skipped:
            return [Text(self.skipped)], {"skipped": self.skipped, "train_vs_holdout": self.how,
                                          "n_train": len(self.train_rows), "n_holdout": len(self.hold_rows)}
        audit = self.audit.result()
        subject = self.ds.subject_ids
        for f in audit["flagged"]:
            f["train_subject"] = subject[self.train_rows[f["train_index"]]]
        result: dict[str, Any] = {"train_vs_holdout": self.how, "n_train": len(self.train_rows),
                                  "n_holdout": len(self.hold_rows), "n_samples": audit["n_samples"],
                                  "near_copies": {k: v for k, v in audit.items() if not isinstance(v, np.ndarray)
                                                  and k != "transforms"}}
        blocks: list[Any] = [_headline(audit, self.how), _definition(audit)]
        if audit["flagged"]:
            blocks.append(_flagged_table(audit))
        kept = sorted(self.kept, key=lambda t: (-t[0], t[1]))
        blocks.append(self._figure(audit, kept, figure_path))
        rows = []
        for space, acc in self.spaces.items():
            d = acc.result()
            mia = d.pop("membership_inference")
            rows.append([space, d["median_synthetic"], d["median_holdout"], d["ratio"], d["p_value"], mia["auc"],
                         mia["p_value"]])
            result[space] = {**{k: v for k, v in d.items() if k not in ("synthetic_dcr", "holdout_dcr", "nearest_train")},
                             "membership_inference": mia}
        blocks.append(Table(
            ["space", "median DCR synthetic", "median DCR held-out", "ratio", "p (synthetic closer)", "MIA AUC", "MIA p"],
            rows, caption="Secondary, aggregate statistics over all samples: distance to the closest training record "
                          "(DCR) of synthetic vs held-out real images, and a distance-based membership-inference "
                          "attack. They average over the cohort, so a few copies move them little (a cohort with "
                          "10.5% copies had a ratio of 0.97 and an AUC of 0.51), and pixel distances fall for blurred "
                          "samples without any copying: read the near-copy fraction above, not these."))
        if ssim_queries > 0 and min(self.ds.shape) >= 11 and kept:
            blocks.append(self._ssim(kept[:ssim_queries], ssim_candidates, result))
        return blocks, result

    def _figure(self, audit: dict[str, Any], kept: list[tuple[float, int, str, np.ndarray]], path: Path) -> Figure:
        flagged = {f["sample"] for f in audit["flagged"]}
        shown = [t for t in kept if t[1] in flagged] or kept[:8]
        train_idx = audit["nearest_train"][[t[1] for t in shown]]
        subject = self.ds.subject_ids
        fig = nearest_neighbour_figure(np.stack([t[3] for t in shown]), self.train_img, train_idx, path, n=len(shown),
                                       names=[t[2] for t in shown],
                                       train_names=[str(subject[r]) for r in self.train_rows])
        what = (f"The {len(shown)} flagged sample(s) most like their source" if flagged else
                f"No sample is flagged; the {len(shown)} most copy-like samples") + (
            " (left) beside the nearest training image (right), found under flips and shifts; the table lists the "
            "transform that matched.")
        return Figure(fig, caption=what)

    def _ssim(self, kept: list[tuple[float, int, str, np.ndarray]], candidates: int, result: dict[str, Any]) -> Text:
        images = np.stack([t[3] for t in kept])
        cfg = SSIMConfig(candidates=min(candidates, len(self.train_rows)))
        idx, dist = nearest_neighbours(images, self.train_img, metric="ssim", ssim=cfg)
        ssim = 1 - dist[:, 0]
        result["ssim_nearest"] = {"queries": [t[1] for t in kept], "train_rows": self.train_rows[idx[:, 0]].tolist(),
                                  "ssim": ssim.tolist()}
        return Text(f"SSIM with the nearest training image (no flips or shifts) of the {len(kept)} most copy-like "
                    f"samples (each re-ranked among its {cfg.candidates} L2-nearest): max {float(np.max(ssim)):.3f}, "
                    f"median {float(np.median(ssim)):.3f}.")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _headline(audit: dict[str, Any], how: str) -> Text:
    n, k = audit["n_samples"], audit["n_flagged"]
    lo, hi = audit["fraction_ci"]
    h = audit["heldout_fpr"]
    verdict = (f"Near-copies of training images: {k} of {n} synthetic samples ({_pct(audit['fraction'])}, 95% CI "
               f"{_pct(lo)} to {_pct(hi)}).")
    chance = (f"A generator that copies nothing would have at most {_pct(audit['expected_fpr'])} flagged by chance; "
              f"measured on held-out real images: {h['flagged']} of {h['n']} ({_pct(h['rate'])}).")
    p = float(scipy.stats.binomtest(k, n, audit["expected_fpr"], alternative="greater").pvalue) if n else 1.0
    read = (f"More samples are flagged than chance explains (binomial p = {p:.2g}): the generator reproduces "
            "training images; see the pairs below." if p < 0.05 else
            f"That is within chance (binomial p = {p:.2g}); it is no proof of privacy (a copy of a training image "
            "with a near-twin in the training set is not flagged), and each flagged sample deserves a look below.")
    return Text(f"{verdict} {chance} {read} Every sample of every set was audited, against {audit['n_train']} "
                f"training and {audit['n_holdout']} held-out images ({how}).")


def _definition(audit: dict[str, Any]) -> KeyValues:
    s = audit["search"]
    return KeyValues({
        "near-copy": audit["rule"],
        "threshold": f"{audit['threshold']:.3g} (conformal rank {audit['rank']} of {audit['n_calibration']} held-out "
                     f"scores, target false-positive rate {audit['alpha']:g})",
        "search": f"{s['n_transforms']} transforms (flips {'on' if s['flips'] else 'off'}, shifts up to "
                  f"{s['max_shift']} voxel(s)); {s['candidates'] or 'all'} candidates per sample from a coarse pass",
        "held-out duplicates of training images": f"{audit['n_holdout_duplicates']} (left out of the calibration)",
    }, caption="How a near-copy is defined (docs/evaluation.md, 'Reading a privacy audit')")


def _flagged_table(audit: dict[str, Any]) -> Table:
    rows = [[f["id"], f["train_subject"], f["similarity"], f["transform"], f["score"], f["p_value"]]
            for f in audit["flagged"][:LISTED]]
    more = len(audit["flagged"]) - LISTED
    return Table(["sample", "nearest training subject", "similarity", "transform", "score", "p"], rows,
                 caption="Flagged samples, most copy-like first. Similarity: maximum normalised cross-correlation "
                         "(1 = identical up to the transform); score: (d1/d2)^m; p: conformal p-value against the "
                         "held-out images." + (f" {more} more in metrics.json." if more > 0 else ""))
