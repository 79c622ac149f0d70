"""FID during training: log it, keep the best checkpoint, stop when it stops improving.

Paper 004, S.3: after a minimum number of steps, FID between real and synthetic images is computed
at fixed intervals and training stops when it has not improved for two consecutive evaluations.
Here the real images are the run's training images, the synthetic ones come from fixed seeds (so
successive values are comparable), and features come from a registered extractor: by default the
in-domain autoencoder, trained once on the run's training images at the start of the run and saved
in the run folder (so nothing needs external weights).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.config import TrainConfig
from synthmed.features.base import FeatureExtractor, build_extractor, extract_features
from synthmed.metrics.feature import fid
from synthmed.models.base import ModelFamily

FID_SEED = 40_000


@dataclass
class FIDState:
    """What must survive a resume: the best value so far and the evaluations since it."""

    best: float = float("inf")
    best_step: int = 0
    since_best: int = 0
    history: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "since_best": self.since_best,
                "history": self.history}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FIDState:
        return cls(**d) if d else cls()


def build_fid_extractor(tc: TrainConfig, images: np.ndarray, run_root: Path, device: torch.device,
                        progress: bool) -> FeatureExtractor:
    """The configured extractor; ``indomain-ae`` without weights is trained on ``images`` first."""
    weights = tc.fid_weights or None
    if tc.fid_extractor == "indomain-ae" and weights is None:
        from synthmed.features.indomain import capped_size, train_indomain_extractor

        path = run_root / "fid_extractor.pt"
        if not path.is_file():  # kept across resumes so FID values stay comparable
            train_indomain_extractor(images, path, size=capped_size(images.shape[2:]),
                                     iterations=tc.fid_extractor_iterations, seed=tc.seed, device=device,
                                     progress=progress)
        weights = str(path)
    return build_extractor(tc.fid_extractor, weights=weights).to(device).eval()


class FIDMonitor:
    """Computes FID of the current generator against fixed real features.

    Args:
        tc: training config (``fid_*`` keys).
        family, params, generator_nets: to generate samples.
        real: (N, 1, *spatial) training images in [-1, 1].
        extractor: feature extractor (its ``describe()`` is logged with every value).
        csv_path: ``fid.csv`` in the run folder.
    """

    def __init__(self, tc: TrainConfig, family: ModelFamily, params: Any, nets: dict[str, torch.nn.Module],
                 real: np.ndarray, extractor: FeatureExtractor, csv_path: Path, device: torch.device) -> None:
        self.tc, self.family, self.params, self.nets = tc, family, params, nets
        self.extractor, self.csv_path, self.device = extractor, csv_path, device
        self.real_features = extract_features(extractor, real, device=device, progress=False)
        self.n_fake = tc.fid_samples or len(real)
        self.state = FIDState()

    def _fake_features(self) -> np.ndarray:
        feats = []
        for start in range(0, self.n_fake, 16):
            n = min(16, self.n_fake - start)
            g = torch.Generator().manual_seed(FID_SEED + start)
            z = self.family.sample_latent(self.params, n, g, self.device)
            x = self.family.generate_images(self.nets, z)
            feats.append(extract_features(self.extractor, x, device=self.device, progress=False))
        return np.concatenate(feats)

    def evaluate(self, step: int) -> tuple[float, bool]:
        """FID now; returns (value, improved).  Updates the patience counter."""
        import warnings

        with warnings.catch_warnings():  # FID on fewer samples than dims is expected here; recorded below
            warnings.simplefilter("ignore")
            value = float(fid(self.real_features, self._fake_features()))
        improved = value < self.state.best
        if improved:
            self.state.best, self.state.best_step, self.state.since_best = value, step, 0
        else:
            self.state.since_best += 1
        self.state.history.append([step, value])
        self._append_csv(step, value)
        return value, improved

    def should_stop(self, step: int) -> bool:
        """Paper 004 S.3: no improvement for ``fid_patience`` evaluations after the minimum steps."""
        tc = self.tc
        return tc.fid_patience > 0 and step >= tc.fid_min_iterations and self.state.since_best >= tc.fid_patience

    def _append_csv(self, step: int, value: float) -> None:
        new = not self.csv_path.is_file()
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "fid", "n_real", "n_fake", "feature_dim", "extractor", "weights_sha256"])
            d = self.extractor.describe()
            w.writerow([step, f"{value:.6g}", len(self.real_features), self.n_fake, d["feature_dim"], d["name"],
                        d["weights_sha256"] or ""])

    def truncate_csv(self, step: int) -> None:
        """On resume: drop rows written after the checkpoint being resumed."""
        if not self.csv_path.is_file():
            return
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        keep = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(keep)
