"""The conditioning check: a real-trained classifier labels synthetic samples; per-class fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth_testdata import make_tiny_prepared

from synthmed.config import load_config
from synthmed.generate.label_check import check
from synthmed.train.loop import train

TINY = ["model.latent_dim=16", "model.base_channels=4", "model.max_channels=8", "train.iterations=1",
        "train.n_preview=2"]


@pytest.mark.filterwarnings("ignore:FID on")
def test_label_check_on_tiny_runs(tmp_path: Path) -> None:
    prep = make_tiny_prepared(tmp_path / "prep", 2, 32, 16)
    cond = train(load_config("sngan", [*TINY, "model.conditioning=projection"]), prep, tmp_path / "c", progress=False)
    per = [train(load_config("sngan", [*TINY, "model.conditioning=per-class", f"train.label={c}"]), prep,
                 tmp_path / c, progress=False) for c in ("a", "b")]
    res = check(prep, {"projection": str(cond), "per-class": f"{per[0]},{per[1]}"}, tmp_path / "out", n=4,
                epochs=1, extractor_iterations=2)
    assert set(res["sources"]) == {"projection", "per-class"}
    for rec in res["sources"].values():
        assert set(rec["per_class"]) == {"a", "b"}
        for p in rec["per_class"].values():
            assert sum(p["predicted_counts"].values()) == 4 and 0 <= p["agreement"] <= 1 and p["fid"] >= 0
        assert rec["agreement"] == sum(p["agreement"] for p in rec["per_class"].values()) / 2
    assert 0 <= res["classifier"]["test_accuracy"] <= 1
    assert json.loads((tmp_path / "out" / "label_check.json").read_text(encoding="utf-8"))["n_per_class"] == 4
    assert "| projection |" in (tmp_path / "out" / "label_check.md").read_text(encoding="utf-8")
