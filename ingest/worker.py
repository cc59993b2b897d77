"""The sink worker: rules and sink writes in a child process, so the receiving process does little more
than the SDK's own work.

Why: on a small machine the SDK's receive path (AMQP decode, ``EventData``) costs about as much CPU per
event as everything we do with the event (read it, apply the rules, parse the payload, encode the row,
SQLite). In one process both share one GIL, so the consumer read at half the rate of a bare SDK loop. With
the worker, the receiving process packs each event into a plain tuple of the AMQP sections it already
decoded (well under a microsecond), sends the batch over a socket pair, and awaits the verdict; the worker
builds the records, routes them, writes them through the same :class:`ConfirmingWriter` (retries,
per-row failures, dead letters) and answers. The delivery rule is unchanged: the receiving process
checkpoints a batch only after the worker reported every row stored.

Protocol (length-prefixed messages over an AF_UNIX socket pair, each in ``marshal`` when it can be (the
batches: tuples, dicts, bytes, ints, ~3.5 x cheaper to encode than pickle) and else in pickle; the worker
is our own child process on the same interpreter, so nothing here is read from an untrusted peer):

- parent -> worker: the :class:`WorkerSpec` first, then ``("batch", id, eventhub, consumer group,
  partition id, items)`` and ``("give_up",)`` (shutdown: stop retrying a down sink). EOF = stop: the
  write in progress is finished (or given up), queued batches are dropped (never confirmed, so never
  checkpointed), the sink is closed.
- worker -> parent: ``("ready",)`` or ``("error", kind, message)`` after opening the sink;
  ``("metrics", {...})`` counter snapshots; ``("done", id, confirmed)`` per batch.

Signals: the worker ignores SIGINT and SIGTERM, which reach it with its parent when they are sent to the
process group (Ctrl-C, systemd's KillMode=control-group, ``timeout``): the parent drains, then closes the
socket, and the worker stops on that EOF, so a stop by the group ends as a stop by the parent's pid does
(exit 0, everything written checkpointed). It dies with its parent (``PR_SET_PDEATHSIG`` = SIGKILL), so a
``kill -9`` of the node leaves no worker behind; what it had not confirmed is not checkpointed.

Batches queued while a write is in progress are written together in the next transaction (group commit,
as the in-process writer does). If the worker dies, every batch in flight is reported unconfirmed and the
consumer stops with exit code 1: nothing is checkpointed past an unwritten event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import marshal
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enginehub.harness.procutil import die_with_parent, ignore_stop_signals, stop_signals_blocked
from enginehub.ingest.eventloop import DEFAULT_LOOP, EVENT_LOOPS, run
from enginehub.ingest.metrics import Metrics
from enginehub.ingest.model import (
    REDUNDANT_SYSTEM_PROPERTIES,
    DeadLetter,
    EventRecord,
    Row,
    SinkConfigError,
    SinkUnavailableError,
    as_text,
)
from enginehub.ingest.payloads import PayloadFormatError, parse_payload
from enginehub.ingest.rules import Routed, Rule, RuleSet, _route_into, route_batch
from enginehub.ingest.sinks.base import Sink

LOG = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
#: counters the worker owns; the parent copies them from each snapshot
WORKER_COUNTERS = ("rows_written", "duplicates", "dead_letters", "unmatched", "sink_errors", "row_retries")


class SinkWorkerError(RuntimeError):
    """The worker process failed to start or died."""


@dataclass(frozen=True)
class WorkerSpec:
    """What the worker builds its own sink and rules from (picklable: module-level callables or
    ``functools.partial`` of them), and the writer settings."""

    sink_factory: Callable[[], Sink]
    rules_factory: Callable[[], RuleSet]
    retry_initial: float = 0.2
    retry_max: float = 5.0
    max_row_attempts: int = 5
    #: min s between the starts of two writes. 0: the worker writes as soon as a batch is there, and the
    #: batches that arrive during a write go together into the next one (group commit). A linger only
    #: delays the confirmations, and while a partition waits for one, the SDK does not hand it the next
    #: batch: 20 ms cost ~8 % of the throughput in benchmarks/ingest_throughput.py.
    write_linger: float = 0.0
    log_level: int = logging.INFO
    #: the worker's event loop (``enginehub.ingest.eventloop``): the node's, passed on its command line
    event_loop: str = DEFAULT_LOOP


# -- packing (receiving process) and unpacking (worker) -----------------------------------------------------
def _message_class() -> type | None:
    try:
        from azure.eventhub._pyamqp.message import Message
    except ImportError:  # pragma: no cover - SDK layout changed: every event takes the slow path
        return None
    return Message


_MESSAGE = _message_class()


def pack_events(
    events: list[Any], eventhub: str, consumer_group: str, partition_id: str
) -> list[tuple[Any, ...] | EventRecord | DeadLetter]:
    """Each SDK ``EventData`` as ``(message annotations, message properties as a tuple, application
    properties, data sections)``: the AMQP sections the SDK decoded, read from ``EventData._message``
    (the SDK's pyamqp ``Message``; private, so checked by type). Anything else (a non-DATA body, another
    SDK layout, a test double) is converted here by :func:`~enginehub.ingest.consumer.read_events` into an
    :class:`EventRecord` or a :class:`DeadLetter`, with the same result."""
    out: list[tuple[Any, ...] | EventRecord | DeadLetter] = []
    for event in events:
        m = getattr(event, "_message", None)
        if type(m) is _MESSAGE:  # never true when the SDK has no such class (_MESSAGE None)
            data = m.data
            if data and len(data) == 1 and type(data[0]) is bytes:
                props = m.properties
                out.append(
                    (
                        m.message_annotations,
                        tuple(props) if props else None,
                        m.application_properties,
                        data[0],
                    )
                )
                continue
        from enginehub.ingest.consumer import read_events

        records, dead = read_events([event], eventhub, consumer_group, partition_id)
        out += records or dead
    return out


_SEQ, _OFFSET, _ENQUEUED = b"x-opt-sequence-number", b"x-opt-offset", b"x-opt-enqueued-time"
#: (index in pyamqp's Properties, annotation key) of the message properties copied into system_properties,
#: in to_record's order
_PROPERTY_FIELDS = (
    (5, b"correlation-id"),
    (1, b"user-id"),
    (2, b"to"),
    (3, b"subject"),
    (4, b"reply-to"),
    (10, b"group-id"),
)
_make_record: Callable[..., EventRecord] | None = None  # consumer.make_record (consumer imports this module)


def record_from_packed(
    item: tuple[Any, ...], eventhub: str, consumer_group: str, partition_id: str
) -> EventRecord:
    """The :class:`EventRecord` that :func:`~enginehub.ingest.consumer.to_record` makes of the same
    ``EventData`` (tested for equality on generated messages)."""
    global _make_record
    if _make_record is None:
        from enginehub.ingest.consumer import make_record as _make_record

    annotations, props, app, body = item
    system = dict(annotations) if annotations else {}
    message_id = content_type = None
    if props is not None:
        message_id, content_type = props[0], props[6]
        for index, key in _PROPERTY_FIELDS:
            value = props[index]
            if value:
                system[key] = value
    seq = system.get(_SEQ)
    offset = system.get(_OFFSET)
    stamp = system.get(_ENQUEUED)
    return _make_record(
        eventhub,
        consumer_group,
        partition_id,
        sequence_number=int(seq),  # type: ignore[arg-type]  # None -> TypeError -> dead letter
        offset=str(offset.decode("UTF-8") if isinstance(offset, bytes) else None),
        enqueued_time=dt.datetime.fromtimestamp(float(stamp) / 1000, dt.UTC) if stamp else None,
        body=body,
        message_id=message_id,
        content_type=content_type,
        system=system,
        app=app or {},
    )


def unpack_events(
    items: list[Any], eventhub: str, consumer_group: str, partition_id: str
) -> tuple[list[EventRecord], list[DeadLetter]]:
    records: list[EventRecord] = []
    dead: list[DeadLetter] = []
    for item in items:
        one = _unpack_one(item, eventhub, consumer_group, partition_id)
        (records if isinstance(one, EventRecord) else dead).append(one)  # type: ignore[arg-type]
    return records, dead


def _unpack_one(item: Any, eventhub: str, consumer_group: str, partition_id: str) -> EventRecord | DeadLetter:
    """One item of a batch: a packed tuple rebuilt (or its dead letter when unreadable), or the record or
    dead letter the receiving process made itself."""
    if type(item) is tuple:
        try:
            return record_from_packed(item, eventhub, consumer_group, partition_id)
        except Exception as exc:
            return _unreadable(item, exc, eventhub, consumer_group, partition_id)
    return item  # type: ignore[no-any-return]


#: an event whose annotations are all among these has empty system properties
_PLAIN_ANNOTATIONS = REDUNDANT_SYSTEM_PROPERTIES


def catch_all(rules: RuleSet) -> Rule | None:
    """The rule set's only rule when it matches every event (no source, device or property filter)."""
    if len(rules.rules) != 1:
        return None
    rule = rules.rules[0]
    if rule.eventhub is None and rule.consumer_group is None and not rule.device_id and not rule.properties:
        return rule
    return None


