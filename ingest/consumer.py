"""The ingestion consumer: EventHubConsumerClient (aio) + injected checkpoint store + injected sink.

Per partition the SDK hands us batches (``receive_batch``: at most ``batch_size`` events, or whatever
arrived within ``batch_wait`` seconds). For each batch: rules -> rows and dead letters -> write until the
sink confirms every row -> only then ``update_checkpoint(last event)``. While the sink is down the handler
keeps retrying the same batch, so the SDK stops handing out events for that partition (its buffer is
bounded by ``prefetch`` + one batch): memory stays bounded and the checkpoint never passes an unwritten
event. When the sink returns, the batch is written, checkpointed, and consumption resumes.

Load balancing uses the SDK's own algorithm with tight defaults (``load_balancing_interval`` 1.5 s,
``ownership_expiry`` 5 s instead of 30 s / 180 s): a crashed node's partitions are claimable 5 s after its
last renewal and claimed within one interval (+20 % jitter) of that, i.e. within about 7 s.

Checkpoints are coalesced per partition: the first confirmed batch is checkpointed at once, and later
ones at most every ``checkpoint_interval`` seconds (the newest confirmed batch wins; a timer writes it when
no newer batch comes). A checkpoint write costs far more than its batch (a file or blob replaced), and the
rows are idempotent, so a crash costs at most that interval of re-reading, never a loss or a duplicate.
The pending checkpoint is always written before a partition is closed and before the client is closed.

Graceful stop (``request_stop``/SIGTERM): new batches are no longer processed (they stay unCheckpointed
and go to the next owner), the batches in flight are finished and checkpointed (bounded by
``drain_timeout``), then the client is closed. Closing is how the SDK releases ownership: there is no
public release call, but ``EventHubConsumerClient.close()`` stops the EventProcessor, whose partition
tasks end in ``_close_consumer`` -> ``OwnershipManager.release_ownership``, which claims each still-valid
ownership with ``owner_id = ""`` so other nodes take it at their next balancing cycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enginehub.ingest import lazyevents
from enginehub.ingest.metrics import Metrics
from enginehub.ingest.model import REDUNDANT_SYSTEM_PROPERTIES, DeadLetter, EventRecord, jsonable
from enginehub.ingest.model import as_text as _text
from enginehub.ingest.reconnect import BackoffPolicy, for_client, install
from enginehub.ingest.rules import RuleSet, route_batch
from enginehub.ingest.sinks.base import Sink
from enginehub.ingest.worker import SinkWorker, SinkWorkerError, WorkerSpec, pack_events
from enginehub.ingest.writer import ConfirmingWriter

LOG = logging.getLogger(__name__)

DEVICE_ID_KEYS = (b"iothub-connection-device-id",)


@dataclass
class ConsumerOptions:
    consumer_group: str = "$Default"
    batch_size: int = 500
    batch_wait: float = 0.5
    prefetch: int = 1000
    load_balancing_interval: float = 1.5
    ownership_expiry: float = 5.0
    owner_id: str | None = None
    starting_position: str | int = "-1"  # "-1" = earliest, "@latest" = only new events
    drain_timeout: float = 30.0
    retry_initial: float = 0.2
    retry_max: float = 5.0
    max_row_attempts: int = 5
    sink_threads: int = 1
    track_lag: bool = True
    #: where the lag metric's newest sequence number comes from. 0: the SDK's per-event runtime metric
    #: (``track_last_enqueued_event_properties``: every event carries it, ~4-8 µs of the SDK's CPU per
    #: event); > 0: every that many seconds one ``get_partition_properties`` per owned partition, and
    #: receiving without the runtime metric. Either way only with ``track_lag``.
    lag_interval: float = 0.0
    checkpoint_interval: float = 1.0  # 0 = checkpoint every batch
    write_linger: float = 0.02  # min seconds between the starts of two writes in a stream (0 = none)
    #: with the sink worker: batches of one partition in flight at once (sent, not yet confirmed). The SDK
    #: hands a partition its next batch only when the handler returns; with 1 it waits for each batch's
    #: round trip through the worker, with more it returns once the batch is sent. Checkpoints still
    #: follow confirmations, in order; memory stays bounded (depth x batch size + prefetch per partition).
    pipeline_depth: int = 3
    #: seconds an owned partition may go without any call from the SDK before a warning that Event Hubs is
    #: not answering (0 = no warning; at least 3 x ``batch_wait`` is used). While connected, the SDK calls
    #: the handler at least every ``batch_wait`` (an empty batch when idle); while it cannot connect it
    #: calls nothing, and azure-eventhub 5.15 retries at once without logging (ingest/README.md).
    silence_warning: float = 15.0
    #: cap (seconds) of the capped exponential backoff while Event Hubs refuses connections (0 = the SDK's
    #: own retry, which spins a CPU in azure-eventhub 5.15; ingest/reconnect.py). Also the longest wait
    #: between the endpoint answering again and the next connect.
    reconnect_cap: float = 2.0
    #: hand the handler events whose SDK wrapper (``AmqpAnnotatedMessage``) is built on first use
    #: (``enginehub.ingest.lazyevents``): the same values, ~17 % less CPU in the receiving process
    lazy_events: bool = True

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if self.batch_wait <= 0:
            raise ValueError("batch wait must be > 0 seconds")
        if self.load_balancing_interval <= 0:
            raise ValueError("load balancing interval must be > 0 seconds")
        if self.ownership_expiry <= self.load_balancing_interval * 1.2:
            raise ValueError(
                f"ownership expiry ({self.ownership_expiry} s) must exceed the load balancing interval "
                f"plus its 20 % jitter ({self.load_balancing_interval * 1.2:.1f} s), or owners flap"
            )
        if self.checkpoint_interval < 0 or self.write_linger < 0:
            raise ValueError("checkpoint interval and write linger must be >= 0 seconds")
        if self.lag_interval < 0:
            raise ValueError("lag interval must be >= 0 seconds (0 = the SDK's per-event runtime metric)")
        if self.reconnect_cap < 0:
            raise ValueError("reconnect cap must be >= 0 seconds (0 = off)")
        if self.silence_warning < 0:
            raise ValueError("silence warning must be >= 0 seconds (0 = off)")
        if self.prefetch < 1 or self.sink_threads < 1 or self.max_row_attempts < 1 or self.pipeline_depth < 1:
            raise ValueError("prefetch, sink threads, max row attempts and pipeline depth must be >= 1")


#: gen-0 threshold for a consumer process (CPython's default is 700)
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect less often: each event allocates a few dozen short-lived containers and the SDK keeps
    ``prefetch`` events per partition alive, so with the default threshold (700) the collector ran every
    dozen events or so and kept re-scanning those buffers (about 8 CPU-us/event of ~105 in the benchmark;
    ~1 with this).
    Process-wide: called by the ``ingest`` CLI (and the benchmark, for every variant alike)."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)


def _body_bytes(event: Any) -> bytes:
    body = event.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    try:
        parts = list(body)
    except TypeError:
        return str(body).encode("utf-8")
    if len(parts) == 1 and type(parts[0]) is bytes:  # the usual DATA body: one section
        return parts[0]
    if all(isinstance(p, bytes | bytearray) for p in parts):
        return b"".join(parts)
    return event.body_as_str().encode("utf-8")


_MESSAGE_PROPERTIES = ("correlation_id", "user_id", "to", "subject", "reply_to", "group_id")
_MESSAGE_PROPERTY_KEYS = tuple((name, name.replace("_", "-").encode()) for name in _MESSAGE_PROPERTIES)


def to_record(event: Any, eventhub: str, consumer_group: str, partition_id: str) -> EventRecord:
    """An SDK ``EventData`` as an :class:`EventRecord` (bytes keys/values decoded).

    Reads the public ``raw_amqp_message`` (annotations, properties, application properties) directly:
    ``EventData.system_properties`` rebuilds a dict on first access and costs more than the rest of this
    function together. ``system_properties`` here = the service/IoT Hub annotations (less the ones stored
    as top-level metadata) plus the AMQP message properties that are set.
    """
    raw = getattr(event, "raw_amqp_message", None)
    if raw is None:  # not an SDK EventData (tests): use the EventData-level properties
        system = dict(event.system_properties or {})
        app = event.properties or {}
        message_id, content_type = event.message_id, event.content_type
    else:
        system = dict(raw.annotations or {})
        app = raw.application_properties or {}
        mprops = raw.properties
        message_id = content_type = None
        if mprops is not None:
            message_id, content_type = mprops.message_id, mprops.content_type
            for name, key in _MESSAGE_PROPERTY_KEYS:
                value = getattr(mprops, name, None)
                if value:
                    system[key] = value
    return make_record(
        eventhub,
        consumer_group,
        partition_id,
        sequence_number=int(event.sequence_number),
        offset=str(event.offset),
        enqueued_time=event.enqueued_time,
        body=_body_bytes(event),
        message_id=message_id,
        content_type=content_type,
        system=system,
        app=app,
    )


def make_record(
    eventhub: str,
    consumer_group: str,
    partition_id: str,
    *,
    sequence_number: int,
    offset: str,
    enqueued_time: Any,
    body: bytes,
    message_id: Any,
    content_type: Any,
    system: dict[Any, Any],
    app: dict[Any, Any],
) -> EventRecord:
    """The record of one event from its AMQP parts (``system``: message annotations plus the message
    properties that are set, keyed as in AMQP): shared by :func:`to_record` and the sink worker."""
    props = {str(_text(k)): jsonable(v) for k, v in app.items()} if app else {}
    device = None
    for key in DEVICE_ID_KEYS:
        if key in system:
            device = _text(system[key])
            break
    if device is None and props:
        device = _text(props.get("device_id") or props.get("iothub-connection-device-id"))
    return EventRecord(
        eventhub=eventhub,
        consumer_group=consumer_group,
        partition_id=partition_id,
        sequence_number=sequence_number,
        offset=offset,
        enqueued_time=enqueued_time,
        body=body,
        message_id=_text(message_id),
        device_id=device,
        partition_key=_text(system.get(b"x-opt-partition-key")),
        content_type=_text(content_type),
        properties=props,
        system_properties={
            str(_text(k)): jsonable(v) for k, v in system.items() if k not in REDUNDANT_SYSTEM_PROPERTIES
        },
    )


def read_events(
    events: list[Any], eventhub: str, consumer_group: str, partition_id: str
) -> tuple[list[EventRecord], list[DeadLetter]]:
    """``to_record`` for a batch; an event the SDK object cannot be read from (unexpected body type,
    broken properties) becomes a dead letter with the reason instead of failing the whole partition."""
    records: list[EventRecord] = []
    dead: list[DeadLetter] = []
    for event in events:
        try:
            records.append(to_record(event, eventhub, consumer_group, partition_id))
        except Exception as exc:
            seq_value = getattr(event, "sequence_number", None)
            seq = int(seq_value) if isinstance(seq_value, int) else -1
            try:
                raw = _body_bytes(event)
            except Exception:
                raw = repr(getattr(event, "body", b""))[:4096].encode("utf-8", "replace")
            where = (eventhub, consumer_group, partition_id)
            offset = str(getattr(event, "offset", ""))
            dead.append(DeadLetter.unreadable(where, seq, offset, raw, exc))
    return records, dead


@dataclass
class _CheckpointState:
    """Per partition: when the last checkpoint was taken, the confirmed one not yet written, its timer."""

    last: float = -1e18
    pending: tuple[Any, Any] | None = None  # (partition context, last event of a confirmed batch)
    timer: asyncio.Task[None] | None = None


class IngestConsumer:
    """``await consumer.run()`` until ``request_stop()``; returns 0 when every in-flight batch was
    written and checkpointed, 3 when the drain timed out (nothing lost: unconfirmed batches are simply not
    checkpointed and are read again by the next owner)."""

    def __init__(
        self,
        client_factory: Callable[..., Any],
        checkpoint_store: Any,
        sink: Sink,
        rules: RuleSet,
        options: ConsumerOptions | None = None,
        metrics: Metrics | None = None,
        worker: WorkerSpec | None = None,
    ) -> None:
        self.options = options or ConsumerOptions()
        self.worker_spec = worker
        self.worker: SinkWorker | None = None
        self.options.validate()
        self._client_factory = client_factory
        self.checkpoint_store = checkpoint_store
        self.sink = sink
        self.rules = rules
        self.metrics = metrics or Metrics()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.sink_threads, thread_name_prefix="ingest-sink"
        )
        self.writer = ConfirmingWriter(
            sink,
            self.metrics,
            run=self._in_thread,
            retry_initial=self.options.retry_initial,
            retry_max=self.options.retry_max,
            max_row_attempts=self.options.max_row_attempts,
        )
        self._pending: list[tuple[list[Any], list[Any], asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_flush = -1e18
        self._draining = False
        self._give_up = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._failed = False
        self._checkpoints: dict[str, _CheckpointState] = {}
        self._windows: dict[str, list[asyncio.Task[bool]]] = {}  # per partition: batches in the worker
        self._broken: set[str] = set()  # partitions with an unconfirmed batch: no later checkpoint
        self._heard: dict[str, float] = {}  # per owned partition: when the SDK last called us (monotonic)
        self._busy: set[str] = set()  # partitions whose handler runs now (their silence is ours)
        self._silent: set[str] = set()  # partitions warned about, until the SDK calls again
        self.client: Any = None
        self.owner_id: str | None = None

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def request_stop(self) -> None:
        """Graceful stop: finish the batches in flight, checkpoint, release ownership (signal-safe)."""
        if not self._stop.is_set():
            LOG.info("stop requested: finishing %d batch(es) in flight", self._inflight)
        self._draining = True
        self._stop.set()

    # -- SDK callbacks ------------------------------------------------------------------------------------
    async def _on_batch(self, ctx: Any, events: list[Any]) -> None:
        pid = ctx.partition_id
        self._heard_from(pid)
        self._busy.add(pid)
        try:
            await self._handle_batch(ctx, events)
        finally:
            self._busy.discard(pid)
            self._heard[pid] = time.monotonic()

    def _heard_from(self, pid: str) -> None:
        now = time.monotonic()
        if pid in self._silent:
            self._silent.discard(pid)
            LOG.info(
                "partition %s: Event Hubs answers again after %.0f s", pid, now - self._heard.get(pid, now)
            )
        self._heard[pid] = now

    def check_silence(self, now: float | None = None) -> list[str]:
        """Warn once about each owned partition the SDK has not called for ``silence_warning`` seconds
        (not even with the empty batch it hands an idle partition every ``batch_wait``), unless our own
        handler is what holds it. Returns the partitions newly warned about."""
        limit = self._silence_limit()
        if not limit:
            return []
        now = time.monotonic() if now is None else now
        warned = []
        for pid, last in sorted(self._heard.items()):
            if pid in self._busy or pid in self._silent or now - last < limit:
                continue
            self._silent.add(pid)
            warned.append(pid)
            LOG.warning(
                "partition %s: nothing from Event Hubs for %.0f s, not even an empty batch: is the namespace "
                "reachable? (the SDK keeps reconnecting; nothing is lost, the partition resumes from its "
                "checkpoint)",
                pid,
                now - last,
            )
        return warned

    def _silence_limit(self) -> float:
        if not self.options.silence_warning:
            return 0.0
        return max(self.options.silence_warning, 3 * self.options.batch_wait)

    async def _watch_silence(self) -> None:
        limit = self._silence_limit()
        while True:
            await asyncio.sleep(min(limit / 3, 5.0))
            self.check_silence()

    async def _handle_batch(self, ctx: Any, events: list[Any]) -> None:
        pid = ctx.partition_id
        if self._draining:
            return  # not processed, not checkpointed: the next owner reads these again
        self._note_lag(ctx)
        if not events:
            return
        if self.worker is not None:
            await self._send_to_worker(ctx, events)
            return
        self._inflight += 1
        self._idle.clear()
        started = time.monotonic()
        try:
            eventhub = ctx.eventhub_name
            records, unreadable = read_events(events, eventhub, ctx.consumer_group, pid)
            routed = route_batch(records, self.rules)
            routed.dead_letters.extend(unreadable)
            self.metrics.events += len(events)
            self.metrics.note_unmatched(pid, routed.unmatched, self.rules.unmatched)
            confirmed = await self._write(routed.rows, routed.dead_letters)
            await self._after_write(ctx, events, confirmed, started)
        finally:
            self._done_one()

    def _done_one(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _after_write(self, ctx: Any, events: list[Any], confirmed: bool, started: float) -> bool:
        """Checkpoint a confirmed batch (coalesced); an unconfirmed one is only reported."""
        pid = ctx.partition_id
        if not confirmed:
            LOG.warning(
                "partition %s: batch %d..%d not confirmed before shutdown; not checkpointed",
                pid,
                events[0].sequence_number,
                events[-1].sequence_number,
            )
            return False
        last = getattr(events[-1], "sequence_number", None)
        if isinstance(last, int):
            self.metrics.partition(pid).last_written = last
        await self._checkpoint(ctx, events[-1])
        self.metrics.observe_batch(time.monotonic() - started)
        return True

    async def _send_to_worker(self, ctx: Any, events: list[Any]) -> None:
        """Send the batch to the sink worker and return once the partition has fewer than
        ``pipeline_depth`` batches in flight; its confirmation is awaited by a task that checkpoints it
        after every earlier batch of the partition was confirmed (never past an unconfirmed one)."""
        assert self.worker is not None
        pid = ctx.partition_id
        window = self._windows.setdefault(pid, [])
        while True:
            window[:] = [t for t in window if not t.done()]
            if len(window) < self.options.pipeline_depth:
                break
            await asyncio.wait({window[0]})
        if self._draining:
            return  # stop requested meanwhile: not sent, not checkpointed (the next owner reads it)
        self._inflight += 1
        self._idle.clear()
        started = time.monotonic()
        eventhub = ctx.eventhub_name
        items = pack_events(events, eventhub, ctx.consumer_group, pid)
        self.metrics.events += len(events)
        try:
            future = self.worker.send(eventhub, ctx.consumer_group, pid, items)
        except SinkWorkerError as exc:
            self._worker_died(str(exc))
            self._done_one()
            return
        previous = window[-1] if window else None
        window.append(asyncio.create_task(self._confirm(ctx, events, future, previous, started)))

    async def _confirm(
        self,
        ctx: Any,
        events: list[Any],
        future: asyncio.Future[bool],
        previous: asyncio.Task[bool] | None,
        started: float,
    ) -> bool:
        try:
            try:
                confirmed = await future
            except SinkWorkerError as exc:
                self._worker_died(str(exc))
                confirmed = False
            if previous is not None and not await previous:
                confirmed = False  # an earlier batch of this partition is unconfirmed: no checkpoint past it
            if ctx.partition_id in self._broken:  # ... even one already gone from the window
                confirmed = False
            if not confirmed:
                self._broken.add(ctx.partition_id)
            return await self._after_write(ctx, events, confirmed, started)
        finally:
            self._done_one()

    async def _wait_window(self, pid: str, timeout: float | None = None) -> None:
        """Let the partition's batches in the worker be confirmed (and checkpointed) or fail; after
        ``timeout`` the rest are abandoned (not checkpointed: read again by the next owner)."""
        window = self._windows.pop(pid, [])
        if window:
            _, pending = await asyncio.wait(window, timeout=timeout)
            for task in pending:
                task.cancel()

    def _worker_died(self, why: str) -> None:
        """The sink worker went away (between batches, or under one): stop with exit code 1."""
        if not self._failed:
            LOG.error("%s: stopping (batches in flight are not checkpointed)", why)
        self._failed = True
        self.request_stop()

    async def _write(self, rows: list[Any], dead_letters: list[Any]) -> bool:
        """Group commit: batches of all partitions that arrive while a write is in flight are written
        together in the next transaction (one commit/fsync instead of one per partition). Each caller
        still learns whether ITS rows were confirmed before it checkpoints."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, dead_letters, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="ingest-flush")
        return await future

    async def _flush(self) -> None:
        linger = self.options.write_linger
        while self._pending:
            # Linger: in a stream, start a write at most every `write_linger` seconds. Meanwhile the SDK
            # buffers each waiting partition's next events, so batches grow and the per-batch costs (SDK
            # callback, thread hop, commit) are shared by many events. An isolated batch is not delayed.
            wait = self._last_flush + linger - time.monotonic()
            if wait > 0 and not self._draining:
                await asyncio.sleep(wait)
            self._last_flush = time.monotonic()
            group, self._pending = self._pending, []
            rows = [row for item in group for row in item[0]]
            dls = [dl for item in group for dl in item[1]]
            try:
                ok = await self.writer.write(rows, dls, give_up=lambda: self._give_up)
            except BaseException as exc:
                for *_, future in group:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                raise
            for *_, future in group:
                if not future.done():
                    future.set_result(ok)

    # -- checkpoints (only ever for confirmed batches; coalesced per partition) ----------------------------
    async def _checkpoint(self, ctx: Any, event: Any) -> None:
        """Checkpoint ``event`` (the last of a confirmed batch) now, or leave it to the partition's timer
        when the last checkpoint is younger than ``checkpoint_interval``."""
        state = self._checkpoints.get(ctx.partition_id)
        if state is None:
            state = self._checkpoints[ctx.partition_id] = _CheckpointState()
        interval = self.options.checkpoint_interval
        if state.timer is None and time.monotonic() - state.last >= interval:
            state.pending = None
            await self._write_checkpoint(state, ctx, event)
            return
        state.pending = (ctx, event)
        if state.timer is None:
            state.timer = asyncio.create_task(self._checkpoint_later(state), name="ingest-checkpoint")

    async def _checkpoint_later(self, state: _CheckpointState) -> None:
        try:
            while state.pending is not None:
                delay = state.last + self.options.checkpoint_interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if state.pending is None:
                    break
                (ctx, event), state.pending = state.pending, None
                await self._write_checkpoint(state, ctx, event)
        finally:
            state.timer = None

    async def _write_checkpoint(self, state: _CheckpointState, ctx: Any, event: Any) -> None:
        pid = ctx.partition_id
        state.last = time.monotonic()
        try:
            await ctx.update_checkpoint(event)
        except Exception as exc:  # rows are idempotent: an older checkpoint only means re-reading
            self.metrics.checkpoint_errors += 1
            if state.pending is None:  # retried by the timer unless a newer batch supersedes it
                state.pending = (ctx, event)
            LOG.warning("partition %s: checkpoint failed (%s); will be retried or covered", pid, exc)
            return
        part = self.metrics.partition(pid)
        if isinstance(event.sequence_number, int):
            part.last_sequence = event.sequence_number
        part.checkpoints += 1

    async def _flush_checkpoint(self, pid: str) -> None:
        """Write the partition's pending checkpoint now (before the partition or the client closes)."""
        state = self._checkpoints.get(pid)
        if state is None:
            return
        timer = state.timer
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        if state.pending is not None:
            (ctx, event), state.pending = state.pending, None
            await self._write_checkpoint(state, ctx, event)
            state.pending = None  # a failure here is logged and counted; nothing more can be done

    async def _flush_checkpoints(self) -> None:
        for pid in list(self._checkpoints):
            await self._flush_checkpoint(pid)

    def _note_lag(self, ctx: Any) -> None:
        if not self.options.track_lag or self.options.lag_interval:
            return
        try:
            props = ctx.last_enqueued_event_properties
        except Exception:  # not tracked by this SDK/service
            return
        if props and props.get("sequence_number") is not None:
            self.metrics.partition(ctx.partition_id).last_enqueued = int(props["sequence_number"])

    async def _poll_lag(self) -> None:
        """``lag_interval`` > 0: the newest sequence number of each owned partition from the partition
        properties, every ``lag_interval`` seconds (a failed read is logged once and retried)."""
        failing: set[str] = set()
        while True:
            await asyncio.sleep(self.options.lag_interval)
            for pid in sorted(self.metrics.owned):
                try:
                    props = await self.client.get_partition_properties(pid)
                except Exception as exc:
                    if pid not in failing:
                        LOG.warning("partition %s: reading its properties for the lag failed: %s", pid, exc)
                    failing.add(pid)
                    continue
                failing.discard(pid)
                seq = props.get("last_enqueued_sequence_number")
                if isinstance(seq, int) and pid in self.metrics.owned:
                    self.metrics.partition(pid).last_enqueued = seq

    async def _on_init(self, ctx: Any) -> None:
        self._broken.discard(ctx.partition_id)  # a new claim starts from the last checkpoint
        self._heard_from(ctx.partition_id)
        self.metrics.owned.add(ctx.partition_id)
        LOG.info("partition %s claimed by %s", ctx.partition_id, self.owner_id)

    async def _on_close(self, ctx: Any, reason: Any) -> None:
        await self._wait_window(ctx.partition_id)
        await self._flush_checkpoint(ctx.partition_id)
        self.metrics.owned.discard(ctx.partition_id)
        self._heard.pop(ctx.partition_id, None)
        self._silent.discard(ctx.partition_id)
        LOG.info("partition %s closed (%s)", ctx.partition_id, getattr(reason, "name", reason))

    async def _on_error(self, ctx: Any, error: Exception) -> None:
        where = f"partition {ctx.partition_id}" if ctx is not None else "load balancing"
        LOG.warning("%s: %s: %s", where, type(error).__name__, error)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _apply_owner_id(self) -> None:
        """The SDK has no owner-id option: EventProcessor draws a uuid4 in __init__. ``receive_batch``
        creates the processor and registers it before its first await, so it can be set here, before the
        first claim. Without the private attributes the SDK's uuid stays (logged)."""
        processors = list(getattr(self.client, "_event_processors", {}).values())
        if not processors:
            LOG.warning("could not find the SDK's event processor; owner id not applied")
            return
        processor = processors[0]
        if self.options.reconnect_cap:
            policy = BackoffPolicy(cap=self.options.reconnect_cap)
            if not install(processor, for_client(self.client, policy)):
                LOG.warning("SDK internals changed: no backoff while Event Hubs refuses connections")
        if self.options.lazy_events and not lazyevents.install(processor):
            LOG.warning("SDK internals changed: received events are built by the SDK as usual")
        if self.options.owner_id:
            manager = getattr(processor, "_ownership_manager", None)
            if manager is None or not hasattr(processor, "_id"):
                LOG.warning("SDK internals changed: --owner-id %s not applied", self.options.owner_id)
            else:
                processor._id = self.options.owner_id
                manager.owner_id = self.options.owner_id
        self.owner_id = getattr(processor, "_id", None)

    async def run(self) -> int:
        opts = self.options
        if self.worker_spec is not None:
            self.worker = SinkWorker(self.worker_spec, self.metrics, on_death=self._worker_died)
            await self.worker.start()
        else:
            await self._in_thread(self.sink.open, self.rules.tables())
        self.client = self._client_factory(
            checkpoint_store=self.checkpoint_store,
            load_balancing_interval=opts.load_balancing_interval,
            partition_ownership_expiration_interval=opts.ownership_expiry,
        )
        receive = asyncio.create_task(
            self.client.receive_batch(
                on_event_batch=self._on_batch,
                max_batch_size=opts.batch_size,
                max_wait_time=opts.batch_wait,
                starting_position=opts.starting_position,
                prefetch=opts.prefetch,
                track_last_enqueued_event_properties=opts.track_lag and not opts.lag_interval,
                on_partition_initialize=self._on_init,
                on_partition_close=self._on_close,
                on_error=self._on_error,
            ),
            name="ingest-receive",
        )
        await asyncio.sleep(0)  # let receive_batch create its EventProcessor (no I/O yet)
        self._apply_owner_id()
        LOG.info("consumer %s started (consumer group %s)", self.owner_id, opts.consumer_group)
        watch = asyncio.create_task(self._watch_silence()) if opts.silence_warning else None
        lag = asyncio.create_task(self._poll_lag()) if opts.track_lag and opts.lag_interval else None
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if receive in done:
            stop_wait.cancel()
            exc = receive.exception()
            LOG.error("receiving ended unexpectedly: %r", exc)
            code = 1
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), opts.drain_timeout)
        except TimeoutError:
            LOG.warning(
                "drain timeout (%.0f s): %d batch(es) still unconfirmed and NOT checkpointed (nothing lost: "
                "they will be read again)",
                opts.drain_timeout,
                self._inflight,
            )
            self._give_up = True
            if self.worker is not None:
                self.worker.give_up()
            code = code or 3
        for pid in list(self._windows):  # done after the drain, or resolving now that the worker gives up
            await self._wait_window(pid, timeout=10.0)
        await self._flush_checkpoints()  # confirmed batches only: unconfirmed ones never reach `pending`
        await self.client.close()  # stops the processor -> releases ownership (owner_id "")
        receive.cancel()
        side = [t for t in (watch, lag) if t is not None]
        for t in side:
            t.cancel()
        await asyncio.gather(receive, *side, return_exceptions=True)
        self._executor.shutdown(wait=True)
        if self.worker is not None:
            await self.worker.close()
        else:
            await asyncio.to_thread(self.sink.close)
        if self._failed:
            code = 1
        LOG.info("consumer stopped: %s", self.metrics.log_line())
        return code
