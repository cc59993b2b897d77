"""The throughput measures keep the guarantees: coalesced checkpoints (only after the write, newest wins,
flushed on stop), lag from the last written event, the SQLite connection kept between batches but never
across a file that changed or turned unwritable."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.ingest.consumer import ConsumerOptions, IngestConsumer
from enginehub.ingest.model import DEFAULT_TABLE, SinkUnavailableError, dumps
from enginehub.ingest.rules import load_rules, route_batch
from enginehub.ingest.sinks.base import TableSpec
from enginehub.ingest.sinks.memory import MemorySink
from enginehub.ingest.sinks.sqlite import _METADATA_KEYS, SqliteSink, metadata_json
from enginehub.ingest.testing import make_event, message_id, seed_line, unwritable


class Event:
    def __init__(self, seq: int) -> None:
        self.sequence_number = seq
        self.offset = str(seq)
        self.enqueued_time = None
        self.body = seed_line(1, seq + 1).encode()
        self.message_id = message_id(1, seq + 1)
        self.content_type = None
        self.properties: dict[str, Any] = {}
        self.system_properties: dict[bytes, Any] = {}


class Context:
    def __init__(self, pid: str = "0", fail: int = 0) -> None:
        self.partition_id = pid
        self.eventhub_name = "eh1"
        self.consumer_group = "$Default"
        self.checkpoints: list[int] = []
        self.fail = fail
        self.last_enqueued_event_properties = {"sequence_number": 29}

    async def update_checkpoint(self, event: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("store down")
        self.checkpoints.append(event.sequence_number)


def _consumer(sink: MemorySink, **opts: Any) -> IngestConsumer:
    options = ConsumerOptions(retry_initial=0.001, retry_max=0.01, **opts)
    return IngestConsumer(lambda **kw: None, None, sink, load_rules(None), options)


async def test_checkpoints_are_coalesced_newest_wins_and_flushed_on_stop() -> None:
    sink, ctx = MemorySink(), Context()
    consumer = _consumer(sink, checkpoint_interval=60)
    for start in (0, 10, 20):
        await consumer._on_batch(ctx, [Event(i) for i in range(start, start + 10)])
    assert sink.count(DEFAULT_TABLE) == 30
    assert ctx.checkpoints == [9]  # the first at once, the later ones wait for the interval
    assert consumer.metrics.partition("0").lag == 0  # lag counts from the last written event
    await consumer._flush_checkpoints()
    assert ctx.checkpoints == [9, 29]  # only the newest confirmed batch is written
    await consumer._flush_checkpoints()
    assert ctx.checkpoints == [9, 29]


async def test_interval_zero_checkpoints_every_batch() -> None:
    sink, ctx = MemorySink(), Context()
    consumer = _consumer(sink, checkpoint_interval=0)
    for start in (0, 10):
        await consumer._on_batch(ctx, [Event(i) for i in range(start, start + 10)])
    assert ctx.checkpoints == [9, 19]


async def test_failed_checkpoint_is_kept_and_written_later() -> None:
    sink, ctx = MemorySink(), Context(fail=1)
    consumer = _consumer(sink, checkpoint_interval=60)
    await consumer._on_batch(ctx, [Event(i) for i in range(5)])
    assert ctx.checkpoints == [] and consumer.metrics.checkpoint_errors == 1
    await consumer._flush_checkpoints()
    assert ctx.checkpoints == [4]


async def test_unconfirmed_batch_never_reaches_the_checkpoint() -> None:
    sink, ctx = MemorySink(), Context()
    consumer = _consumer(sink, checkpoint_interval=60)
    sink.down = True
    consumer._give_up = True
    await consumer._on_batch(ctx, [Event(i) for i in range(5)])
    await consumer._flush_checkpoints()
    assert ctx.checkpoints == []


def _rows(start: int, n: int):
    events = [
        make_event(i, seed_line(1, i + 1), message_id=message_id(1, i + 1)) for i in range(start, start + n)
    ]
    return route_batch(events, load_rules(None)).rows


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {DEFAULT_TABLE}").fetchone()[0]


def test_sqlite_keeps_its_connection_between_batches_and_close_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sink = SqliteSink(path)
    sink.open([TableSpec()])
    assert sink.write(_rows(0, 3)).inserted == 3
    kept = sink._conn
    assert kept is not None
    assert sink.write(_rows(3, 3)).inserted == 3 and sink._conn is kept
    sink.close()
    assert sink._conn is None
    sink.close()
    assert sink.write(_rows(5, 3)).inserted == 2  # reopens on demand
    sink.close()
    assert _count(path) == 8


def test_sqlite_file_replaced_while_connected_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sink = SqliteSink(path)
    sink.open([TableSpec()])
    sink.write(_rows(0, 3))
    shutil.move(path, tmp_path / "old.db")
    other = SqliteSink(path)
    other.open([TableSpec()])
    other.close()
    assert sink.write(_rows(3, 2)).inserted == 2
    assert _count(path) == 2  # written to the file now at the path, not the moved one
    sink.close()


def test_sqlite_unwritable_file_is_an_outage_even_with_a_kept_connection(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sink = SqliteSink(path)
    sink.open([TableSpec()])
    sink.write(_rows(0, 3))
    try:
        outage = unwritable(path)
        outage.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"cannot make the SQLite file unwritable here: {exc}")
    try:
        with pytest.raises(SinkUnavailableError):
            sink.write(_rows(3, 2))
    finally:
        outage.__exit__(None, None, None)
    assert sink.write(_rows(3, 2)).inserted == 2
    sink.close()
    assert _count(path) == 5


_text = st.none() | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(-(2**70), 2**70) | st.booleans(),
    texts=st.tuples(_text, _text, _text, _text, _text, _text | st.integers()),
    system=st.sampled_from([{}, {"k": "v"}, []]),
    props=st.sampled_from([{}, {"fleet": "A"}]),
)
def test_metadata_json_is_exactly_dumps(seq: Any, texts: tuple[Any, ...], system: Any, props: Any) -> None:
    meta = dict(zip(_METADATA_KEYS, (seq, *texts, system, props), strict=True))
    assert metadata_json(meta) == dumps(meta)
    assert metadata_json(make_event(3, message_id="m").event_metadata()) == dumps(
        make_event(3, message_id="m").event_metadata()
    )
