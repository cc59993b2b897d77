"""SQLite sink specifics: outage reporting, several writer processes on one file, URL parsing."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from enginehub.ingest.model import DEFAULT_TABLE, SinkConfigError, SinkUnavailableError
from enginehub.ingest.rules import load_rules, route_batch
from enginehub.ingest.sinks.base import TableSpec, open_sink
from enginehub.ingest.sinks.sqlite import SqliteSink
from enginehub.ingest.testing import make_event, message_id, seed_line


def _rows(start: int, n: int):
    events = [
        make_event(i, seed_line(1, i + 1), message_id=message_id(1, i + 1)) for i in range(start, start + n)
    ]
    return route_batch(events, load_rules(None)).rows


def test_wal_mode_and_tables(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "a.db")
    sink.open([TableSpec()])
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {DEFAULT_TABLE, "enginehub_dead_letters"} <= names


def test_locked_database_is_an_outage_and_nothing_is_half_written(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sink = SqliteSink(path, busy_timeout=0.2)
    sink.open([TableSpec()])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SinkUnavailableError, match="locked"):
            sink.write(_rows(0, 5))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sink.write(_rows(0, 5)).inserted == 5  # recovers once the lock is gone


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="does not exist"):
        SqliteSink(tmp_path / "nope" / "a.db").open([TableSpec()])


def _writer(path: str, start: int, n: int, batch: int) -> None:
    sink = SqliteSink(path)
    sink.open([TableSpec()])
    for s in range(start, start + n, batch):
        sink.write(_rows(s, min(batch, start + n - s)))


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    # overlapping key ranges: 0..299 and 200..499 -> 500 distinct rows
    procs = [
        ctx.Process(target=_writer, args=(path, 0, 300, 25)),
        ctx.Process(target=_writer, args=(path, 200, 300, 25)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {DEFAULT_TABLE}").fetchone() == (
            500,
            500,
        )


def _open_at_once(path: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    barrier.wait(30)
    try:
        SqliteSink(path).open([TableSpec()])
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_processes_opening_a_new_file_at_once_all_start(tmp_path: Path) -> None:
    """Ingest nodes started together race to switch the new file to WAL; SQLite answers that race with
    SQLITE_BUSY without calling the busy handler, which made a node exit with "database is locked" (a few
    percent of rounds of 4 openers before the fix). Every opener must start."""
    ctx = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(25):
        path = str(tmp_path / f"new-{round_}.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        failures += [f"round {round_}: {o}" for o in outcomes if o != "ok"]
    assert not failures, failures


def test_sink_urls(tmp_path: Path) -> None:
    assert isinstance(open_sink("sqlite:///rel/x.db"), SqliteSink)
    assert open_sink("sqlite:///rel/x.db").path == Path("rel/x.db")
    assert open_sink(f"sqlite:///{tmp_path}/x.db").path == tmp_path / "x.db"
    crate = open_sink("crate://db.example:4201?schema=iot")
    assert crate.description == "crate http://db.example:4201 schema iot"
    for bad in ("sqlite://", "postgres://x", "crate://", "sqlite:///x.db?synchronous=off"):
        with pytest.raises(SinkConfigError):
            open_sink(bad)
