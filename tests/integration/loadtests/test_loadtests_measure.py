"""Measurement against a real SQLite sink written through the ingest rules (lost, duplicates, latency)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from enginehub.ingest.rules import RuleSet, route_batch
from enginehub.ingest.sinks.sqlite import SqliteSink
from enginehub.ingest.testing import make_event, seed_line
from enginehub.loadtests.measure import ProducedLog, Thresholds, VisibilityProbe, analyze, count_rows

pytestmark = pytest.mark.integration


def write(sink: SqliteSink, ids: list[str], enqueued: float) -> None:
    records = [
        dataclasses.replace(
            make_event(i, seed_line(1, i + 1), message_id=mid),
            enqueued_time=dt.datetime.fromtimestamp(enqueued, dt.UTC),
        )
        for i, mid in enumerate(ids)
    ]
    routed = route_batch(records, RuleSet())
    assert not routed.dead_letters
    sink.write(routed.rows)


def test_analyze_counts_lost_unexpected_and_latency(tmp_path):
    db = tmp_path / "sink.db"
    sink = SqliteSink(db)
    sink.open(RuleSet().tables())
    produced = ProducedLog()
    produced.record("run1-p0", 0, 10, ok=True)
    produced.record("run1-p0", 10, 5, ok=False)  # unconfirmed: may or may not arrive
    produced.record("run1-p1", 0, 10, ok=True)
    probe = VisibilityProbe(db, interval=0.01)
    assert probe.sample() == 0
    t_enq = time.time() - 0.5  # enqueued half a second before they become visible
    write(sink, [f"run1-p0-{n}" for n in range(12)], t_enq)  # 10 acked + 2 unconfirmed
    write(sink, [f"run1-p1-{n}" for n in range(8)], t_enq)  # 2 lost
    write(sink, ["other-run-1"], t_enq)  # another run's row: ignored
    probe.sample()
    t_seen = probe.samples[-1][0]
    assert count_rows(db, "enginehub_events", "run1-") == 20
    report = analyze(db, "enginehub_events", "run1-", produced, probe.samples, (t_seen - 1, t_seen + 1))
    assert (report.produced, report.unconfirmed, report.rows) == (20, 5, 20)
    assert report.lost == 2 and report.lost_examples == ["run1-p1-8", "run1-p1-9"]
    assert report.duplicates == 0 and report.unexpected_rows == 0
    assert 450 < report.p50_latency_ms < 2000
    assert report.events_per_s_sustained == 10.0  # 20 rows visible inside a 2 s window
    failures = Thresholds(min_rate=100, max_p99_ms=100).failures(report)
    assert len(failures) == 3 and "lost 2" in failures[1]
    assert Thresholds(max_lost=2, max_duplicates=0).failures(report) == []


def test_produced_log_roundtrip():
    log = ProducedLog()
    log.record("a", 0, 3, ok=True)
    log.record("a", 3, 2, ok=False)
    again = ProducedLog.from_json(log.to_json())
    assert list(again.ids()) == ["a-0", "a-1", "a-2"] and list(again.ids("unconfirmed")) == ["a-3", "a-4"]
    assert again.produced == 3


def test_analyze_counts_a_second_row_for_one_message_id_as_duplicate(tmp_path):
    """A sink keyed differently (or a broken key) would store a redelivery twice: that must show."""
    import sqlite3

    db = tmp_path / "sink.db"
    sink = SqliteSink(db)
    sink.open(RuleSet().tables())
    produced = ProducedLog()
    produced.record("run2-p0", 0, 3, ok=True)
    write(sink, [f"run2-p0-{n}" for n in range(3)], time.time())
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO enginehub_events (id, partition_context, event_metadata, ingested_at, payload) "
        "SELECT id || '#again', partition_context, event_metadata, ingested_at, payload "
        "FROM enginehub_events WHERE id = 'mid:run2-p0-1'"
    )
    conn.commit()
    conn.close()
    probe = VisibilityProbe(db)
    probe.sample()
    report = analyze(db, "enginehub_events", "run2-", produced, probe.samples, None)
    assert (report.rows, report.duplicates, report.lost) == (4, 1, 0)
    assert Thresholds().failures(report) == ["duplicates 1 > 0"]
