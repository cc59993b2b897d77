"""The sink worker as a real child process: rows and dead letters land in SQLite, counters reach the
parent, a failed start and a dead worker are reported (never a confirmed batch), and a down sink is
retried until the parent gives up."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from pathlib import Path

import pytest
from azure.eventhub import EventData
from azure.eventhub._pyamqp.message import Message, Properties

from enginehub.harness.testing.processes import child_pids, running
from enginehub.ingest.eventloop import resolve as resolve_loop
from enginehub.ingest.metrics import Metrics
from enginehub.ingest.model import SinkConfigError
from enginehub.ingest.rules import load_rules
from enginehub.ingest.sinks.sqlite import SqliteSink
from enginehub.ingest.testing import (
    consumer_args,
    message_id,
    poll,
    produce,
    row_count,
    seed_line,
    sqlite_query,
    unwritable,
)
from enginehub.ingest.worker import SinkWorker, SinkWorkerError, WorkerSpec, pack_events

pytestmark = pytest.mark.integration


def _events(first: int, count: int, *, poison: int | None = None) -> list[EventData]:
    out = []
    for seq in range(first, first + count):
        body = b"not a line" if seq == poison else seed_line(1, seq + 1).encode()
        out.append(
            EventData._from_message(
                Message(
                    message_annotations={
                        b"x-opt-sequence-number": seq,
                        b"x-opt-offset": str(seq * 100).encode(),
                        b"x-opt-enqueued-time": 1_764_000_000_000 + seq,
                    },
                    properties=Properties(message_id=message_id(1, seq + 1)),
                    data=[body],
                )
            )
        )
    return out


def _spec(db: Path, **kw: object) -> WorkerSpec:
    return WorkerSpec(
        sink_factory=functools.partial(SqliteSink, db),
        rules_factory=functools.partial(load_rules, None),
        retry_initial=0.05,
        retry_max=0.2,
        **kw,  # type: ignore[arg-type]
    )


async def _submit(worker: SinkWorker, pid: str, events: list[EventData]) -> bool:
    return await worker.submit("eh1", "$Default", pid, pack_events(events, "eh1", "$Default", pid))


async def _until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_batches_become_rows_and_dead_letters_and_counters_reach_the_parent(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    metrics = Metrics()
    worker = SinkWorker(_spec(db), metrics)
    await worker.start()
    try:
        first, second = _events(0, 50, poison=7), _events(50, 30)
        results = await asyncio.gather(_submit(worker, "0", first), _submit(worker, "1", second))
        assert results == [True, True]
        assert await _submit(worker, "0", first[:10])  # redelivery: confirmed, no new rows
    finally:
        assert await worker.close() == 0
    assert row_count(db) == 79
    # the poison event was delivered twice: counted per delivery, stored once (checked below)
    assert metrics.rows_written == 79 and metrics.dead_letters == 2 and metrics.duplicates == 9
    ((reason, raw),) = sqlite_query(db, "SELECT reason, raw FROM enginehub_dead_letters")
    assert raw == b"not a line" and reason
    ids = {r[0] for r in sqlite_query(db, "SELECT id FROM enginehub_events")}
    assert f"mid:{message_id(1, 2)}" in ids and f"mid:{message_id(1, 8)}" not in ids


async def test_a_sink_that_cannot_open_fails_the_start_with_its_own_error(tmp_path: Path) -> None:
    worker = SinkWorker(_spec(tmp_path / "missing-dir" / "w.db"), Metrics())
    with pytest.raises(SinkConfigError, match="does not exist"):
        await worker.start()
    assert worker.process is not None and worker.process.poll() is not None


async def test_a_killed_worker_fails_the_batches_in_flight_never_confirms_them(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    worker = SinkWorker(_spec(db, write_linger=5.0), Metrics())  # the 2nd write waits: in flight
    await worker.start()
    assert await _submit(worker, "0", _events(0, 5))
    pending = asyncio.create_task(_submit(worker, "0", _events(5, 5)))
    await asyncio.sleep(0.2)
    assert worker.process is not None
    os.kill(worker.process.pid, signal.SIGKILL)  # our own child, by PID
    with pytest.raises(SinkWorkerError, match="exited"):
        await pending
    with pytest.raises(SinkWorkerError):
        await _submit(worker, "0", _events(10, 1))
    await worker.close()
    assert row_count(db) == 5


async def test_a_down_sink_is_retried_and_reported_until_the_parent_gives_up(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    metrics = Metrics()
    worker = SinkWorker(_spec(db), metrics)
    await worker.start()
    try:
        assert await _submit(worker, "0", _events(0, 5))
        try:
            outage = unwritable(db)
            outage.__enter__()
        except RuntimeError as exc:
            pytest.skip(f"cannot make the SQLite file unwritable here: {exc}")
        try:
            pending = asyncio.create_task(_submit(worker, "0", _events(5, 5)))
            await _until(lambda: metrics.sink_down and metrics.sink_errors >= 2, 10, "the outage report")
            assert not pending.done()
            worker.give_up()
            assert await asyncio.wait_for(pending, 10) is False
        finally:
            outage.__exit__(None, None, None)
        assert await _submit(worker, "0", _events(5, 5))  # back: written, and the state says so
        assert not metrics.sink_down
    finally:
        await worker.close()
    assert row_count(db) == 10


# -- through the `ingest` CLI ------------------------------------------------------------------------------
def _n_events(n: int) -> list[tuple[str, str]]:
    return [(seed_line(1 + i % 10, 1 + i // 10), message_id(1 + i % 10, 1 + i // 10)) for i in range(n)]


@pytest.mark.parametrize(
    ("mode", "loop"),
    [
        ("--sink-worker", "asyncio"),  # the default
        ("--no-sink-worker", "asyncio"),
        ("--sink-worker", "auto"),  # uvloop where installed, node and worker alike
    ],
)
def test_both_modes_write_exactly_n_rows_and_stop_cleanly(
    emulator, consumers, tmp_path: Path, mode: str, loop: str
) -> None:
    db = tmp_path / "ingest.db"
    produce(emulator.connection_string, _n_events(400))
    args = consumer_args(emulator, db, "--checkpoint-dir", str(tmp_path / "ckpt"), mode, "--event-loop", loop)
    node = consumers(args)
    poll(lambda: row_count(db) >= 400, 60, lambda: f"{row_count(db)} rows\n{node.tail()}")
    assert f"event loop {resolve_loop(loop)}" in node.tail(200)
    workers = child_pids(node.proc.pid)
    assert len(workers) == (1 if mode == "--sink-worker" else 0), workers
    if workers:
        cmdline = Path(f"/proc/{workers[0]}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--event-loop") + 1] == loop.encode()
    node.terminate()
    assert node.wait(30) == 0, node.tail()
    assert sqlite_query(db, "SELECT count(*), count(DISTINCT id) FROM enginehub_events") == [(400, 400)]
    assert not any(running(w) for w in workers)


def test_a_dead_sink_worker_stops_the_node_with_exit_1_and_nothing_checkpointed_past_it(
    emulator, consumers, tmp_path: Path
) -> None:
    db, ckpt = tmp_path / "ingest.db", tmp_path / "ckpt"
    produce(emulator.connection_string, _n_events(100))
    node = consumers(consumer_args(emulator, db, "--checkpoint-dir", str(ckpt)))
    poll(lambda: row_count(db) >= 100, 60, lambda: f"{row_count(db)} rows\n{node.tail()}")
    (worker,) = child_pids(node.proc.pid)
    os.kill(worker, signal.SIGKILL)  # our node's own child, by PID
    assert node.wait(30) == 1, node.tail()
    assert "sink worker" in node.tail(40)
    # a new node (with its own worker) carries on from the checkpoints: nothing lost, nothing doubled
    produce(emulator.connection_string, _n_events(300)[100:])
    again = consumers(consumer_args(emulator, db, "--checkpoint-dir", str(ckpt)), "again")
    poll(lambda: row_count(db) >= 300, 60, lambda: f"{row_count(db)} rows\n{again.tail()}")
    again.terminate()
    assert again.wait(30) == 0, again.tail()
    assert sqlite_query(db, "SELECT count(*), count(DISTINCT id) FROM enginehub_events") == [(300, 300)]
