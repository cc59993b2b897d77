"""Conformance matrix: every public receive and send path of azure-eventhub, sync and aio, the way users call
them, against the emulator.

Each receive case reads N events that are already available (appended one per ``send_event``, or in
batches) and asserts that all N arrive, each once, in partition order, within ``RECEIVE_BOUND_S`` (a real
namespace serves a consumer thousands of events per second). Each send case sends N events through one
public send path and checks, on the service side, that all N were stored once, in send order, on the
partition the routing asks for (a partition key routes every event to one partition, the same one through
every send path). The bounds are assertions, not advice: do not widen them to make a case pass.

One shape is a known limit of the SDK itself, not of any service: the sync ``EventProcessor`` serves its
partitions round-robin on one thread, and each empty partition blocks that thread for the pyamqp socket
timeout (0.2 s) per round, while a per-event ``receive`` hands out one event per partition per round
(Azure/azure-sdk-for-python#25977, #26051). With events on one partition of four the sync per-event
consumer gets ~1.7 events/s from real Event Hubs as from this emulator; the case is kept as a strict xfail
(it turns red the day the SDK fixes it), next to a test that the emulator itself had put every event on
the wire within the bound.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import EventHubConsumerClient as AioConsumer
from azure.eventhub.aio import EventHubProducerClient as AioProducer
from eh_sdk_helpers import Running, poll

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.message import decode_event
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator

pytestmark = pytest.mark.integration

N = 1000
PARTITIONS = ("0", "1", "2", "3")
RECEIVE_BOUND_S = 5.0  # N available events, all delivered
SEND_SINGLE_BOUND_S = 10.0  # N sequential send_event round trips (~2-10 ms each against Azure)
SEND_BATCH_BOUND_S = 5.0  # N events in batches / buffered
KEY = "engine-0042"


# --------------------------------------------------------------------------- the seeded namespace
@dataclass
class Seeded:
    running: Running
    # hub -> partition -> [(sequence_number, body)] as stored
    stored: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)

    def cs(self, hub: str) -> str:
        return self.running.emulator.connection_string_for(hub)

    def events_out(self) -> int:
        return self.running.thread.call(lambda: self.running.emulator.stats["events_out"])


def stored_events(running: Running, hub: str) -> dict[str, list[Any]]:
    """Service-side truth, read without side effects: partition -> StoredEvent list."""

    def read() -> dict[str, list[Any]]:
        h = running.emulator.store.hub(hub)
        return {pid: p.read(p.begin_sequence_number, 1 << 30) for pid, p in h.partitions.items()}

    return running.thread.call(read)


def stored_bodies(running: Running, hub: str) -> dict[str, list[tuple[int, str]]]:
    return {
        pid: [(e.sequence_number, decode_event(e.payload).data[0].decode()) for e in events]
        for pid, events in stored_events(running, hub).items()
    }


def _seed_single(cs: str, prefix: str, partition_id: str | None = None) -> None:
    with EventHubProducerClient.from_connection_string(cs, retry_total=0) as p:
        for i in range(N):
            p.send_event(EventData(f"{prefix}{i}"), partition_id=partition_id)


def _seed_batched(cs: str, prefix: str) -> None:
    with EventHubProducerClient.from_connection_string(cs, retry_total=0) as p:
        per = N // 8
        for b in range(8):  # round-robin: two batches per partition
            batch = p.create_batch()
            for i in range(b * per, (b + 1) * per):
                batch.add(EventData(f"{prefix}{i}"))
            p.send_batch(batch)


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    config = EmulatorConfig.simple(hubs=["single", "batched", "skewed", "live"], partitions=4)
    emulator = EventHubsEmulator(config, port=0, http_port=0)
    thread = EmulatorThread(emulator)
    thread.start()
    running = Running(emulator, thread)
    try:
        s = Seeded(running)
        _seed_single(s.cs("single"), "s")
        _seed_batched(s.cs("batched"), "b")
        _seed_single(s.cs("skewed"), "k", partition_id="0")  # as telemetry of one device arrives
        for hub in ("single", "batched", "skewed"):
            s.stored[hub] = stored_bodies(running, hub)
            assert sum(len(v) for v in s.stored[hub].values()) == N, hub
        assert all(len(s.stored["single"][p]) == N // 4 for p in PARTITIONS)
        assert all(len(s.stored["batched"][p]) == N // 4 for p in PARTITIONS)
        yield s
    finally:
        thread.stop()


# --------------------------------------------------------------------------- receiving
@dataclass
class Received:
    events: list[tuple[str, EventData]]  # (partition id, event) in callback order
    elapsed: float | None  # seconds from receive() to the last expected event; None if never
    contexts: dict[str, Any]
    errors: list[BaseException]


def _wanted(received: list[tuple[str, EventData]], expect: int) -> bool:
    return len(received) >= expect


def sync_receive(cs: str, expect: int, *, batch: bool, timeout: float, **kw: Any) -> Received:
    got: list[tuple[str, EventData]] = []
    contexts: dict[str, Any] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    finished: list[float] = []
    lock = threading.Lock()
    client = EventHubConsumerClient.from_connection_string(
        cs, consumer_group="$Default", retry_total=0, load_balancing_interval=0.5
    )

    def take(ctx: Any, events: list[EventData]) -> None:
        with lock:
            for ev in events:
                got.append((ctx.partition_id, ev))
            contexts[ctx.partition_id] = ctx
            if not finished and _wanted(got, expect):
                finished.append(time.monotonic())
                done.set()

    def on_event(ctx: Any, event: EventData | None) -> None:
        take(ctx, [event] if event is not None else [])

    def on_event_batch(ctx: Any, events: list[EventData]) -> None:
        take(ctx, events)

    def on_error(ctx: Any, exc: BaseException) -> None:
        errors.append(exc)

    callback = {"on_event_batch": on_event_batch} if batch else {"on_event": on_event}
    target = client.receive_batch if batch else client.receive
    worker = threading.Thread(target=target, kwargs={**callback, "on_error": on_error, **kw}, daemon=True)
    t0 = time.monotonic()
    worker.start()
    try:
        done.wait(timeout)
    finally:
        client.close()
        worker.join(15)
    assert not worker.is_alive(), "the sync consumer did not return after close()"
    with lock:
        return Received(list(got), finished[0] - t0 if finished else None, dict(contexts), errors)


async def _aio_receive(cs: str, expect: int, *, batch: bool, timeout: float, **kw: Any) -> Received:
    got: list[tuple[str, EventData]] = []
    contexts: dict[str, Any] = {}
    errors: list[BaseException] = []
    done = asyncio.Event()
    finished: list[float] = []
    client = AioConsumer.from_connection_string(
        cs, consumer_group="$Default", retry_total=0, load_balancing_interval=0.5
    )

    def take(ctx: Any, events: list[EventData]) -> None:
        for ev in events:
            got.append((ctx.partition_id, ev))
        contexts[ctx.partition_id] = ctx
        if not finished and _wanted(got, expect):
            finished.append(time.monotonic())
            done.set()

    async def on_event(ctx: Any, event: EventData | None) -> None:
        take(ctx, [event] if event is not None else [])

    async def on_event_batch(ctx: Any, events: list[EventData]) -> None:
        take(ctx, events)

    async def on_error(ctx: Any, exc: BaseException) -> None:
        errors.append(exc)

    callback = {"on_event_batch": on_event_batch} if batch else {"on_event": on_event}
    target = client.receive_batch if batch else client.receive
    t0 = time.monotonic()
    task = asyncio.create_task(target(**callback, on_error=on_error, **kw))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        await client.close()
        await asyncio.wait_for(task, 15)
    return Received(list(got), finished[0] - t0 if finished else None, dict(contexts), errors)


def aio_receive(cs: str, expect: int, *, batch: bool, timeout: float, **kw: Any) -> Received:
    return asyncio.run(_aio_receive(cs, expect, batch=batch, timeout=timeout, **kw))


RECEIVERS: dict[str, Callable[..., Received]] = {"sync": sync_receive, "aio": aio_receive}


def check_delivery(
    received: Received,
    expected: dict[str, list[tuple[int, str]]],
    *,
    bound: float = RECEIVE_BOUND_S,
) -> None:
    """All expected events, each once, in partition order, within ``bound`` seconds."""
    want = sum(len(v) for v in expected.values())
    seen = len(received.events)
    assert received.elapsed is not None, (
        f"only {seen} of {want} events within the wait; errors {received.errors!r}"
    )
    per: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for pid, ev in received.events:
        per[pid].append((ev.sequence_number, ev.body_as_str()))
    assert {p: v for p, v in per.items() if v} == {p: v for p, v in expected.items() if v}, (
        "delivered events differ from the stored ones (missing, duplicated or out of order)"
    )
    assert received.elapsed <= bound, (
        f"{want} available events took {received.elapsed:.2f} s (bound {bound} s)"
    )
    assert not received.errors, received.errors


AIO_PREFETCH_1 = pytest.mark.xfail(
    strict=True,
    reason="azure-eventhub's aio receive task sleeps 0.05 s after every do_work_async "
    "(aio/_transport/_pyamqp_transport_async.py::_receive_task), and with prefetch=1 each do_work reads one "
    "transfer: at most 20 events/s per partition from any service",
)


def _matrix_case(api: str, batch: bool, mwt: float | None, prefetch: int | None, data: str) -> Any:
    marks = [AIO_PREFETCH_1] if api == "aio" and prefetch == 1 else []
    case = f"{api}-{'batch' if batch else 'event'}-mwt{mwt}-pf{prefetch}-{data}"
    return pytest.param(api, batch, mwt, prefetch, data, id=case, marks=marks)


MATRIX = [
    _matrix_case(api, batch, mwt, prefetch, data)
    for api in ("sync", "aio")
    for batch in (False, True)
    for mwt in (None, 1.0)
    for prefetch in (None, 1)
    for data in ("single", "batched")
]


@pytest.mark.parametrize(("api", "batch", "mwt", "prefetch", "data"), MATRIX)
def test_receive_matrix(
    seeded: Seeded, api: str, batch: bool, mwt: float | None, prefetch: int | None, data: str
) -> None:
    kw: dict[str, Any] = {"starting_position": "-1"}
    if mwt is not None:
        kw["max_wait_time"] = mwt
    if prefetch is not None:
        kw["prefetch"] = prefetch
    known_limit = api == "aio" and prefetch == 1  # xfail: do not wait past the bound
    timeout = RECEIVE_BOUND_S + (0.5 if known_limit else 5)
    received = RECEIVERS[api](seeded.cs(data), N, batch=batch, timeout=timeout, **kw)
    check_delivery(received, seeded.stored[data])


SKEWED = [
    pytest.param("aio", False, id="aio-event"),
    pytest.param("aio", True, id="aio-batch"),
    pytest.param("sync", True, id="sync-batch"),
    pytest.param(
        "sync",
        False,
        id="sync-event",
        marks=pytest.mark.xfail(
            strict=True,
            reason="azure-eventhub's sync EventProcessor serves partitions round-robin on one thread and "
            "each empty partition blocks it for 0.2 s a round (Azure/azure-sdk-for-python#25977, #26051): "
            "~1.7 events/s with 3 of 4 partitions empty, against real Event Hubs as here",
        ),
    ),
]


@pytest.mark.parametrize(("api", "batch"), SKEWED)
def test_receive_all_events_on_one_partition(seeded: Seeded, api: str, batch: bool) -> None:
    """The IoT Hub shape: each device's telemetry lands on one partition, others stay empty."""
    received = RECEIVERS[api](
        seeded.cs("skewed"),
        N,
        batch=batch,
        timeout=RECEIVE_BOUND_S + 1,
        starting_position="-1",
        max_wait_time=1,
    )
    check_delivery(received, seeded.stored["skewed"])


