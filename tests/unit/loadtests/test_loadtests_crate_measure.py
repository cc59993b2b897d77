"""The throughput scenario's CrateDB side, without a server: the runner's ``--sink-url`` parsing, the
analysis of rows from either sink (``summarize``), stored times, and ``CrateRows``' paging (its queries
answered by a stand-in for ``_query``; the real server is ``tests/integration/loadtests/
test_loadtests_crate.py``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from enginehub.loadtests.measure import (
    CrateRows,
    ProducedLog,
    SeenRow,
    _epoch,
    crate_sink_url,
    is_crate_url,
    redact,
    summarize,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:4200", ("crate://127.0.0.1:4200?schema=fresh", "fresh", True)),
        ("http://127.0.0.1", ("crate://127.0.0.1:4200?schema=fresh", "fresh", True)),
        ("https://db:4201", ("crate+https://db:4201?schema=fresh", "fresh", True)),
        ("crate://db:4200?schema=s1", ("crate://db:4200?schema=s1", "s1", False)),
        ("crate+https://db?schema=s1", ("crate+https://db:4200?schema=s1", "s1", False)),
        (
            "crate://u:pw@db:4200?bulk_size=2000",
            ("crate://u:pw@db:4200?bulk_size=2000&schema=fresh", "fresh", True),
        ),
        ("crate://db:4200?schema=&bulk_size=5", ("crate://db:4200?bulk_size=5&schema=fresh", "fresh", True)),
    ],
)
def test_sink_url_becomes_an_ingest_crate_url_with_a_schema(given: str, expected: tuple) -> None:
    assert crate_sink_url(given, "fresh") == expected


@pytest.mark.parametrize("bad", ["sqlite:///x.db", "postgres://db:5432", "crate://", "http://"])
def test_sink_url_other_schemes_and_no_host_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--sink-url"):
        crate_sink_url(bad, "fresh")


def test_is_crate_url_and_redact() -> None:
    assert is_crate_url("crate://db") and is_crate_url("crate+https://db")
    assert not is_crate_url("sqlite:///x.db") and not is_crate_url("http://db")
    assert redact("crate://u:secret@db:4200?schema=s") == "crate://u:***@db:4200?schema=s"
    assert redact("crate://db:4200?schema=s") == "crate://db:4200?schema=s"


def test_stored_times_iso_text_and_epoch_milliseconds_are_the_same_instant() -> None:
    when = dt.datetime(2026, 12, 3, 14, 0, 0, 250000, tzinfo=dt.UTC)
    assert _epoch(when.isoformat()) == pytest.approx(when.timestamp())
    assert _epoch(int(when.timestamp() * 1000)) == pytest.approx(when.timestamp())
    assert _epoch(None) is None and _epoch("") is None


def _produced(acked: list[tuple[str, int, int]], unconfirmed: list[tuple[str, int, int]] = ()) -> ProducedLog:
    return ProducedLog(acked=list(acked), unconfirmed=list(unconfirmed))


def test_summarize_counts_lost_duplicates_unexpected_rate_and_latency() -> None:
    produced = _produced([("r-p0", 0, 3)], [("r-p1", 0, 0)])  # r-p0-0..3 acked, r-p1-0 unconfirmed
    rows = [
        SeenRow("r-p0-0", 100.0, 100.5),  # before the window
        SeenRow("r-p0-1", 100.0, 101.0),
        SeenRow("r-p0-1", 100.0, 101.2),  # a duplicate: counted once, never as visible twice
        SeenRow("r-p0-2", 101.0, 103.0),
        SeenRow("r-p1-0", 101.0, 102.0),  # unconfirmed but stored: neither lost nor unexpected
        SeenRow("r-x-9", None, 102.5),  # never produced
    ]
    report = summarize(rows, produced, (101.0, 103.0))
    assert (report.produced, report.unconfirmed, report.rows) == (4, 1, 6)
    assert (report.lost, report.lost_examples) == (1, ["r-p0-3"])
    assert (report.duplicates, report.unexpected_rows) == (1, 1)
    # visible in [101, 103]: r-p0-1 (101.0), r-p0-2 (103.0), r-p1-0, r-x-9 -> 4 over 2 s
    assert (report.events_per_s_sustained, report.steady_window_s) == (2.0, 2.0)
    # latencies 500, 1000, 2000, 1000 ms (r-x-9 has no enqueued time)
    assert report.p50_latency_ms == 1000.0 and report.max_latency_ms == 2000.0


def test_summarize_rows_without_a_visible_time_are_neither_in_the_window_nor_in_the_latencies() -> None:
    report = summarize([SeenRow("r-p0-0", 1.0, None)], _produced([("r-p0", 0, 0)]), (0.0, 10.0))
    assert (report.lost, report.events_per_s_sustained, report.p99_latency_ms) == (0, 0.0, None)


class _Answers:
    """Stands in for ``CrateRows._query``: REFRESH answers [], the SELECT pages come from ``ids``."""

    def __init__(self, ids: list[str], missing: bool = False) -> None:
        self.ids = sorted(ids)
        self.missing = missing
        self.calls: list[tuple[str, list[Any] | None]] = []

    def __call__(self, sql: str, args: list[Any] | None = None) -> list[list[Any]] | None:
        self.calls.append((sql, args))
        if self.missing:
            return None
        if sql.startswith("REFRESH"):
            return []
        assert args is not None
        lo, hi = args[0], args[1]
        if sql.startswith("SELECT count(*)"):
            return [[sum(1 for i in self.ids if lo <= i < hi)]]
        after = args[2]
        limit = int(sql.rsplit("LIMIT", 1)[1])
        page = [i for i in self.ids if lo <= i < hi and i > after][:limit]
        return [[i, i.removeprefix("mid:"), 1_000_000, 1_000_500] for i in page]


def test_crate_rows_reads_every_row_of_the_run_in_pages_after_a_refresh() -> None:
    reader = CrateRows("crate://db:4200?schema=s1", page=3)
    ids = [f"mid:r-p0-{n}" for n in range(7)] + ["mid:other-p0-1", "seq:0:5"]
    answers = _Answers(ids)
    reader._query = answers  # type: ignore[method-assign]
    rows = reader.rows("r-")
    assert sorted(r.message_id for r in rows) == sorted(f"r-p0-{n}" for n in range(7))
    assert rows[0] == SeenRow(rows[0].message_id, 1000.0, 1000.5)
    assert answers.calls[0][0] == 'REFRESH TABLE "s1"."enginehub_events"'
    selects = [c for c in answers.calls if c[0].startswith("SELECT")]
    assert len(selects) == 3  # 3 + 3 + 1
    assert reader.count("r-") == 7


def test_crate_rows_of_a_table_not_created_yet_are_none() -> None:
    reader = CrateRows("crate://db:4200")
    reader._query = _Answers([], missing=True)  # type: ignore[method-assign]
    assert reader.schema == "doc"
    assert reader.count("r-") == 0 and reader.rows("r-") == []
