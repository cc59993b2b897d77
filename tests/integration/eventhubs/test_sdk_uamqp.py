"""azure-eventhub with ``uamqp_transport=True`` (the C uAMQP stack) against the emulator's AMQPS listener.

uAMQP always speaks TLS, authenticates with SASL ``MSSBCBS`` and waits for a request's disposition before
it reads the response of a ``$management`` call: each of these failed against the emulator before it had
a TLS listener, offered ``MSSBCBS`` and settled requests before answering them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uamqp", reason="uamqp not installed (pip install 'enginehub[uamqp]')")

from azure.eventhub import EventData  # noqa: E402
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient  # noqa: E402
from eh_sdk_helpers import Running  # noqa: E402

from enginehub.harness.eventhubs.config import EmulatorConfig  # noqa: E402
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator  # noqa: E402
from enginehub.harness.iothub.certs import mint  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def eh_tls(tmp_path: Path) -> Iterator[Running]:
    config = EmulatorConfig.simple(hubs=["eh1"], partitions=2, consumer_groups=["cg1"])
    emulator = EventHubsEmulator(config, port=0, http_port=None, tls=mint().write(tmp_path / "certs"))
    thread = EmulatorThread(emulator)
    thread.start()
    try:
        yield Running(emulator, thread)
    finally:
        thread.stop()


def _kw(running: Running) -> dict[str, Any]:
    return {"uamqp_transport": True, "retry_total": 0, **running.emulator.sdk_tls_kwargs()}


async def _receive(cs: str, kw: dict[str, Any], expect: int, group: str = "$Default") -> list[EventData]:
    got: list[EventData] = []
    errors: list[Exception] = []

    async def on_batch(ctx: Any, events: list[EventData]) -> None:
        got.extend(events)

    async def on_error(ctx: Any, exc: Exception) -> None:
        errors.append(exc)

    client = EventHubConsumerClient.from_connection_string(cs, group, load_balancing_interval=0.5, **kw)
    task = asyncio.create_task(
        client.receive_batch(
            on_batch, max_batch_size=100, max_wait_time=0.2, starting_position="-1", on_error=on_error
        )
    )
    try:
        deadline = time.monotonic() + 20
        while len(got) < expect and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
    finally:
        await client.close()
        await asyncio.wait_for(task, 15)
    assert len(got) >= expect, f"received {len(got)} of {expect}; errors {errors!r}"
    return got


async def test_uamqp_consumer_reads_bodies_properties_and_ids(
    eh_tls: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """(The producer side is pyamqp's: azure-eventhub 5.15.1's uAMQP producer fails in the SDK itself,
    before any frame is sent: "Argument 'desired_capabilities' has incorrect type".)"""
    kw = _kw(eh_tls)
    producer = EventHubProducerClient.from_connection_string(eh_tls.cs, retry_total=0)
    async with producer:
        batch = await producer.create_batch(partition_id="1")
        for i in range(50):
            event = EventData(f"body-{i}")
            event.properties = {"i": i}
            event.message_id = f"m-{i}"
            batch.add(event)
        await producer.send_batch(batch)
    got = await _receive(eh_tls.cs, kw, 50)
    assert [e.body_as_str() for e in got] == [f"body-{i}" for i in range(50)]
    assert [e.properties[b"i"] for e in got] == list(range(50))
    assert [e.message_id for e in got] == [f"m-{i}" for i in range(50)]
    assert [e.sequence_number for e in got] == list(range(50))
    assert {e.partition_key for e in got} == {None}
    # every management call answered in order (uAMQP logs and retries one answered before its disposition)
    assert not [r for r in caplog.records if r.name.startswith("uamqp") and r.levelno >= logging.ERROR]


async def test_uamqp_management_reads_properties(eh_tls: Running) -> None:
    """$management READ over uAMQP: its response is only read after the request's disposition."""
    client = EventHubConsumerClient.from_connection_string(eh_tls.cs, "$Default", **_kw(eh_tls))
    async with client:
        props = [await client.get_eventhub_properties() for _ in range(3)]
        parts = [await client.get_partition_properties(p) for p in ("0", "1", "0")]
    assert [p["eventhub_name"] for p in props] == ["eh1"] * 3
    assert sorted(props[0]["partition_ids"]) == ["0", "1"]
    assert [p["id"] for p in parts] == ["0", "1", "0"]
    assert all(p["is_empty"] for p in parts)


async def test_pyamqp_and_uamqp_read_the_same_events(eh_tls: Running) -> None:
    """Plain AMQP (pyamqp) and AMQPS (uAMQP) serve one store: what one side writes, both read alike."""
    producer = EventHubProducerClient.from_connection_string(eh_tls.cs, retry_total=0)
    async with producer:
        await producer.send_batch([EventData(f"p{i}") for i in range(20)], partition_id="0")
    plain = await _receive(eh_tls.cs, {"retry_total": 0}, 20)
    tls = await _receive(eh_tls.cs, _kw(eh_tls), 20, group="cg1")
    assert [(e.sequence_number, e.body_as_str()) for e in plain] == [
        (e.sequence_number, e.body_as_str()) for e in tls
    ]


def test_tls_kwargs_need_a_tls_listener(tmp_path: Path) -> None:
    config = EmulatorConfig.simple(hubs=["eh1"], partitions=1)
    with pytest.raises(RuntimeError, match="no TLS listener"):
        EventHubsEmulator(config, port=0, http_port=None).sdk_tls_kwargs()
    with pytest.raises(ValueError, match="write the certificates"):
        EventHubsEmulator(config, port=0, http_port=None, tls=mint())
