"""Sink fixtures for the shared conformance suite: every real sink plus the in-memory one.

The CrateDB variant needs a REAL server: the plugin's ``cratedb`` fixture (``CRATEDB_URL``, else
testcontainers' CrateDBContainer when a Docker engine answers); otherwise it is skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from enginehub.ingest.model import DEAD_LETTER_TABLE
from enginehub.ingest.sinks.base import Sink
from enginehub.ingest.sinks.crate import CrateSink
from enginehub.ingest.sinks.memory import MemorySink
from enginehub.ingest.sinks.sqlite import SqliteSink


@dataclass
class SinkUnderTest:
    """A sink plus read-back helpers that go around the sink (straight to the storage)."""

    sink: Sink
    rows: Callable[[str], dict[str, dict[str, Any]]]  # key -> {payload, unit #, cycle #, sensor 21, seq}
    dead_letters: Callable[[], dict[tuple[str, str], dict[str, Any]]]


def _memory() -> Iterator[SinkUnderTest]:
    sink = MemorySink()

    def rows(table: str) -> dict[str, dict[str, Any]]:
        return {
            r.key: {
                "payload": r.payload,
                "unit #": r.columns.get("unit #"),
                "cycle #": r.columns.get("cycle #"),
                "sensor 21": r.columns.get("sensor 21"),
                "seq": r.event_metadata["sequence_number"],
            }
            for r in sink.rows.get(table, [])
        }

    def dls() -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (d.table, d.key): {
                "raw": d.raw,
                "reason": d.reason,
                "partition": d.partition_id,
                "seq": d.sequence_number,
            }
            for d in sink.dead_letters
        }

    yield SinkUnderTest(sink, rows, dls)


def _sqlite(tmp_path: Any) -> Iterator[SinkUnderTest]:
    path = tmp_path / "sink.db"
    sink = SqliteSink(path)

    def rows(table: str) -> dict[str, dict[str, Any]]:
        with sqlite3.connect(path) as conn:
            cur = conn.execute(
                f'SELECT id, payload, "unit #", "cycle #", "sensor 21", event_metadata FROM "{table}"'
            )
            return {
                r[0]: {
                    "payload": r[1],
                    "unit #": r[2],
                    "cycle #": r[3],
                    "sensor 21": r[4],
                    "seq": json.loads(r[5])["sequence_number"],
                }
                for r in cur
            }

    def dls() -> dict[tuple[str, str], dict[str, Any]]:
        with sqlite3.connect(path) as conn:
            cur = conn.execute(
                "SELECT target_table, id, raw, reason, partition_id, sequence_number "
                f"FROM {DEAD_LETTER_TABLE}"
            )
            return {(r[0], r[1]): {"raw": r[2], "reason": r[3], "partition": r[4], "seq": r[5]} for r in cur}

    yield SinkUnderTest(sink, rows, dls)
    sink.close()


def _crate(server: Any, schema: str) -> Iterator[SinkUnderTest]:
    """``server`` is the plugin's CrateDBServer (CRATEDB_URL or testcontainers; it skips with the reason)."""
    sink = CrateSink(
        server.http_url, schema=schema, username=server.username, password=server.password, connect_timeout=30
    )

    def query(sql: str) -> list[list[Any]]:
        return server.query(sql)

    def rows(table: str) -> dict[str, dict[str, Any]]:
        query(f'REFRESH TABLE "{schema}"."{table}"')
        got = query(
            f'SELECT id, payload, "unit #", "cycle #", "sensor 21", event_metadata[\'sequence_number\'] '
            f'FROM "{schema}"."{table}"'
        )
        return {
            r[0]: {"payload": r[1], "unit #": r[2], "cycle #": r[3], "sensor 21": r[4], "seq": r[5]}
            for r in got
        }

    def dls() -> dict[tuple[str, str], dict[str, Any]]:
        query(f'REFRESH TABLE "{schema}"."{DEAD_LETTER_TABLE}"')
        got = query(
            "SELECT target_table, id, raw_base64, reason, partition_id, sequence_number "
            f'FROM "{schema}"."{DEAD_LETTER_TABLE}"'
        )
        return {
            (r[0], r[1]): {"raw": base64.b64decode(r[2]), "reason": r[3], "partition": r[4], "seq": r[5]}
            for r in got
        }

    yield SinkUnderTest(sink, rows, dls)
    sink.close()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("crate", marks=[pytest.mark.cratedb, pytest.mark.integration]),
    ]
)
def sut(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[SinkUnderTest]:
    if request.param == "memory":
        yield from _memory()
    elif request.param == "sqlite":
        yield from _sqlite(tmp_path)
    else:
        yield from _crate(request.getfixturevalue("cratedb"), request.getfixturevalue("cratedb_schema"))