def test_sync_per_event_on_one_partition_the_emulator_fills_the_whole_credit_at_once(seeded: Seeded) -> None:
    """Our side of the known SDK limit: the emulator sends the client's whole credit (prefetch, 300) at once;
    the SDK then hands those events to ``on_event`` one per round and grants credit again only when its
    buffer is empty. Were the server the slow part, ``events_out`` would lag behind the credit."""
    prefetch = 300
    before = seeded.events_out()
    got: list[EventData] = []
    client = EventHubConsumerClient.from_connection_string(
        seeded.cs("skewed"), consumer_group="$Default", retry_total=0, load_balancing_interval=0.5
    )
    worker = threading.Thread(
        target=client.receive,
        kwargs={
            "on_event": lambda ctx, ev: got.append(ev) if ev is not None else None,
            "starting_position": "-1",
            "max_wait_time": 1,
            "prefetch": prefetch,
        },
        daemon=True,
    )
    worker.start()
    try:
        poll(lambda: got, RECEIVE_BOUND_S, "the first event")
        t_first = time.monotonic()
        poll(lambda: seeded.events_out() - before >= prefetch, 1.0, f"{prefetch} events sent by the emulator")
        on_wire = time.monotonic() - t_first
        handed_out = len(got)
    finally:
        client.close()
        worker.join(15)
    assert on_wire <= 1.0
    assert handed_out < prefetch  # the SDK's pace, not ours (if this fails the SDK got faster: revisit)
    seqs = [e.sequence_number for e in got]  # what the SDK handed out: in order, without duplicates
    assert seqs == list(range(len(seqs)))