def _plain_row(item: tuple[Any, ...], rule: Rule, context: dict[str, Any], partition_id: str) -> Row | None:
    """The row :func:`route_packed`'s general path makes of a *plain* packed event for a catch-all rule,
    built without the intermediate :class:`EventRecord`; None when the event is not plain (annotations
    other than the four top-level ones, application properties, message properties other than the id
    and content type) or does not become a row (a payload that is not UTF-8 or does not parse): the
    general path then handles it, dead letter and reason included."""
    annotations, props, app, body = item
    if app or type(annotations) is not dict or not annotations.keys() <= _PLAIN_ANNOTATIONS:
        return None
    seq = annotations.get(_SEQ)
    offset = annotations.get(_OFFSET)
    if type(seq) is not int or type(offset) is not bytes:
        return None
    message_id = content_type = None
    if props is not None:
        if props[1] or props[2] or props[3] or props[4] or props[5] or props[10]:
            return None
        message_id, content_type = props[0], props[6]
        if not (message_id is None or type(message_id) is str):
            return None
    try:
        text = body.decode("utf-8")
        columns = parse_payload(rule.format, text)
        offset_text = offset.decode("UTF-8")
    except (UnicodeDecodeError, PayloadFormatError):
        return None
    stamp = annotations.get(_ENQUEUED)
    enqueued = dt.datetime.fromtimestamp(float(stamp) / 1000, dt.UTC) if stamp else None
    return Row(
        table=rule.table,
        key=f"mid:{message_id}" if message_id else f"seq:{partition_id}:{seq}",
        partition_context=context,
        event_metadata={
            "sequence_number": seq,
            "offset": offset_text,
            "enqueued_time": enqueued.isoformat() if enqueued else None,
            "device_id": None,
            "message_id": message_id,
            "partition_key": as_text(annotations.get(b"x-opt-partition-key")),
            "content_type": as_text(content_type),
            "system_properties": {},
            "properties": {},
        },
        ts=enqueued,
        payload=text,
        columns=columns,
        partition_id=partition_id,
        sequence_number=seq,
        raw=body,
    )


