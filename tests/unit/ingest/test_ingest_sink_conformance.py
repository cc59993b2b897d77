"""The one conformance suite every sink passes (memory, SQLite, and CrateDB when a real server is there)."""

from __future__ import annotations

from typing import Any

from enginehub.ingest.model import DEFAULT_TABLE, DeadLetter
from enginehub.ingest.rules import Rule, RuleSet, load_rules, route_batch
from enginehub.ingest.sinks.base import Sink, TableSpec
from enginehub.ingest.testing import make_event, message_id, seed_line, seed_values

RULES = load_rules(None)


def _rows(n: int, start: int = 0, table: str = DEFAULT_TABLE, with_mid: bool = True):
    events = [
        make_event(i, seed_line(7, i + 1), message_id=message_id(7, i + 1) if with_mid else None)
        for i in range(start, start + n)
    ]
    routed = route_batch(events, RULES)
    assert not routed.dead_letters
    if table != DEFAULT_TABLE:
        from dataclasses import replace

        return [replace(r, table=table) for r in routed.rows]
    return routed.rows


def test_implements_the_protocol(sut: Any) -> None:
    assert isinstance(sut.sink, Sink)


def test_open_is_idempotent_and_empty_write_is_a_no_op(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    sut.sink.open([TableSpec()])
    result = sut.sink.write([], [])
    assert (result.inserted, result.duplicates, result.failures, result.dead_letters) == (0, 0, [], 0)
    assert sut.rows(DEFAULT_TABLE) == {}


def test_rows_are_stored_with_typed_columns(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    rows = _rows(20)
    result = sut.sink.write(rows)
    assert (result.inserted, result.duplicates, result.failures) == (20, 0, [])
    stored = sut.rows(DEFAULT_TABLE)
    assert set(stored) == {f"mid:{message_id(7, c)}" for c in range(1, 21)}
    one = stored[f"mid:{message_id(7, 5)}"]
    assert one["payload"] == seed_line(7, 5)
    assert (one["unit #"], one["cycle #"], one["seq"]) == (7, 5, 4)
    assert one["sensor 21"] == seed_values(7, 5)[-1]


def test_seed_lines_with_surrounding_tabs_and_line_breaks_get_their_typed_columns(sut: Any) -> None:
    # The seed decoder accepts leading/trailing tabs, CR and LF; every sink must then store the same typed
    # values (CrateDB computes them from the payload in generated columns: its trim() strips spaces only).
    sut.sink.open([TableSpec()])
    wrapped = {
        1: "\t" + seed_line(7, 1),
        2: "\n" + seed_line(7, 2) + "\r\n",
        3: "\r\n\t " + seed_line(7, 3).replace(" ", "\t") + "\t",
    }
    events = [make_event(c, body, message_id=message_id(7, c)) for c, body in wrapped.items()]
    routed = route_batch(events, RULES)
    assert not routed.dead_letters
    result = sut.sink.write(routed.rows)
    assert (result.inserted, result.failures) == (3, [])
    stored = sut.rows(DEFAULT_TABLE)
    for c, body in wrapped.items():
        one = stored[f"mid:{message_id(7, c)}"]
        assert one["payload"] == body
        assert (one["unit #"], one["cycle #"], one["sensor 21"]) == (7, c, seed_values(7, c)[-1])


def test_redelivery_is_idempotent_by_key(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    rows = _rows(10)
    assert sut.sink.write(rows).inserted == 10
    again = sut.sink.write(rows[3:] + _rows(2, start=10))
    assert (again.inserted, again.duplicates) == (2, 7)
    assert len(sut.rows(DEFAULT_TABLE)) == 12


def test_duplicates_within_one_batch_give_one_row(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    rows = _rows(3)
    result = sut.sink.write(rows + rows)
    assert (result.inserted, result.duplicates) == (3, 3)
    assert len(sut.rows(DEFAULT_TABLE)) == 3


def test_key_without_message_id_is_partition_and_sequence(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    sut.sink.write(_rows(3, with_mid=False))
    assert set(sut.rows(DEFAULT_TABLE)) == {"seq:0:0", "seq:0:1", "seq:0:2"}


def test_unknown_table_is_created_on_first_write(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    result = sut.sink.write(_rows(2, table="other_events") + _rows(1))
    assert result.inserted == 3
    assert len(sut.rows("other_events")) == 2
    assert len(sut.rows(DEFAULT_TABLE)) == 1


def test_dead_letters_keep_raw_bytes_partition_sequence_and_reason(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    raw = b"\xff\xfe not a line"
    dl = DeadLetter.of(make_event(41, raw, partition_id="3"), "payload is not UTF-8", DEFAULT_TABLE)
    unmatched = DeadLetter.of(make_event(42, "x", partition_id="3", message_id="m-42"), "no rule matched")
    result = sut.sink.write(_rows(1), [dl, unmatched])
    assert (result.inserted, result.dead_letters) == (1, 2)
    sut.sink.write([], [dl])  # redelivered: still one
    stored = sut.dead_letters()
    assert set(stored) == {(DEFAULT_TABLE, "seq:3:41"), ("", "mid:m-42")}
    got = stored[(DEFAULT_TABLE, "seq:3:41")]
    assert got == {"raw": raw, "reason": "payload is not UTF-8", "partition": "3", "seq": 41}


def test_large_raw_payload_and_large_dead_letter_are_stored(sut: Any) -> None:
    # Event Hubs bodies go up to 1 MB: a raw-table row and a dead letter far over 32 KiB (CrateDB's limit on
    # a column-store value) are stored whole, not refused row by row or retried forever.
    raw_rules = RuleSet(rules=(Rule(table="raw_events", format="raw", name="raw"),))
    sut.sink.open(raw_rules.tables())
    body = "r" * 100_000
    routed = route_batch([make_event(5, body, message_id="big-row")], raw_rules)
    assert not routed.dead_letters
    raw = bytes(range(256)) * 400  # 102 400 bytes, not UTF-8
    dl = DeadLetter.of(
        make_event(6, raw, partition_id="2"), "payload is not UTF-8 " + "x" * 40_000, DEFAULT_TABLE
    )
    result = sut.sink.write(routed.rows, [dl])
    assert (result.inserted, result.failures, result.dead_letters) == (1, [], 1)
    assert sut.rows("raw_events")["mid:big-row"]["payload"] == body
    got = sut.dead_letters()[(DEFAULT_TABLE, "seq:2:6")]
    assert got == {"raw": raw, "reason": dl.reason, "partition": "2", "seq": 6}


def test_close_twice_is_harmless(sut: Any) -> None:
    sut.sink.open([TableSpec()])
    sut.sink.close()
    sut.sink.close()