# --------------------------------------------------------------------------- starting positions
def _expected_from(seeded: Seeded, predicate: Callable[[Any], bool], partition: str = "0") -> dict[str, list]:
    events = stored_events(seeded.running, "single")[partition]
    return {
        partition: [
            (e.sequence_number, decode_event(e.payload).data[0].decode()) for e in events if predicate(e)
        ]
    }


def _positions(seeded: Seeded) -> list[tuple[str, Any, bool, Callable[[Any], bool]]]:
    events = stored_events(seeded.running, "single")["0"]
    pivot = events[100]
    when = datetime.datetime.fromtimestamp(pivot.enqueued_time_ms / 1000, datetime.UTC)
    t = pivot.enqueued_time_ms
    return [
        ("earliest", "-1", False, lambda e: True),
        ("sequence", 100, False, lambda e: e.sequence_number > 100),
        ("sequence-inclusive", 100, True, lambda e: e.sequence_number >= 100),
        ("offset", str(pivot.offset), False, lambda e: e.sequence_number > 100),
        ("offset-inclusive", str(pivot.offset), True, lambda e: e.sequence_number >= 100),
        ("datetime", when, False, lambda e: e.enqueued_time_ms > t),
        ("datetime-inclusive", when, True, lambda e: e.enqueued_time_ms >= t),
    ]


