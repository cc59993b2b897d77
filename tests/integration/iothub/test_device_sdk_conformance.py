"""Conformance matrix: the public paths of azure-iot-device, sync and aio ``IoTHubDeviceClient``, the way
users call them, against the hub (the plugin's ``iothub`` fixture: our emulator by default, any provider).

- Telemetry, QoS 1: N = 1,000 messages from one device, ``send_message`` per message (sync; aio awaited one
  by one, and aio concurrently with ``asyncio.gather`` in chunks of ``CHUNK``). Each case reads the hub's
  Event Hubs-compatible endpoint with the official azure-eventhub consumer (one per partition), from where
  every partition ended before the case, and asserts that all N arrive, each exactly once (the partitions
  are read to their end), in send order, on one partition, within ``TELEMETRY_BOUND_S`` counted from the
  first ``send_message`` to the N-th event read back. Concurrent calls have no order among themselves: the
  aio client hands each call to its pipeline through ``loop.run_in_executor`` (``async_adapter.
  emulate_async``), so one ``gather``'s calls reach the wire in thread-pool order (seen stored as 0..9, 12,
  10, ...; the hub appends in wire order), and ``gather`` asserts the order between chunks.
- Twin: ``get_twin``; ``patch_twin_reported_properties`` visible in the next ``get_twin`` and on the service
  side (``iothub_service``, azure-iot-hub's registry manager); a desired patch made on the service side
  arrives once through ``on_twin_desired_properties_patch_received`` and shows in the next ``get_twin``.
- Reconnect (emulator only: it needs a server-side drop, ``IotHubEmulator.disconnect`` /
  ``Faults.close_after_publishes``, so it runs on a stack of its own): with the SDK's own retry on, the hub
  drops the device's connection between sends and with a publish in flight; the client reconnects by itself
  and every message sent across the drop arrives. QoS 1 is at least once: the only duplicate allowed is one
  the SDK re-sent (DUP set, counted by the hub) because the drop took its PUBACK; with one publish in
  flight that is exactly the message appended before the close. The sync client's ``send_message`` can
  raise ``NoConnectionError`` just after a drop although the message is then delivered: an SDK race (see
  ``_check_reconnect``), allowed only there, and those messages must arrive once too.

Bounds (assertions; do not widen them to pass). ``TELEMETRY_BOUND_S = 5`` s for 1,000: a real hub
acknowledges a QoS 1 publish from a client in its region in a few milliseconds and its built-in endpoint
serves events within about a second, so 1,000 sequential round trips plus the read-back take a few
seconds; 5 s is also the Event Hubs matrix's bound for 1,000 events. Measured here (2 shared cores): 1.1 s
sync, 1.3 s aio sequential, 1.4 s aio gather, so a stall of 5 ms per message fails it. ``RECONNECT_BOUND_S
= 5`` s for the sends across a drop: the SDK reconnects at once after an unexpected drop (its
``connection_retry_interval`` applies between failed attempts) and a TLS + CONNECT to a real hub takes
well under a second; measured here 0.1 s (drop between sends) and 0.3-1.2 s (400 sends, drop in flight).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.eventhub import EventHubConsumerClient
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.device.aio import IoTHubDeviceClient as AioDeviceClient
from azure.iot.device.exceptions import NoConnectionError

from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration
LOG = logging.getLogger(__name__)

N = 1000
CHUNK = 100  # aio concurrency: at most this many send_message calls in flight
TELEMETRY_BOUND_S = 5.0  # first send_message -> N-th event read back from the built-in endpoint
TWIN_BOUND_S = 5.0  # a desired patch reaches the device's handler (a real hub: well under a second)
RECONNECT_BOUND_S = 5.0  # the sends across a server-side drop, reconnect included


def _as_str(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- the built-in endpoint
@dataclass
class Seen:
    partition: str
    sequence_number: int
    message_id: str | None


@dataclass
class EndpointReader:
    """The official consumer on the built-in endpoint, from where each partition ends NOW (only what is
    sent afterwards is read), ``receive_batch`` on a thread; events grouped by device id."""

    connection_string: str
    by_device: dict[str, list[Seen]] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    reached: dict[tuple[str, int], float] = field(default_factory=dict)  # (device, count) -> perf_counter
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[EventHubConsumerClient] = []
        self._threads: list[threading.Thread] = []
        # one consumer per partition, each on its own thread: one client over all partitions would be
        # paced by the sync EventProcessor's round-robin (0.2 s per empty partition per round, the SDK's
        # limit kept as an xfail in the Event Hubs matrix), which would time the reader, not the hub
        for pid, props in self._partitions().items():
            self.last_seq[pid] = props["last_enqueued_sequence_number"]
            client = EventHubConsumerClient.from_connection_string(
                self.connection_string, "$Default", retry_total=0
            )
            thread = threading.Thread(
                target=client.receive_batch,
                kwargs={
                    "on_event_batch": self._on_batch,
                    "on_error": lambda _ctx, exc: self.errors.append(exc),
                    "partition_id": pid,
                    "starting_position": "-1"
                    if props["is_empty"]
                    else props["last_enqueued_sequence_number"],
                    "starting_position_inclusive": False,
                    "max_batch_size": 1000,
                    "max_wait_time": 0.5,
                },
                daemon=True,
            )
            thread.start()
            self._clients.append(client)
            self._threads.append(thread)

    def _partitions(self) -> dict[str, dict[str, Any]]:
        """Partition properties, one management call per partition in parallel: the sync SDK paces each
        call's connection set-up at 50 ms per frame (~0.36 s a call, on loopback as against Azure)."""

        def client() -> EventHubConsumerClient:
            return EventHubConsumerClient.from_connection_string(
                self.connection_string, "$Default", retry_total=0
            )

        def props(pid: str) -> dict[str, Any]:
            with client() as c:
                return c.get_partition_properties(pid)

        ids = getattr(self, "_ids", None)
        if ids is None:
            with client() as c:
                ids = self._ids = c.get_partition_ids()
        with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
            return dict(zip(ids, pool.map(props, ids), strict=True))

    def _on_batch(self, ctx: Any, events: list[Any]) -> None:
        now = time.perf_counter()
        with self._lock:
            for e in events:
                device = _as_str(e.system_properties.get(b"iothub-connection-device-id"))
                seen = self.by_device.setdefault(device or "", [])
                seen.append(Seen(ctx.partition_id, e.sequence_number, _as_str(e.message_id)))
                self.reached.setdefault((device or "", len(seen)), now)
                self.last_seq[ctx.partition_id] = e.sequence_number

    def count(self, device_id: str) -> int:
        with self._lock:
            return len(self.by_device.get(device_id, []))

    def wait_for(self, device_id: str, n: int, timeout: float) -> float:
        """Wait until ``n`` events of the device were read; return when (perf_counter) the n-th came."""
        wait_until(
            lambda: self.count(device_id) >= n or self.errors,
            timeout,
            lambda: f"{self.count(device_id)} of {n} events of {device_id} read back; errors {self.errors}",
        )
        assert not self.errors, self.errors
        return self.reached[(device_id, n)]

    def drain(self, timeout: float = 15.0) -> None:
        """Read every partition to its current end (so a duplicate stored after the n-th would be seen)."""
        ends = {pid: p["last_enqueued_sequence_number"] for pid, p in self._partitions().items()}

        def caught_up() -> bool:
            with self._lock:
                return all(self.last_seq.get(pid, -1) >= end for pid, end in ends.items())

        wait_until(caught_up, timeout, lambda: f"read up to {self.last_seq}, partitions end at {ends}")

    def events(self, device_id: str) -> list[Seen]:
        with self._lock:
            return list(self.by_device.get(device_id, []))

    def close(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(self._clients)) as pool:
            list(pool.map(lambda c: c.close(), self._clients))
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def endpoint_reader(iothub: Any) -> Iterator[Callable[[], EndpointReader]]:
    made: list[EndpointReader] = []

    def create(connection_string: str | None = None) -> EndpointReader:
        reader = EndpointReader(connection_string or iothub.eventhub_connection_string)
        made.append(reader)
        return reader

    yield create
    for reader in made:
        reader.close()


