"""plan_resolution / expand_size / stage_channels: one size parameter -> stages."""

from __future__ import annotations

import pytest

from synthmed.nn.resolution import expand_size, plan_resolution, stage_channels


@pytest.mark.parametrize(
    ("size", "dims", "start", "stages"),
    [
        (64, 3, (4, 4, 4), 4),
        (32, 3, (4, 4, 4), 3),
        (128, 3, (4, 4, 4), 5),
        (28, 2, (7, 7), 2),
        (64, 2, (4, 4), 4),
        (224, 2, (7, 7), 5),
        (8, 3, (4, 4, 4), 1),
        ((64, 64, 32), 3, (8, 8, 4), 3),
        ((28, 56), 2, (7, 14), 2),
        (16, 1, (4,), 2),
    ],
)
def test_plan_resolution(size, dims, start, stages) -> None:
    assert plan_resolution(size, dims) == (start, stages)


def test_plan_resolution_min_start() -> None:
    assert plan_resolution(64, 3, min_start=8) == ((8, 8, 8), 3)
    assert plan_resolution(64, 2, min_start=1) == ((1, 1), 6)


@pytest.mark.parametrize("size", [4, 6, 7, 27, (64, 7)])
def test_plan_resolution_rejects_unhalvable(size) -> None:
    with pytest.raises(ValueError, match="image size"):
        plan_resolution(size, 2)


def test_plan_resolution_message_names_size() -> None:
    with pytest.raises(ValueError, match=r"\(6, 6, 6\)"):
        plan_resolution(6, 3)


@pytest.mark.parametrize(("size", "dims"), [((64, 64), 3), (0, 2), (-8, 2), (8.0, 2), (8, 0)])
def test_expand_size_rejects(size, dims) -> None:
    with pytest.raises(ValueError):
        expand_size(size, dims)


def test_expand_size() -> None:
    assert expand_size(64, 3) == (64, 64, 64)
    assert expand_size([28, 56], 2) == (28, 56)


def test_stage_channels_match_paper() -> None:
    assert stage_channels(4, 32, 256) == [256, 128, 64, 32]  # paper 000 Fig. S2, 64^3
    assert stage_channels(5, 32, 256) == [256, 256, 128, 64, 32]
    assert stage_channels(2, 4, 256) == [8, 4]