def route_packed(
    items: list[Any], eventhub: str, consumer_group: str, partition_id: str, rules: RuleSet
) -> tuple[Routed, list[DeadLetter]]:
    """``route_batch(unpack_events(items))``: (the routed rows and dead letters, the unreadable events'
    dead letters), the same values in the same order (tested for equality on generated events). Under a
    catch-all rule (:func:`catch_all`, the default rule set) a plain event becomes its row directly, which
    skips the record and the rule matching: 13.3 -> 11.1 us per event for the routing, 22.5 -> 21.0 us with
    the SQLite write (``benchmarks/ingest_worker_cpu.py``); every other event takes the general path."""
    rule = catch_all(rules)
    if rule is None:
        records, unreadable = unpack_events(items, eventhub, consumer_group, partition_id)
        return route_batch(records, rules), unreadable
    out = Routed()
    dead: list[DeadLetter] = []
    context = {"eventhub": eventhub, "consumer_group": consumer_group, "partition_id": partition_id}
    for item in items:
        if type(item) is tuple:
            try:
                row = _plain_row(item, rule, context, partition_id)
            except Exception:  # odd values (a stamp out of range...): the general path decides
                row = None
            if row is not None:
                out.rows.append(row)
                continue
        one = _unpack_one(item, eventhub, consumer_group, partition_id)
        if isinstance(one, EventRecord):
            _route_into(out, one, rules, context)
        else:
            dead.append(one)  # type: ignore[arg-type]
    return out, dead


def _unreadable(item: tuple[Any, ...], exc: Exception, eventhub: str, cg: str, pid: str) -> DeadLetter:
    annotations = item[0] or {}
    seq_value = annotations.get(_SEQ)
    seq = seq_value if isinstance(seq_value, int) else -1
    offset = annotations.get(_OFFSET)
    return DeadLetter.unreadable(
        (eventhub, cg, pid),
        seq,
        offset.decode("utf-8", "replace") if isinstance(offset, bytes) else str(offset or ""),
        item[3] if isinstance(item[3], bytes) else repr(item[3])[:4096].encode(),
        exc,
    )


