"""The chaos soak, short (CI): ``python -m enginehub.loadtests soak --duration 45 --json``, real processes.

The seeded plan puts one fault of every kind into 45 s; the run must hold every invariant (nothing lost or
duplicated, dead letters exactly for the poison sent), list each fault with its time and recovery, and
leave no process of its own behind. The sink file is read here again, independently of the runner.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from enginehub.loadtests.soakplan import KINDS, schedule

pytestmark = pytest.mark.integration

SEED = 1
DURATION = 45


def leftovers(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (the run's workdir)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state not in ("Z", "X"):
            out.append(f"{pid}: {cmd}")
    return out


@pytest.mark.timeout(300)
def test_a_short_soak_holds_every_invariant_through_every_kind_of_fault(tmp_path: Path) -> None:
    workdir = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, "-m", "enginehub.loadtests", "soak", "--duration", str(DURATION)]
        + ["--seed", str(SEED), "--json", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}); stderr:\n{proc.stderr[-4000:]}"
    out = json.loads(lines[-1])
    assert proc.returncode == 0 and out["passed"], (out.get("failures"), proc.stderr[-4000:])
    assert out["failures"] == []

    # every kind happened, in the plan's order, each with its time and a recovery
    plan = schedule(SEED, DURATION)
    assert [f["kind"] for f in out["faults"]] == [f.kind for f in plan]
    assert out["fault_counts"] == {k: 1 for k in sorted(KINDS)}
    for planned, done in zip(plan, out["faults"], strict=True):
        assert done["at_s"] >= planned.at
        assert done["lifted_at_s"] >= done["at_s"]
        assert done["recovery_s"] is not None and 0 <= done["recovery_s"] <= 60
    by_kind = {f["kind"]: f for f in out["faults"]}
    assert by_kind["device_drop"]["dropped"] > 0
    assert by_kind["sink_outage"]["rows_written_during"] == 0
    assert by_kind["sigterm"]["exit_code"] == 0
    assert by_kind["kill9"]["restarted_as"] != by_kind["kill9"]["node"]
    assert by_kind["poison"]["accepted"] >= 1
    assert out["hub_starts"] == 2  # the first start and the restart

    # the invariants, as numbers
    assert out["produced"] > 0.5 * out["offered_events_per_s"] * DURATION
    assert out["lost"] == 0 and out["duplicates"] == 0 and out["unexpected_rows"] == 0
    assert out["produced"] <= out["rows"] <= out["produced"] + out["unconfirmed"]
    assert out["missing_dead_letters"] == 0 and out["unexpected_dead_letters"] == 0
    assert out["dead_letters"] >= out["poison_injected"] >= 1
    assert all(e["exit_code"] == 0 for e in out["node_exits"] if e["signal"] == "SIGTERM")

    # the sink, read again here: no id twice, every dead letter a poison event for the events table
    conn = sqlite3.connect(f"file:{workdir / 'sink.db'}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM enginehub_events")]
        dead = conn.execute("SELECT id, target_table, reason FROM enginehub_dead_letters").fetchall()
    finally:
        conn.close()
    assert len(ids) == len(set(ids)) == out["rows"]
    assert len(dead) == out["dead_letters"]
    for key, table, reason in dead:
        assert "-x-" in key and table == "enginehub_events" and "not UTF-8" in reason
    assert not any("-x-" in i for i in ids)

    assert leftovers(str(workdir)) == []


def test_a_duration_too_short_for_every_kind_is_refused_before_anything_starts() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enginehub.loadtests", "soak", "--duration", "20", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "too short" in proc.stderr and "at least" in proc.stderr


@pytest.mark.timeout(180)
def test_a_failed_invariant_exits_1_and_names_it(tmp_path: Path) -> None:
    # no fault can recover within 1 ms: the run must say so and exit 1 (the rest still holds)
    workdir = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, "-m", "enginehub.loadtests", "soak", "--duration", "14", "--kinds", "poison"]
        + ["--recovery-timeout", "0.001", "--json", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert out["passed"] is False
    assert out["faults"][0]["recovery_s"] is None
    assert out["failures"] == [f"poison at {out['faults'][0]['at_s']} s did not recover"]
    assert out["lost"] == 0 and out["missing_dead_letters"] == 0  # drained afterwards all the same
    assert leftovers(str(workdir)) == []
