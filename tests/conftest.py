"""Shared fixtures: seeded, tiny, CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synth_testdata import make_tiny_prepared

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real data in ../shared/data; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny3d(tmp_path: Path) -> Path:
    return make_tiny_prepared(tmp_path / "prep3d", 3, 16, 8)


@pytest.fixture
def tiny2d(tmp_path: Path) -> Path:
    return make_tiny_prepared(tmp_path / "prep2d", 2, 16, 8)
