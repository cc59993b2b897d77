"""Helpers for the Event Hubs SDK integration tests: the emulator fixture and sync SDK helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator


@dataclass
class Running:
    emulator: EventHubsEmulator
    thread: EmulatorThread

    @property
    def cs(self) -> str:
        return self.emulator.connection_string_for("eh1")

    def receivers(self) -> int:
        return self.thread.call(lambda: sum(len(v) for v in self.emulator._receivers.values()))


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy; on timeout fail saying what was observed."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(0.02)
        value = condition()
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {value!r}")
    return value


@pytest.fixture
def eh(tmp_path: Any) -> Iterator[Running]:
    config = EmulatorConfig.simple(hubs=["eh1", "eh2"], partitions=4, consumer_groups=["cg1"])
    emulator = EventHubsEmulator(config, port=0, http_port=0)
    thread = EmulatorThread(emulator)
    thread.start()
    try:
        yield Running(emulator, thread)
    finally:
        thread.stop()


def producer(cs: str, **kw: Any) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(cs, retry_total=0, **kw)


def receive(
    cs: str,
    *,
    expect: int,
    partition_id: str | None = "0",
    starting_position: Any = "-1",
    inclusive: bool = False,
    timeout: float = 20.0,
    consumer_group: str = "$Default",
    on_started: Callable[[], None] | None = None,
    **kw: Any,
) -> list[EventData]:
    """Receive with the sync SDK consumer until ``expect`` events arrived (or ``timeout``)."""
    got: list[EventData] = []
    done = threading.Event()
    errors: list[BaseException] = []
    client = EventHubConsumerClient.from_connection_string(
        cs, consumer_group=consumer_group, retry_total=0, load_balancing_interval=0.5
    )

    def on_event(ctx: Any, event: EventData | None) -> None:
        if event is None:
            return
        got.append(event)
        if len(got) >= expect:
            done.set()

    def on_error(ctx: Any, exc: BaseException) -> None:
        errors.append(exc)

    kwargs = dict(
        on_event=on_event,
        on_error=on_error,
        starting_position=starting_position,
        starting_position_inclusive=inclusive,
        **kw,
    )
    if partition_id is not None:
        kwargs["partition_id"] = partition_id
    worker = threading.Thread(target=client.receive, kwargs=kwargs, daemon=True)
    worker.start()
    try:
        if on_started is not None:
            on_started()
        done.wait(timeout)
    finally:
        client.close()
        worker.join(15)
    assert len(got) >= expect, f"received {len(got)} of {expect} events; errors: {errors!r}"
    return got
