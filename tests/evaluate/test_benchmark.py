"""The evaluation benchmark (docs/evaluation.md's table) runs end to end on a tiny MedMNIST-style file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from synthmed.evaluate.benchmark import main


def test_benchmark_privacy_cases_on_a_tiny_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        x = gaussian_filter(rng.normal(size=(n, 10, 10, 10)), (0, 1.5, 1.5, 1.5))
        return np.clip(127.5 + 127.5 * np.tanh(x / x.std()), 0, 255).astype(np.uint8)

    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=images(60), val_images=images(30), test_images=images(100))
    assert main(["--data", str(npz), "--out", str(tmp_path / "b"), "--no-rankings"]) == 0
    res = json.loads((tmp_path / "b" / "benchmark.json").read_text(encoding="utf-8"))
    rows = {r["case"].split(",")[1].strip() if r["case"].startswith("planted") else r["case"]: r
            for r in res["privacy"]["rows"]}
    for kind in ("exact", "noisy (sigma 0.1)", "flipped left-right", "shifted 1 voxel"):
        assert rows[kind]["after"] == rows[kind]["after_right_source"] == 10, rows[kind]
        assert rows[kind]["first_set_only"] == 0
    assert rows["flipped left-right"]["transforms"] == ["flip axis 2"]
    assert rows["held-out real (test split)"]["after"] <= 5
    assert "| planted copies, exact, in the 2nd set | 10 | 0 |" in (tmp_path / "b" / "benchmark.md").read_text()
