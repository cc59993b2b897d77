"""CrateSink per-row failure handling against a small LOOPBACK fake of CrateDB's HTTP ``_sql`` endpoint.

Only for these unit tests: a real server cannot be made to fail a chosen row. The fake answers with the
documented shapes (docs/cratedb.md §2.1): bulk ``{"results": [{"rowcount": n, "error": {...}}...]}``,
analysis errors as HTTP 400 ``{"error": {"code", "message"}}``, 503 for an unavailable node. The real-server
conformance suite is ``test_ingest_sink_conformance.py[crate]``.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from enginehub.ingest.model import DEFAULT_TABLE, DeadLetter, SinkUnavailableError
from enginehub.ingest.rules import load_rules, route_batch
from enginehub.ingest.sinks.base import TableSpec
from enginehub.ingest.sinks.crate import CrateSink, classify, table_ddl
from enginehub.ingest.testing import make_event, seed_line

Responder = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class FakeCrate:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.respond: Responder = self.ok

    @staticmethod
    def ok(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "bulk_args" in body:
            return 200, {"cols": [], "duration": 1.0, "results": [{"rowcount": 1} for _ in body["bulk_args"]]}
        return 200, {"cols": [], "rows": [], "rowcount": 1, "duration": 1.0}

    def bulk_statements(self, table: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if "bulk_args" in r and f'"{table}"' in r["stmt"]]


@pytest.fixture
def fake() -> Iterator[tuple[FakeCrate, str]]:
    state = FakeCrate()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # server info, read by crate.client.connect()
            self._send(200, {"ok": True, "status": 200, "name": "fake", "version": {"number": "6.4.3"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
            state.requests.append(body)
            status, obj = state.respond(body)
            self._send(status, obj)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _rows(n: int):
    return route_batch([make_event(i, seed_line(2, i + 1)) for i in range(n)], load_rules(None)).rows


def _open(url: str) -> CrateSink:
    sink = CrateSink(url, schema="doc", connect_timeout=5, sleep=lambda s: None)
    sink.open([TableSpec(DEFAULT_TABLE, "seed")])
    return sink


def test_open_creates_tables_with_timestamptz_objects_and_generated_columns(fake) -> None:
    state, url = fake
    _open(url)
    ddl = [r["stmt"] for r in state.requests if r["stmt"].startswith("CREATE TABLE")]
    assert len(ddl) == 2  # dead letters + enginehub_events
    events = next(s for s in ddl if DEFAULT_TABLE in s)
    assert "CREATE TABLE IF NOT EXISTS" in events
    assert "ts TIMESTAMP WITH TIME ZONE" in events
    assert "partition_context OBJECT" in events and "event_metadata OBJECT" in events
    assert '"unit #" INTEGER GENERATED ALWAYS AS' in events
    assert '"sensor 21" DOUBLE PRECISION GENERATED ALWAYS AS' in events


def test_bulk_insert_uses_bulk_args_and_on_conflict_do_nothing(fake) -> None:
    state, url = fake
    sink = _open(url)
    result = sink.write(_rows(5))
    assert (result.inserted, result.failures) == (5, [])
    (bulk,) = state.bulk_statements(DEFAULT_TABLE)
    assert bulk["stmt"].endswith("ON CONFLICT DO NOTHING")
    assert len(bulk["bulk_args"]) == 5
    assert bulk["bulk_args"][0][0] == "seq:0:0"  # identity key first
    assert "unit #" not in bulk["stmt"]  # generated from payload, not inserted


def test_every_per_row_result_is_inspected(fake) -> None:
    """rowcount -2 rows are failures (never counted as written); 0 = already stored."""
    state, url = fake
    sink = _open(url)

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "bulk_args" not in body:
            return FakeCrate.ok(body)
        results: list[dict[str, Any]] = [{"rowcount": 1} for _ in body["bulk_args"]]
        results[1] = {"rowcount": 0}
        results[2] = {
            "rowcount": -2,
            "error": {"code": 4000, "message": "Cannot cast value `x` to type `integer`"},
        }
        results[3] = {
            "rowcount": -2,
            "error": {"code": 5002, "message": "UnavailableShardsException[shard 2]"},
        }
        results[4] = {"rowcount": -2}
        return 200, {"cols": [], "duration": 1.0, "results": results}

    state.respond = respond
    result = sink.write(_rows(6))
    assert (result.inserted, result.duplicates) == (2, 1)
    failures = {f.index: f for f in result.failures}
    assert set(failures) == {2, 3, 4}
    assert not failures[2].retryable and "Cannot cast" in failures[2].reason
    assert failures[3].retryable and "UnavailableShards" in failures[3].reason
    assert failures[4].retryable  # no error detail (only 10 per shard are reported): retry reveals it


def test_classify_rules() -> None:
    assert classify({"rowcount": 1}) is None
    assert classify({"rowcount": 0}) is None
    assert classify({"rowcount": -2, "error": {"message": "CircuitBreakingException[...]"}})[1] is True
    assert classify({"rowcount": -2, "error": {"message": "DuplicateKeyException"}})[1] is False


def test_whole_request_error_is_sink_unavailable_and_nothing_counted(fake) -> None:
    state, url = fake
    sink = _open(url)
    state.respond = lambda body: (
        (400, {"error": {"code": 4043, "message": "RelationUnknown[Relation 'enginehub_events' unknown]"}})
        if "bulk_args" in body
        else FakeCrate.ok(body)
    )
    with pytest.raises(SinkUnavailableError, match="RelationUnknown"):
        sink.write(_rows(3))
    # the dropped table is recreated on the next attempt
    state.respond = FakeCrate.ok
    assert sink.write(_rows(3)).inserted == 3
    creates = [
        r for r in state.requests if r["stmt"].startswith("CREATE TABLE") and DEFAULT_TABLE in r["stmt"]
    ]
    assert len(creates) == 2


def test_node_unavailable_503_is_sink_unavailable_then_reconnects(fake) -> None:
    state, url = fake
    sink = _open(url)
    state.respond = lambda body: (503, {"error": {"code": 5030, "message": "unavailable"}})
    with pytest.raises(SinkUnavailableError):
        sink.write(_rows(2))
    state.respond = FakeCrate.ok
    assert sink.write(_rows(2)).inserted == 2


def test_failed_dead_letter_insert_fails_the_write(fake) -> None:
    state, url = fake
    sink = _open(url)
    state.respond = lambda body: (
        (200, {"cols": [], "results": [{"rowcount": -2, "error": {"code": 1, "message": "boom"}}]})
        if "bulk_args" in body and "dead_letters" in body["stmt"]
        else FakeCrate.ok(body)
    )
    dl = DeadLetter.of(make_event(1, b"\x00"), "bad")
    with pytest.raises(SinkUnavailableError, match="dead letters not stored"):
        sink.write([], [dl])


def test_start_up_retries_then_gives_a_clear_error() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    sink = CrateSink(f"http://127.0.0.1:{port}", connect_timeout=1, sleep=sleeps.append, request_timeout=1)
    with pytest.raises(SinkUnavailableError, match="not reachable"):
        sink.open([TableSpec()])
    assert sleeps, "no retry before giving up"


def test_ddl_for_auto_and_json_tables_inserts_plain_typed_columns() -> None:
    for fmt in ("auto", "json"):
        ddl = table_ddl("doc", TableSpec("j", fmt))
        assert "GENERATED" not in ddl and '"unit #" INTEGER' in ddl
    assert '"unit #" INTEGER GENERATED ALWAYS AS (CAST(string_to_array(' in table_ddl(
        "doc", TableSpec("s", "seed")
    )
    with pytest.raises(ValueError, match="invalid schema"):
        table_ddl("bad schema", TableSpec())


def test_bulk_size_splits_a_write_into_requests_of_at_most_that_many_rows(fake) -> None:
    state, url = fake
    sink = CrateSink(url, schema="doc", connect_timeout=5, sleep=lambda s: None, bulk_size=4)
    sink.open([TableSpec(DEFAULT_TABLE, "seed")])
    result = sink.write(_rows(10))
    assert (result.inserted, result.failures) == (10, [])
    bulks = state.bulk_statements(DEFAULT_TABLE)
    assert [len(b["bulk_args"]) for b in bulks] == [4, 4, 2]
    # the rows go out in order, each once
    keys = [args[0] for b in bulks for args in b["bulk_args"]]
    assert keys == [r.key for r in _rows(10)]
    assert (sink.bulk_requests, sink.bulk_rows) == (3, 10)


def test_bulk_size_keeps_each_rows_outcome_at_its_index(fake) -> None:
    """A failing row of the second request is reported at its index in the whole write."""
    state, url = fake
    sink = CrateSink(url, schema="doc", connect_timeout=5, sleep=lambda s: None, bulk_size=3)
    sink.open([TableSpec(DEFAULT_TABLE, "seed")])
    calls = {"n": 0}

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "bulk_args" not in body:
            return FakeCrate.ok(body)
        calls["n"] += 1
        results: list[dict[str, Any]] = [{"rowcount": 1} for _ in body["bulk_args"]]
        if calls["n"] == 2:
            results[1] = {"rowcount": -2, "error": {"code": 4000, "message": "Cannot cast value"}}
        return 200, {"cols": [], "duration": 1.0, "results": results}

    state.respond = respond
    result = sink.write(_rows(7))
    assert result.inserted == 6
    assert [(f.index, f.retryable) for f in result.failures] == [(4, False)]


def test_a_failed_request_fails_the_whole_write_and_a_retry_counts_the_stored_rows_as_duplicates(
    fake,
) -> None:
    """Request 1 stored, request 2 refused: nothing is confirmed; the retry finds request 1's rows there."""
    state, url = fake
    sink = CrateSink(url, schema="doc", connect_timeout=5, sleep=lambda s: None, bulk_size=2)
    sink.open([TableSpec(DEFAULT_TABLE, "seed")])
    stored: set[str] = set()
    fail_next = {"on": True}

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "bulk_args" not in body:
            return FakeCrate.ok(body)
        if fail_next["on"] and stored:
            fail_next["on"] = False
            return 503, {"error": {"code": 5030, "message": "unavailable"}}
        results = []
        for args in body["bulk_args"]:
            results.append({"rowcount": 0 if args[0] in stored else 1})
            stored.add(args[0])
        return 200, {"cols": [], "duration": 1.0, "results": results}

    state.respond = respond
    with pytest.raises(SinkUnavailableError):
        sink.write(_rows(4))
    result = sink.write(_rows(4))
    assert (result.inserted, result.duplicates, result.failures) == (2, 2, [])
    assert len(stored) == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bulk_size_must_be_a_positive_whole_number(bad: Any) -> None:
    from enginehub.ingest.model import SinkConfigError

    with pytest.raises(SinkConfigError, match="bulk_size"):
        CrateSink("http://127.0.0.1:4200", bulk_size=bad)


def test_sink_url_bulk_size() -> None:
    from enginehub.ingest.model import SinkConfigError
    from enginehub.ingest.sinks.base import open_sink

    sink = open_sink("crate://127.0.0.1:4200?schema=s1&bulk_size=2000")
    assert isinstance(sink, CrateSink)
    assert (sink.bulk_size, sink.schema, sink.server) == (2000, "s1", "http://127.0.0.1:4200")
    assert open_sink("crate://127.0.0.1:4200").bulk_size is None  # type: ignore[attr-defined]
    for bad in ("0", "x", "-5"):
        with pytest.raises(SinkConfigError, match="bulk_size"):
            open_sink(f"crate://127.0.0.1:4200?bulk_size={bad}")
