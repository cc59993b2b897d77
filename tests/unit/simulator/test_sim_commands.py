"""The engines' command handling (pure): direct methods and desired properties over a real Fleet and Pacer."""

from __future__ import annotations

import logging

import pytest

from enginehub.datasets.schema import Row
from enginehub.simulator.commands import Commander
from enginehub.simulator.fleet import Fleet, MemorySource
from enginehub.simulator.pacing import Pacer


def _rows(units: int, cycles: int) -> list[Row]:
    zeros = (0.0,) * 21
    return [Row(u, c, (0.0, 0.0, 100.0), zeros) for u in range(1, units + 1) for c in range(1, cycles + 1)]


@pytest.fixture
def setup() -> tuple[Fleet, Pacer, Commander]:
    fleet = Fleet(MemorySource("t", _rows(5, 50)), 3)
    pacer = Pacer(3, 3.0, start=0.0, jitter=0.0)
    clock = {"now": 0.0}
    cmd = Commander(fleet, lambda: pacer, ["e1", "e2", "e3"], lambda: clock["now"])
    return fleet, pacer, cmd


def test_maintenance_gives_a_fresh_engine_whose_cycles_restart(setup, caplog) -> None:
    fleet, _, cmd = setup
    for _ in range(4):
        fleet.next_row(1)
        fleet.next_row(0)
    with caplog.at_level(logging.INFO, logger="enginehub.simulator.commands"):
        status, body = cmd.method(1, "maintenance", None)
    assert status == 200
    assert body["previousEngine"] == 2 and body["previousCycles"] == 4 and body["engine"] == 5
    assert "e2: told to do maintenance: engine 2 (after 4 cycles) replaced by fresh engine 5" in caplog.text
    row = fleet.next_row(1)
    assert row is not None and (row.unit, row.cycle) == (5, 1)
    other = fleet.next_row(0)
    assert other is not None and (other.unit, other.cycle) == (1, 5)  # the others continue


def test_set_rate_changes_only_that_device_schedule(setup) -> None:
    _, pacer, cmd = setup
    assert pacer.device_rate(0) == pytest.approx(1.0)
    status, body = cmd.method(0, "setRate", {"rate": 4})
    assert status == 200 and body["rate"] == 4 and body["lastCommand"] == "setRate"
    due = [d for t, d in pacer.due_until(10.0)]
    assert due.count(0) == 40 and due.count(1) == 10 and due.count(2) == 10
    assert cmd.method(0, "setRate", {"rate": 0})[0] == 400
    assert cmd.method(0, "setRate", {"rate": "fast"})[0] == 400
    assert cmd.method(0, "setRate", {"rate": True})[0] == 400
    assert cmd.method(0, "setRate", {"rate": float("nan")})[0] == 400
    assert pacer.device_rate(0) == pytest.approx(4.0)  # refused changes changed nothing


def test_pause_resume_and_unknown(setup) -> None:
    _, _, cmd = setup
    assert cmd.method(2, "pause", None) == (200, cmd.state(2)) and cmd.state(2)["state"] == "paused"
    assert 2 in cmd.paused
    cmd.method(2, "resume", {})
    assert 2 not in cmd.paused and cmd.state(2)["state"] == "running"
    status, body = cmd.method(2, "explode", None)
    assert status == 404 and "setRate" in body["error"]


def test_desired_interval_and_paused(setup) -> None:
    _, pacer, cmd = setup
    reported = cmd.desired(1, {"sendIntervalS": 0.5, "colour": "red", "$version": 2})
    assert reported["sendIntervalS"] == 0.5 and pacer.device_rate(1) == pytest.approx(2.0)
    cmd.desired(1, {"paused": True})
    assert 1 in cmd.paused
    cmd.desired(1, {"paused": False, "sendIntervalS": -1})  # bad interval refused, the rest applied
    assert 1 not in cmd.paused and pacer.device_rate(1) == pytest.approx(2.0)


def test_before_the_run_starts_rate_changes_are_refused() -> None:
    fleet = Fleet(MemorySource("t", _rows(2, 5)), 2)
    cmd = Commander(fleet, lambda: None, ["a", "b"], lambda: 0.0)
    assert cmd.method(0, "setRate", {"rate": 2})[0] == 400
    assert cmd.state(0)["rate"] is None
