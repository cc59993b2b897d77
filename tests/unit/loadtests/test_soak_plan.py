"""The chaos soak's seeded fault plan (pure): every kind at least once, in order, inside the run, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.loadtests.soakplan import (
    HOLDS,
    KINDS,
    MIN_SLOT_S,
    NODE_KINDS,
    POISON_COUNT,
    TAIL_S,
    WARMUP_S,
    min_duration,
    schedule,
)


def test_the_same_seed_gives_the_same_plan_and_another_seed_another():
    assert schedule(7, 600) == schedule(7, 600)
    assert schedule(7, 600) != schedule(8, 600)


def test_a_ci_length_run_has_every_kind_exactly_once():
    plan = schedule(1, 45)
    assert sorted(f.kind for f in plan) == sorted(KINDS)


def test_a_long_run_has_about_one_fault_per_mean_gap_and_still_every_kind():
    plan = schedule(3, 600, mean_gap=20)
    assert len(plan) == int((600 - WARMUP_S - TAIL_S) // 20)
    assert set(f.kind for f in plan) == set(KINDS)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    duration=st.floats(min_duration(), 3600),
    nodes=st.integers(2, 5),
    mean_gap=st.floats(1, 120),
)
def test_any_plan_covers_every_kind_in_order_inside_the_run_with_bounded_parameters(
    seed: int, duration: float, nodes: int, mean_gap: float
) -> None:
    plan = schedule(seed, duration, nodes=nodes, mean_gap=mean_gap)
    assert set(f.kind for f in plan) == set(KINDS)
    times = [f.at for f in plan]
    assert times == sorted(times)
    assert all(b - a >= MIN_SLOT_S / 2 - 0.02 for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= WARMUP_S and times[-1] <= duration - TAIL_S
    for f in plan:
        low, high = HOLDS[f.kind]
        assert low <= f.hold <= high
        if f.kind in NODE_KINDS:
            assert f.target is not None and 0 <= f.target < nodes
        else:
            assert f.target is None
        if f.kind == "poison":
            assert POISON_COUNT[0] <= f.count <= POISON_COUNT[1]
        else:
            assert f.count == 0


def test_a_subset_of_kinds_is_planned_alone():
    plan = schedule(5, 60, kinds=("device_drop", "poison"))
    assert set(f.kind for f in plan) == {"device_drop", "poison"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration": min_duration() - 0.1}, "too short"),
        ({"duration": 600, "kinds": ("kill9", "nope")}, "unknown fault kinds"),
        ({"duration": 600, "kinds": ()}, "at least one"),
        ({"duration": 600, "kinds": ("poison", "poison")}, "repeated"),
        ({"duration": 600, "nodes": 1}, "at least 2 ingest nodes"),
        ({"duration": 600, "mean_gap": 0}, "mean_gap"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(1, **kwargs)


def test_one_node_is_enough_without_node_faults():
    assert schedule(1, 60, nodes=1, kinds=("poison",))
