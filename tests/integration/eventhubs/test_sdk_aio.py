"""The real azure-eventhub SDK, asyncio clients, against the emulator (running on its own loop thread)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.exceptions import AuthenticationError, EventDataSendError
from eh_sdk_helpers import Running

pytestmark = pytest.mark.integration

LAST_ENQUEUED: list[Any] = []  # ctx.last_enqueued_event_properties seen by areceive's on_event


async def apoll(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {value!r}")
    return value


async def areceive(cs: str, expect: int, **kw: Any) -> tuple[list[EventData], list[Any], list[Exception]]:
    got: list[EventData] = []
    closed: list[Any] = []
    errors: list[Exception] = []
    # receive() returns only after the processor's next load-balancing sleep: keep it short
    client = EventHubConsumerClient.from_connection_string(
        cs, consumer_group="$Default", retry_total=0, load_balancing_interval=0.5
    )

    async def on_event(ctx: Any, event: EventData | None) -> None:
        if event is not None:
            got.append(event)
            LAST_ENQUEUED.append(ctx.last_enqueued_event_properties)

    async def on_error(ctx: Any, exc: Exception) -> None:
        errors.append(exc)

    async def on_close(ctx: Any, reason: Any) -> None:
        closed.append(reason)

    task = asyncio.create_task(
        client.receive(on_event=on_event, on_error=on_error, on_partition_close=on_close, **kw)
    )
    try:
        await apoll(lambda: len(got) >= expect, 20, f"{expect} events (errors {errors!r})")
    finally:
        await client.close()
        await asyncio.wait_for(task, 15)
    return got, closed, errors


async def test_aio_producer_and_consumer_round_trip(eh: Running) -> None:
    async with EventHubProducerClient.from_connection_string(eh.cs, retry_total=0) as p:
        props = await p.get_eventhub_properties()
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        batch = await p.create_batch(partition_key="engine-9")
        for i in range(10):
            ev = EventData(f"aio-{i}")
            ev.properties = {"i": i}
            batch.add(ev)
        await p.send_batch(batch)
        counts = {
            pid: (await p.get_partition_properties(pid))["last_enqueued_sequence_number"] for pid in "0123"
        }
    pid = next(k for k, v in counts.items() if v == 9)
    got, _, _ = await areceive(eh.cs, 10, partition_id=pid, starting_position="-1")
    assert [e.body_as_str() for e in got] == [f"aio-{i}" for i in range(10)]
    assert [e.properties[b"i"] for e in got] == list(range(10))
    assert all(e.partition_key == b"engine-9" for e in got)


async def test_aio_runtime_metrics_when_tracked(eh: Running) -> None:
    LAST_ENQUEUED.clear()
    async with EventHubProducerClient.from_connection_string(eh.cs, retry_total=0) as p:
        await p.send_batch([EventData("a"), EventData("b")], partition_id="2")
    got, _, _ = await areceive(
        eh.cs, 2, partition_id="2", starting_position="-1", track_last_enqueued_event_properties=True
    )
    assert got[0].body_as_str() == "a"
    last = LAST_ENQUEUED[-1]
    assert last["sequence_number"] == 1 and last["offset"] == got[1].offset
    assert last["enqueued_time"] == got[1].enqueued_time and last["retrieval_time"] is not None


async def test_aio_bad_key_and_oversize(eh: Running) -> None:
    bad = eh.cs.replace("SharedAccessKey=", "SharedAccessKey=bad")
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError):
        async with EventHubProducerClient.from_connection_string(bad, retry_total=0) as p:
            await p.get_eventhub_properties()
    assert time.monotonic() - t0 < 5
    async with EventHubProducerClient.from_connection_string(eh.cs, retry_total=0) as p:
        with pytest.raises(EventDataSendError):
            await p.send_event(EventData(b"z" * (1024 * 1024 + 1)))


async def test_aio_epoch_steal_gives_ownership_lost(eh: Running) -> None:
    closed: list[Any] = []
    errors: list[Exception] = []
    # without a shared checkpoint store each client believes it owns the partition and re-claims it at
    # its next load-balancing cycle (stealing back): keep the first one's cycle long
    first = EventHubConsumerClient.from_connection_string(
        eh.cs, consumer_group="$Default", retry_total=0, load_balancing_interval=60
    )

    async def on_error(ctx: Any, exc: Exception) -> None:
        errors.append(exc)

    async def on_close(ctx: Any, reason: Any) -> None:
        closed.append(reason)

    async def ignore(ctx: Any, event: Any) -> None:
        return None

    task = asyncio.create_task(
        first.receive(
            on_event=ignore, on_error=on_error, on_partition_close=on_close, partition_id="1", owner_level=0
        )
    )
    try:
        await apoll(lambda: eh.receivers() == 1, 10, "the first receiver")

        async def produce_when_stolen() -> None:
            await apoll(lambda: closed, 15, "the first receiver to be closed")
            await first.close()
            async with EventHubProducerClient.from_connection_string(eh.cs, retry_total=0) as p:
                await p.send_event(EventData("to the new owner"), partition_id="1")

        producer_task = asyncio.create_task(produce_when_stolen())
        got, _, _ = await areceive(eh.cs, 1, partition_id="1", starting_position="@latest", owner_level=0)
        await producer_task
    finally:
        await first.close()
        task.cancel()
    assert got[0].body_as_str() == "to the new owner"
    assert CloseReason.OWNERSHIP_LOST in closed, (closed, errors)
    assert any("stolen" in str(e) for e in errors), errors