def _first_difference(a: list[Any], b: list[Any]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def assert_exactly_once_in_order(
    reader: EndpointReader, device_id: str, sent: list[str], ordered_within: int | None = None
) -> None:
    """All ``sent`` read back once each, in send order, on one partition. ``ordered_within=k``: the messages
    were sent k at a time concurrently, so the order is asserted between chunks (the SDK publishes the
    calls of one ``gather`` in its own order), not inside one."""
    reader.drain()
    seen = reader.events(device_id)
    ids = [s.message_id for s in seen]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates of {len(sent)}"
    assert set(ids) == set(sent), f"missing {len(set(sent) - set(ids))}, foreign {len(set(ids) - set(sent))}"
    if ordered_within is None:
        assert ids == sent, f"out of order from #{_first_difference(ids, sent)}"
    else:  # concurrent calls: only calls that did not overlap have an order
        chunk_of = {mid: i // ordered_within for i, mid in enumerate(sent)}
        chunks = [chunk_of[mid] for mid in ids]
        assert chunks == sorted(chunks), (
            f"a chunk overtook an earlier one at #{_first_difference(chunks, sorted(chunks))}"
        )
    assert len({s.partition for s in seen}) == 1, "one device's telemetry spans partitions"


def _message(device_id: str, i: int) -> Message:
    msg = Message(f'{{"unit": "{device_id}", "cycle": {i}}}', content_encoding="utf-8")
    msg.content_type = "application/json"
    msg.message_id = f"{device_id}-{i:05d}"
    msg.custom_properties["cycle"] = str(i)
    return msg


# --------------------------------------------------------------------------- clients
@pytest.fixture
async def device(iothub: Any) -> Any:
    """Factory of REAL device clients: ``device("sync"|"aio", hub=None, **kw) -> (device id, client)`` on the
    session hub (or ``hub``, an ``IotHubEndpoint``); SDK retries off unless asked (an emulator defect must
    fail, not be retried away); all shut down at teardown."""
    made: list[Any] = []

    def create(kind: str, *, hub: Any = None, **kw: Any) -> tuple[str, Any]:
        h = hub or iothub
        device_id = h.new_device_id(f"conf-{kind}")
        kw.setdefault("connection_retry", False)
        if h.ca_cert:
            with open(h.ca_cert) as f:
                kw["server_verification_cert"] = f.read()
        cls = IoTHubDeviceClient if kind == "sync" else AioDeviceClient
        client = cls.create_from_connection_string(h.device_connection_string(device_id), **kw)
        made.append(client)
        return device_id, client

    yield create
    for client in made:
        try:
            if isinstance(client, AioDeviceClient):
                await client.shutdown()
            else:
                await asyncio.to_thread(client.shutdown)
        except Exception as exc:  # teardown only: the test already has its verdict
            LOG.debug("client shutdown failed: %s", exc)


def _report(case: str, acked_s: float, elapsed_s: float) -> None:
    LOG.warning(
        "%s: %d QoS 1 messages acked in %.2f s, all read back after %.2f s", case, N, acked_s, elapsed_s
    )


# --------------------------------------------------------------------------- telemetry, QoS 1
def test_sync_send_message_qos1(device: Any, endpoint_reader: Any) -> None:
    reader = endpoint_reader()
    device_id, client = device("sync")
    client.connect()
    sent = []
    t0 = time.perf_counter()
    for i in range(N):
        msg = _message(device_id, i)
        client.send_message(msg)
        sent.append(msg.message_id)
    acked = time.perf_counter() - t0
    elapsed = reader.wait_for(device_id, N, TELEMETRY_BOUND_S * 4) - t0
    _report("sync send_message", acked, elapsed)
    assert elapsed <= TELEMETRY_BOUND_S, f"{N} messages took {elapsed:.2f} s (acked after {acked:.2f} s)"
    assert_exactly_once_in_order(reader, device_id, sent)


@pytest.mark.parametrize("shape", ["sequential", "gather"])
async def test_aio_send_message_qos1(device: Any, endpoint_reader: Any, shape: str) -> None:
    reader = await asyncio.to_thread(endpoint_reader)
    device_id, client = device("aio")
    await client.connect()
    msgs = [_message(device_id, i) for i in range(N)]
    t0 = time.perf_counter()
    if shape == "sequential":
        for msg in msgs:
            await client.send_message(msg)
    else:
        for k in range(0, N, CHUNK):
            await asyncio.gather(*(client.send_message(m) for m in msgs[k : k + CHUNK]))
    acked = time.perf_counter() - t0
    elapsed = await asyncio.to_thread(reader.wait_for, device_id, N, TELEMETRY_BOUND_S * 4) - t0
    _report(f"aio send_message {shape}", acked, elapsed)
    assert elapsed <= TELEMETRY_BOUND_S, f"{N} messages took {elapsed:.2f} s (acked after {acked:.2f} s)"
    sent = [m.message_id for m in msgs]
    chunked = CHUNK if shape == "gather" else None
    await asyncio.to_thread(assert_exactly_once_in_order, reader, device_id, sent, chunked)


# --------------------------------------------------------------------------- twin
def _desired_from_service(iothub_service: Any, device_id: str, desired: dict[str, Any]) -> None:
    from azure.iot.hub.models import Twin, TwinProperties

    iothub_service.update_twin(device_id, Twin(properties=TwinProperties(desired=desired)), "*")


def _check_twin_shape(twin: dict[str, Any]) -> None:
    assert set(twin) >= {"desired", "reported"}, twin
    assert isinstance(twin["desired"]["$version"], int) and isinstance(twin["reported"]["$version"], int)


def test_sync_twin_get_patch_reported_and_desired(device: Any, iothub_service: Any) -> None:
    device_id, client = device("sync")
    client.connect()
    patches: queue.Queue[dict[str, Any]] = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put

    twin = client.get_twin()
    _check_twin_shape(twin)
    reported = {"firmware": "2.1.0", "telemetry": {"interval_s": 5}}
    client.patch_twin_reported_properties(reported)
    after = client.get_twin()
    assert {k: after["reported"][k] for k in reported} == reported, after
    assert after["reported"]["$version"] == twin["reported"]["$version"] + 1
    service_twin = iothub_service.get_twin(device_id)
    assert {k: service_twin.properties.reported[k] for k in reported} == reported

    t0 = time.perf_counter()
    _desired_from_service(iothub_service, device_id, {"interval_s": 7, "mode": {"eco": True}})
    patch = patches.get(timeout=TWIN_BOUND_S)
    LOG.warning("sync desired patch: service update -> handler in %.3f s", time.perf_counter() - t0)
    assert patch["interval_s"] == 7 and patch["mode"] == {"eco": True}, patch
    assert patch["$version"] == twin["desired"]["$version"] + 1, (patch, twin["desired"])
    desired = client.get_twin()["desired"]
    assert desired["interval_s"] == 7 and desired["$version"] == patch["$version"]
    assert patches.empty(), "one service update, one patch"


async def test_aio_twin_get_patch_reported_and_desired(device: Any, iothub_service: Any) -> None:
    device_id, client = device("aio")
    await client.connect()
    patches: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def on_patch(patch: dict[str, Any]) -> None:  # the SDK runs handlers on a loop of its own
        loop.call_soon_threadsafe(patches.put_nowait, patch)

    client.on_twin_desired_properties_patch_received = on_patch

    twin = await client.get_twin()
    _check_twin_shape(twin)
    reported = {"firmware": "2.1.0", "telemetry": {"interval_s": 5}}
    await client.patch_twin_reported_properties(reported)
    after = await client.get_twin()
    assert {k: after["reported"][k] for k in reported} == reported, after
    assert after["reported"]["$version"] == twin["reported"]["$version"] + 1
    service_twin = await asyncio.to_thread(iothub_service.get_twin, device_id)
    assert {k: service_twin.properties.reported[k] for k in reported} == reported

    t0 = time.perf_counter()
    await asyncio.to_thread(_desired_from_service, iothub_service, device_id, {"interval_s": 9})
    patch = await asyncio.wait_for(patches.get(), TWIN_BOUND_S)
    LOG.warning("aio desired patch: service update -> handler in %.3f s", time.perf_counter() - t0)
    assert patch["interval_s"] == 9 and patch["$version"] == twin["desired"]["$version"] + 1, patch
    desired = (await client.get_twin())["desired"]
    assert desired["interval_s"] == 9 and desired["$version"] == patch["$version"]
    assert patches.empty(), "one service update, one patch"


# --------------------------------------------------------------------------- reconnect (emulator only)
M = 200  # messages before the drop, and as many after


@dataclass
class OwnStack:
    """An in-process LocalIotHub (IoT Hub + its built-in Event Hubs endpoint) whose connections the test
    can drop server-side; ``call(fn, *args)`` runs on the emulators' loop thread."""

    runner: Any
    stack: Any
    endpoint: Any

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.runner.call(fn, *args)

    def device_metrics(self, device_id: str) -> Any:
        return self.call(lambda: dataclasses.replace(self.stack.iothub.metrics.device(device_id)))


@pytest.fixture(scope="module")
def own_stack() -> Iterator[OwnStack]:
    from enginehub.harness.bridge import LocalIotHub
    from enginehub.harness.iothub.testing import free_loopback_ip
    from enginehub.harness.providers.iothub import IotHubEndpoint
    from enginehub.harness.runtime import LoopThread

    host = free_loopback_ip()
    runner = LoopThread(lambda: LocalIotHub(host=host, partitions=4), name="conformance-stack")
    stack = runner.start()
    hub = stack.iothub
    endpoint = IotHubEndpoint.of_local(stack)
    try:
        yield OwnStack(runner, stack, endpoint)
    finally:
        runner.call(hub.faults.reset)
        runner.stop()


def assert_none_lost(
    reader: EndpointReader, device_id: str, sent: list[str], resent: int, ordered_within: int | None = None
) -> list[str]:
    """Every sent message read back; the duplicates (returned) number at most the publishes the SDK
    re-sent (DUP set: it never got their PUBACK); order as first stored follows the send order."""
    reader.wait_for(device_id, len(sent), RECONNECT_BOUND_S + TELEMETRY_BOUND_S)
    reader.drain()
    ids = [s.message_id for s in reader.events(device_id)]
    assert set(ids) == set(sent), f"lost {sorted(set(sent) - set(ids))[:5]}, foreign {set(ids) - set(sent)}"
    dups = [mid for i, mid in enumerate(ids) if mid in ids[:i]]
    assert len(dups) <= resent, f"{len(dups)} duplicates, but the SDK re-sent only {resent}: {dups[:5]}"
    first = list(dict.fromkeys(ids))
    if ordered_within is None:
        assert first == sent, f"out of order from #{_first_difference(first, sent)}"
    else:
        chunk_of = {mid: i // ordered_within for i, mid in enumerate(sent)}
        chunks = [chunk_of[mid] for mid in first]
        assert chunks == sorted(chunks), "a chunk overtook an earlier one"
    return dups


def _connected_again(own: OwnStack, device_id: str, connects: int) -> Callable[[], bool]:
    return lambda: own.device_metrics(device_id).connects >= connects


def test_sync_reconnects_after_a_server_side_drop(
    own_stack: OwnStack, device: Any, endpoint_reader: Any
) -> None:
    reader = endpoint_reader(own_stack.endpoint.eventhub_connection_string)
    device_id, client = device("sync", hub=own_stack.endpoint, connection_retry=True)
    client.connect()
    sent, raced = [], []
    for i in range(M):
        client.send_message(msg := _message(device_id, i))
        sent.append(msg.message_id)
    t0 = time.perf_counter()
    assert own_stack.call(own_stack.stack.iothub.disconnect, device_id), "the device was not connected"
    for i in range(M, 2 * M):  # sent across the drop: the SDK must reconnect by itself
        msg = _message(device_id, i)
        try:
            client.send_message(msg)
        except NoConnectionError:
            raced.append(i)
        sent.append(msg.message_id)
    took = time.perf_counter() - t0
    LOG.warning("sync, drop between sends: %d sent after the drop in %.2f s; raced %s", M, took, raced)
    _check_reconnect(own_stack, reader, device_id, sent, raced, took)
    assert client.connected


async def test_aio_reconnects_after_a_server_side_drop(
    own_stack: OwnStack, device: Any, endpoint_reader: Any
) -> None:
    reader = await asyncio.to_thread(endpoint_reader, own_stack.endpoint.eventhub_connection_string)
    device_id, client = device("aio", hub=own_stack.endpoint, connection_retry=True)
    await client.connect()
    sent, raced = [], []
    for i in range(M):
        await client.send_message(msg := _message(device_id, i))
        sent.append(msg.message_id)
    t0 = time.perf_counter()
    assert own_stack.call(own_stack.stack.iothub.disconnect, device_id), "the device was not connected"
    for i in range(M, 2 * M):
        msg = _message(device_id, i)
        try:
            await client.send_message(msg)
        except NoConnectionError:
            raced.append(i)
        sent.append(msg.message_id)
    took = time.perf_counter() - t0
    LOG.warning("aio, drop between sends: %d sent after the drop in %.2f s; raced %s", M, took, raced)
    await asyncio.to_thread(_check_reconnect, own_stack, reader, device_id, sent, raced, took)
    assert client.connected


def _check_reconnect(
    own: OwnStack, reader: EndpointReader, device_id: str, sent: list[str], raced: list[int], took: float
) -> None:
    """After a drop between sends: reconnected by the SDK itself (a second CONNECT), within the bound,
    every message once. ``raced``: calls that raised NoConnectionError. That is the SDK's race, not the
    hub's: a send issued after paho saw the socket close but before the SDK's pipeline did gets paho's
    MQTT_ERR_NO_CONN, which the SDK raises, although paho keeps the message and sends it after the
    reconnect (seen here in about 1 run of 4 with the sync client, for the first 1 to 9 sends; not seen with
    aio). So only sends right after the drop may hit it, and their messages must still arrive, once: a
    caller who retried them would make the duplicate."""
    assert raced == list(range(M, M + len(raced))), f"sends {raced} failed, not only the ones after the drop"
    assert took <= RECONNECT_BOUND_S, f"{M} sends across the drop took {took:.2f} s"
    wait_until(_connected_again(own, device_id, 2), 5, lambda: own.device_metrics(device_id))
    dups = assert_none_lost(reader, device_id, sent, own.device_metrics(device_id).dup)
    assert dups == [], "nothing was in flight at the drop: no re-send, no duplicate"


def test_sync_reconnects_with_a_publish_in_flight(
    own_stack: OwnStack, device: Any, endpoint_reader: Any
) -> None:
    reader = endpoint_reader(own_stack.endpoint.eventhub_connection_string)
    device_id, client = device("sync", hub=own_stack.endpoint, connection_retry=True)
    client.connect()
    own_stack.call(own_stack.stack.iothub.faults.update, {"close_after_publishes": M})
    sent = []
    t0 = time.perf_counter()
    for i in range(2 * M):  # the M-th is appended, then the hub closes instead of acknowledging it
        client.send_message(msg := _message(device_id, i))
        sent.append(msg.message_id)
    took = time.perf_counter() - t0
    metrics = own_stack.device_metrics(device_id)
    LOG.warning("sync, drop in flight: %d messages acked in %.2f s; %d re-sent", 2 * M, took, metrics.dup)
    assert took <= RECONNECT_BOUND_S
    assert metrics.connects == 2, metrics
    dups = assert_none_lost(reader, device_id, sent, metrics.dup)
    assert dups == [sent[M - 1]], "the SDK re-sends exactly the message whose PUBACK the drop took"


@pytest.mark.parametrize("shape", ["sequential", "gather"])
async def test_aio_reconnects_with_publishes_in_flight(
    own_stack: OwnStack, device: Any, endpoint_reader: Any, shape: str
) -> None:
    reader = await asyncio.to_thread(endpoint_reader, own_stack.endpoint.eventhub_connection_string)
    device_id, client = device("aio", hub=own_stack.endpoint, connection_retry=True)
    await client.connect()
    msgs = [_message(device_id, i) for i in range(2 * M)]
    own_stack.call(own_stack.stack.iothub.faults.update, {"close_after_publishes": M})
    t0 = time.perf_counter()
    if shape == "sequential":
        for msg in msgs:
            await client.send_message(msg)
    else:
        for k in range(0, 2 * M, CHUNK):
            await asyncio.gather(*(client.send_message(m) for m in msgs[k : k + CHUNK]))
    took = time.perf_counter() - t0
    metrics = own_stack.device_metrics(device_id)
    LOG.warning("aio %s, drop in flight: %d acked in %.2f s; %d re-sent", shape, 2 * M, took, metrics.dup)
    assert took <= RECONNECT_BOUND_S
    assert metrics.connects == 2, metrics
    assert client.connected
    sent = [m.message_id for m in msgs]
    chunked = CHUNK if shape == "gather" else None
    dups = await asyncio.to_thread(assert_none_lost, reader, device_id, sent, metrics.dup, chunked)
    if shape == "sequential":
        assert dups == [sent[M - 1]], "the SDK re-sends exactly the message whose PUBACK the drop took"