POSITION_KINDS = [
    "earliest",
    "sequence",
    "sequence-inclusive",
    "offset",
    "offset-inclusive",
    "datetime",
    "datetime-inclusive",
]


@pytest.mark.parametrize("kind", POSITION_KINDS)
@pytest.mark.parametrize("api", ["sync", "aio"])
def test_starting_positions_on_one_partition(seeded: Seeded, api: str, kind: str) -> None:
    (_, position, inclusive, predicate) = next(p for p in _positions(seeded) if p[0] == kind)
    expected = _expected_from(seeded, predicate)
    want = len(expected["0"])
    received = RECEIVERS[api](
        seeded.cs("single"),
        want,
        batch=False,
        timeout=RECEIVE_BOUND_S + 5,
        partition_id="0",
        starting_position=position,
        starting_position_inclusive=inclusive,
    )
    check_delivery(received, expected)


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_per_partition_starting_positions(seeded: Seeded, api: str) -> None:
    """A dict of positions of every kind at once, one per partition."""
    events = stored_events(seeded.running, "single")
    p2 = events["2"][50]
    positions = {
        "0": "-1",
        "1": 200,
        "2": datetime.datetime.fromtimestamp(p2.enqueued_time_ms / 1000, datetime.UTC),
        "3": str(events["3"][10].offset),
    }
    keep = {
        "0": lambda e: True,
        "1": lambda e: e.sequence_number > 200,
        "2": lambda e: e.enqueued_time_ms > p2.enqueued_time_ms,
        "3": lambda e: e.sequence_number > 10,
    }
    expected = {
        pid: [
            (e.sequence_number, decode_event(e.payload).data[0].decode()) for e in events[pid] if keep[pid](e)
        ]
        for pid in PARTITIONS
    }
    want = sum(len(v) for v in expected.values())
    received = RECEIVERS[api](
        seeded.cs("single"), want, batch=True, timeout=RECEIVE_BOUND_S + 5, starting_position=positions
    )
    check_delivery(received, expected)