# -- framing ------------------------------------------------------------------------------------------------
_MARSHAL, _PICKLE = b"M", b"P"


def _frame(obj: Any) -> bytes:
    """One message: marshal for plain data (a batch of packed events: 0.24 us per event against 0.86 with
    pickle, in the receiving process, which is the pipeline's bottleneck), pickle for anything else (the
    spec, an annotation of a type marshal does not take, such as a UUID)."""
    try:
        data = _MARSHAL + marshal.dumps(obj)
    except ValueError:
        data = _PICKLE + pickle.dumps(obj, protocol=5)
    return _HEADER.pack(len(data)) + data


def _unframe(data: bytes) -> Any:
    body = memoryview(data)[1:]
    if data[:1] == _MARSHAL:
        return marshal.loads(body)  # noqa: S302 - our own child/parent only
    return pickle.loads(body)  # noqa: S301 - our own child/parent only


async def _read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at EOF."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        return _unframe(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# -- parent side --------------------------------------------------------------------------------------------
class SinkWorker:
    """The receiving process's handle on the worker: ``await start()``, ``await submit(...)`` per batch
    (True = every row stored or dead-lettered), ``give_up()`` on a timed-out drain, ``await close()``."""

    def __init__(
        self, spec: WorkerSpec, metrics: Metrics, on_death: Callable[[str], None] | None = None
    ) -> None:
        self.spec = spec
        self.metrics = metrics
        self.on_death = on_death  # called once if the worker goes away before close()
        self._closing = False
        self.process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._next_id = 0
        self._ready: asyncio.Future[tuple[Any, ...]] | None = None
        self.dead: str | None = None  # why the worker is gone, once it is

    async def start(self, timeout: float = 60.0) -> None:
        parent, child = socket.socketpair()
        try:
            with stop_signals_blocked():  # until the worker ignores them (see main)
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "enginehub.ingest.worker",
                        "--fd",
                        str(child.fileno()),
                        "--event-loop",
                        self.spec.event_loop,
                        "--parent-pid",
                        str(os.getpid()),
                    ],
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self._ready = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._read_loop(reader), name="ingest-worker-reader")
        self._writer.write(_frame(self.spec))
        try:
            answer = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.close()
            raise SinkWorkerError(f"sink worker did not start within {timeout:.0f} s") from None
        if answer[0] == "error":
            await self.close()
            kind, message = answer[1], answer[2]
            raise (SinkConfigError if kind == "config" else SinkUnavailableError)(message)
        LOG.info("sink worker started (pid %d)", self.process.pid)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            msg = await _read(reader)
            if msg is None:
                break
            kind = msg[0]
            if kind == "done":
                future = self._pending.pop(msg[1], None)
                if future is not None and not future.done():
                    future.set_result(bool(msg[2]))
            elif kind == "metrics":
                for name, value in msg[1].items():
                    setattr(self.metrics, name, value)
            elif self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
        code = None
        if self.process is not None:  # EOF comes first; the exit status a moment later
            try:
                code = await asyncio.to_thread(self.process.wait, 2.0)
            except subprocess.TimeoutExpired:
                code = None
        self.dead = (
            f"sink worker exited (code {code})" if code is not None else "sink worker closed its socket"
        )
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(("error", "unavailable", self.dead))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SinkWorkerError(self.dead))
        self._pending.clear()
        if not self._closing and self.on_death is not None:
            self.on_death(self.dead)

    def send(
        self, eventhub: str, consumer_group: str, partition_id: str, items: list[Any]
    ) -> asyncio.Future[bool]:
        """Queue a batch; the future becomes True once every row is stored or dead-lettered, False if the
        worker gave up (shutdown), SinkWorkerError if the worker died. Batches are confirmed in the order
        they were sent."""
        if self.dead is not None or self._writer is None:
            raise SinkWorkerError(self.dead or "sink worker not started")
        self._next_id += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self._writer.write(_frame(("batch", self._next_id, eventhub, consumer_group, partition_id, items)))
        return future

    async def submit(self, eventhub: str, consumer_group: str, partition_id: str, items: list[Any]) -> bool:
        return await self.send(eventhub, consumer_group, partition_id, items)

    def give_up(self) -> None:
        if self._writer is not None and self.dead is None:
            self._writer.write(_frame(("give_up",)))

    async def close(self, timeout: float = 30.0) -> int | None:
        """EOF to the worker, then wait for it to finish its write and close the sink."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        code = None
        if self.process is not None:
            try:
                code = await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("sink worker %d did not exit in %.0f s: killed", self.process.pid, timeout)
                self.process.kill()
                code = await asyncio.to_thread(self.process.wait)
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
        return code


# -- worker side --------------------------------------------------------------------------------------------
class _Worker:
    def __init__(self, spec: WorkerSpec, writer: asyncio.StreamWriter) -> None:
        from enginehub.ingest.writer import ConfirmingWriter

        self.spec = spec
        self.out = writer
        self.metrics = Metrics()
        self.sink = spec.sink_factory()
        self.rules = spec.rules_factory()
        self.writer = ConfirmingWriter(
            self.sink,
            self.metrics,
            sleep=self._sleep,
            retry_initial=spec.retry_initial,
            retry_max=spec.retry_max,
            max_row_attempts=spec.max_row_attempts,
        )
        self.queue: list[tuple[Any, ...]] = []
        self.wake = asyncio.Event()
        self.eof = False
        self.given_up = False

    def send(self, obj: Any) -> None:
        self.out.write(_frame(obj))

    def report(self) -> None:
        snapshot: dict[str, Any] = {name: getattr(self.metrics, name) for name in WORKER_COUNTERS}
        snapshot["sink_down"] = self.metrics.sink_down
        self.send(("metrics", snapshot))

    async def _sleep(self, seconds: float) -> None:
        """The writer's backoff: report the outage first, so the parent's metrics show it."""
        self.report()
        await asyncio.sleep(seconds)

    async def read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            msg = await _read(reader)
            if msg is None:
                break
            if msg[0] == "batch":
                self.queue.append(msg)
                self.wake.set()
            elif msg[0] == "give_up":
                self.given_up = True
        self.eof = True
        self.wake.set()

    async def serve(self) -> None:
        last_start = -1e18
        linger = self.spec.write_linger
        while True:
            if self.eof:
                if self.queue:
                    LOG.info("receiving process gone: %d queued batch(es) dropped", len(self.queue))
                return
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = last_start + linger - time.monotonic()
            if wait > 0 and not self.given_up:
                await asyncio.sleep(wait)
            last_start = time.monotonic()
            group, self.queue = self.queue, []
            rows: list[Any] = []
            dls: list[Any] = []
            for _, _, eventhub, cg, pid, items in group:
                routed, unreadable = route_packed(items, eventhub, cg, pid, self.rules)
                rows += routed.rows
                dls += routed.dead_letters
                dls += unreadable
                self.metrics.note_unmatched(pid, routed.unmatched, self.rules.unmatched)
            ok = await self.writer.write(rows, dls, give_up=lambda: self.given_up or self.eof)
            self.report()
            for msg in group:
                self.send(("done", msg[1], ok))


async def _worker_main(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    spec = await _read(reader)
    if not isinstance(spec, WorkerSpec):
        sys.stderr.write(f"sink worker: expected a WorkerSpec first, got {type(spec).__name__}\n")
        return 2
    logging.basicConfig(
        level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s [sink worker]: %(message)s"
    )
    try:
        worker = _Worker(spec, writer)
        await asyncio.to_thread(worker.sink.open, worker.rules.tables())
    except Exception as exc:
        kind = "config" if isinstance(exc, SinkConfigError) else "unavailable"
        writer.write(_frame(("error", kind, str(exc))))
        await writer.drain()
        return 1
    worker.send(("ready",))
    reading = asyncio.create_task(worker.read_loop(reader))
    try:
        await worker.serve()
    finally:
        reading.cancel()
        worker.sink.close()
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="ingest sink worker (started by `ingest`, not by hand)")
    parser.add_argument("--fd", type=int, required=True, help="the socket inherited from the parent")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=DEFAULT_LOOP)
    parser.add_argument("--parent-pid", type=int, help="the node's pid: exit at once if it is gone already")
    args = parser.parse_args(argv)
    # the parent drives the stop (EOF on the socket, after its drain): Ctrl-C and a SIGTERM to the whole
    # process group (systemd, `timeout`, job control) reach us too and must not end us half-way; and if
    # the parent is killed, the kernel kills us (we ignore SIGTERM, so SIGKILL)
    ignore_stop_signals()
    die_with_parent(signal.SIGKILL, args.parent_pid)
    from enginehub.ingest.consumer import tune_gc

    tune_gc()
    try:
        return run(_worker_main(args.fd), args.event_loop)
    finally:
        logging.shutdown()


if __name__ == "__main__":
    # run the package module's main, not this __main__ copy: the spec unpickles to the package's classes
    from enginehub.ingest.worker import main as _main

    sys.exit(_main())
