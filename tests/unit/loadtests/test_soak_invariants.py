"""The chaos soak's verdict on a result (pure): each invariant can fail on its own."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from enginehub.loadtests.soak import AckLog, check, summarize_faults
from enginehub.loadtests.soakplan import KINDS


def passing() -> dict[str, Any]:
    faults = [{"kind": k, "at_s": 5.0 + i, "recovery_s": 1.0 + i} for i, k in enumerate(KINDS)]
    for f in faults:
        if f["kind"] == "sink_outage":
            f["rows_written_during"] = 0
        if f["kind"] in ("kill9", "sigterm"):
            f["node"] = "n0-1"
    return {
        "produced": 1000,
        "lost": 0,
        "duplicates": 0,
        "unexpected_rows": 0,
        "missing_dead_letters": 0,
        "unexpected_dead_letters": 0,
        "duplicate_dead_letters": 0,
        "drain_s": 0.5,
        "faults": faults,
        "node_exits": [
            {"node": "n0-1", "signal": "SIGKILL", "exit_code": -9},
            {"node": "n1-1", "signal": "SIGTERM", "exit_code": 0},
        ],
    }


def test_a_clean_result_passes():
    assert check(passing(), set(KINDS)) == []


@pytest.mark.parametrize(
    "key",
    [
        "lost",
        "duplicates",
        "unexpected_rows",
        "missing_dead_letters",
        "unexpected_dead_letters",
        "duplicate_dead_letters",
    ],
)
def test_any_count_that_must_be_zero_fails_the_run(key: str) -> None:
    result = passing()
    result[key] = 3
    assert check(result, set(KINDS)) == [f"{key} 3 (must be 0)"]


def test_nothing_produced_or_an_unfinished_drain_fails():
    result = passing()
    result["produced"] = 0
    result["drain_s"] = None
    failures = check(result, set(KINDS))
    assert "nothing was produced" in failures
    assert any("drain timeout" in f for f in failures)


def test_a_fault_that_did_not_recover_fails_naming_it():
    result = passing()
    result["faults"][2]["recovery_s"] = None
    assert check(result, set(KINDS)) == [f"{KINDS[2]} at 7.0 s did not recover"]


def test_rows_written_while_the_sink_was_away_mean_the_outage_did_not_happen():
    result = passing()
    outage = next(f for f in result["faults"] if f["kind"] == "sink_outage")
    outage["rows_written_during"] = 40
    assert check(result, set(KINDS)) == [f"sink_outage at {outage['at_s']} s: 40 rows written during it"]


def test_a_sigterm_that_does_not_end_in_exit_0_fails_but_a_sigkill_does_not():
    result = passing()
    result["node_exits"].append({"node": "n0-2", "signal": "SIGTERM", "exit_code": 1})
    assert check(result, set(KINDS)) == ["n0-2 exited 1 after SIGTERM (0 expected)"]


def test_a_planned_kind_that_never_happened_fails():
    result = passing()
    result["faults"] = [f for f in result["faults"] if f["kind"] != "poison"]
    assert check(result, set(KINDS)) == ["fault kinds that never happened: ['poison']"]


def test_the_summary_counts_kinds_and_keeps_the_worst_recovery_or_none():
    faults = [
        {"kind": "kill9", "recovery_s": 2.0},
        {"kind": "kill9", "recovery_s": 5.5},
        {"kind": "poison", "recovery_s": 0.3},
        {"kind": "poison", "recovery_s": None},
        {"kind": "poison", "recovery_s": 0.1},
    ]
    counts, worst = summarize_faults(copy.deepcopy(faults))
    assert counts == {"kill9": 2, "poison": 3}
    assert worst == {"kill9": 5.5, "poison": None}


def test_the_first_batch_accepted_after_a_moment():
    acks = AckLog([(1.0, "a"), (2.0, "b"), (3.0, "c")])
    assert acks.first_after(1.5) == "b"
    assert acks.first_after(2.0) == "b"
    assert acks.first_after(3.5) is None


def test_a_fault_that_could_not_be_applied_fails_with_its_error():
    result = passing()
    result["faults"][0] |= {"error": "RuntimeError: the hub did not report ready", "recovery_s": None}
    assert check(result, set(KINDS)) == [
        f"{KINDS[0]} at 5.0 s could not be applied: RuntimeError: the hub did not report ready"
    ]