@pytest.mark.parametrize("batch", [False, True], ids=["event", "batch"])
@pytest.mark.parametrize("api", ["sync", "aio"])
def test_latest_sees_only_what_is_sent_after_it_started(seeded: Seeded, api: str, batch: bool) -> None:
    cs = seeded.cs("live")
    running = seeded.running
    before = {p: len(v) for p, v in stored_events(running, "live").items()}
    tag = f"{api}-{'b' if batch else 'e'}-"
    result: list[Received] = []

    def consume() -> None:
        result.append(
            RECEIVERS[api](cs, N, batch=batch, timeout=RECEIVE_BOUND_S + 15, starting_position="@latest")
        )

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    poll(lambda: running.receivers() == 4, 15, "4 receivers attached at @latest")
    t_sent = time.monotonic()
    _seed_batched(cs, tag)
    consumer.join(RECEIVE_BOUND_S + 30)
    (received,) = result
    after = stored_events(running, "live")
    expected = {
        pid: [
            (e.sequence_number, decode_event(e.payload).data[0].decode()) for e in after[pid][before[pid] :]
        ]
        for pid in PARTITIONS
    }
    assert sum(len(v) for v in expected.values()) == N
    check_delivery(received, expected, bound=RECEIVE_BOUND_S + (time.monotonic() - t_sent))


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_track_last_enqueued_event_properties(seeded: Seeded, api: str) -> None:
    received = RECEIVERS[api](
        seeded.cs("single"),
        N,
        batch=True,
        timeout=RECEIVE_BOUND_S + 5,
        starting_position="-1",
        track_last_enqueued_event_properties=True,
    )
    check_delivery(received, seeded.stored["single"])
    stored = stored_events(seeded.running, "single")
    for pid in PARTITIONS:
        props = received.contexts[pid].last_enqueued_event_properties
        last = stored[pid][-1]
        assert props["sequence_number"] == last.sequence_number
        assert props["offset"] == str(last.offset)
        assert props["enqueued_time"] == datetime.datetime.fromtimestamp(
            last.enqueued_time_ms / 1000, datetime.UTC
        )
        assert props["retrieval_time"] is not None


# --------------------------------------------------------------------------- sending
def _events(prefix: str) -> list[EventData]:
    return [EventData(f"{prefix}{i}") for i in range(N)]


def _sync_send(cs: str, path: str, routing: dict[str, str]) -> None:
    if path == "buffered":
        ok: list[int] = []
        failed: list[Any] = []
        p = EventHubProducerClient.from_connection_string(
            cs,
            retry_total=0,
            buffered_mode=True,
            on_success=lambda evs, pid: ok.append(len(evs)),
            on_error=lambda evs, pid, err: failed.append(err),
            max_wait_time=0.2,
        )
        with p:
            for ev in _events("x"):
                p.send_event(ev, **routing)
            p.flush()
        assert not failed and sum(ok) == N
        return
    with EventHubProducerClient.from_connection_string(cs, retry_total=0) as p:
        if path == "send_event":
            for ev in _events("x"):
                p.send_event(ev, **routing)
        elif path == "batch":
            events = _events("x")
            for start in range(0, N, 100):
                batch = p.create_batch(**routing)
                for ev in events[start : start + 100]:
                    batch.add(ev)
                p.send_batch(batch)
        else:  # a list of EventData
            events = _events("x")
            for start in range(0, N, 100):
                p.send_batch(events[start : start + 100], **routing)


async def _aio_send(cs: str, path: str, routing: dict[str, str]) -> None:
    if path == "buffered":
        ok: list[int] = []
        failed: list[Any] = []

        async def on_success(evs: list[EventData], pid: str | None) -> None:
            ok.append(len(evs))

        async def on_error(evs: list[EventData], pid: str | None, err: Exception) -> None:
            failed.append(err)

        p = AioProducer.from_connection_string(
            cs, retry_total=0, buffered_mode=True, on_success=on_success, on_error=on_error, max_wait_time=0.2
        )
        async with p:
            for ev in _events("x"):
                await p.send_event(ev, **routing)
            await p.flush()
        assert not failed and sum(ok) == N
        return
    async with AioProducer.from_connection_string(cs, retry_total=0) as p:
        if path == "send_event":
            for ev in _events("x"):
                await p.send_event(ev, **routing)
        elif path == "batch":
            events = _events("x")
            for start in range(0, N, 100):
                batch = await p.create_batch(**routing)
                for ev in events[start : start + 100]:
                    batch.add(ev)
                await p.send_batch(batch)
        else:
            events = _events("x")
            for start in range(0, N, 100):
                await p.send_batch(events[start : start + 100], **routing)


SEND_MATRIX = [
    pytest.param(api, path, routing, id=f"{api}-{path}-{routing}")
    for api in ("sync", "aio")
    for path in ("send_event", "batch", "list", "buffered")
    for routing in ("none", "partition_id", "partition_key")
]


@pytest.mark.parametrize(("api", "path", "routing"), SEND_MATRIX)
def test_send_matrix(eh: Running, api: str, path: str, routing: str) -> None:
    cs = eh.emulator.connection_string_for("eh1")
    kw = {"none": {}, "partition_id": {"partition_id": "2"}, "partition_key": {"partition_key": KEY}}[routing]
    t0 = time.monotonic()
    if api == "sync":
        _sync_send(cs, path, kw)
    else:
        asyncio.run(_aio_send(cs, path, kw))
    elapsed = time.monotonic() - t0
    bound = SEND_SINGLE_BOUND_S if path == "send_event" else SEND_BATCH_BOUND_S
    assert elapsed <= bound, f"{N} events through {api} {path} took {elapsed:.2f} s (bound {bound} s)"
    stored = stored_events(eh, "eh1")
    per = {pid: [decode_event(e.payload).data[0].decode() for e in events] for pid, events in stored.items()}
    bodies = [b for v in per.values() for b in v]
    assert sorted(bodies) == sorted(f"x{i}" for i in range(N)), "events lost or duplicated"
    for pid, seq in per.items():  # send order is kept within each partition
        idx = [int(b[1:]) for b in seq]
        assert idx == sorted(idx), f"partition {pid} out of send order"
    nonempty = sorted(pid for pid, v in per.items() if v)
    if routing == "partition_id":
        assert nonempty == ["2"]
    elif routing == "partition_key":
        key_partition = eh.thread.call(lambda: eh.emulator.store.hub("eh1").partition_for_key(KEY))
        assert nonempty == [key_partition]
        keys = {e.partition_key for e in stored[key_partition]}
        if path != "buffered":  # the buffered producer resolves the partition itself and sends to it
            assert keys == {KEY}
    elif path in ("send_event", "buffered"):
        assert nonempty == list(PARTITIONS), "events without routing should spread over the partitions"


def test_a_partition_key_maps_to_the_same_partition_as_the_sdks_own_resolver(eh: Running) -> None:
    """The buffered producer picks the partition client-side; the service hashes the key: they must agree,
    or a key's events split between two partitions depending on the send path."""
    from azure.eventhub._buffered_producer._partition_resolver import PartitionResolver

    resolver = PartitionResolver(list(PARTITIONS))
    for i in range(200):
        key = f"device-{i}"
        ours = eh.thread.call(lambda k=key: eh.emulator.store.hub("eh1").partition_for_key(k))
        assert ours == resolver.get_partition_id_by_partition_key(key), key
