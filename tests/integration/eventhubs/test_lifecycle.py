"""The one lifecycle class: start/ready/port 0/health/stop, a busy port, and the thread runner."""

from __future__ import annotations

import asyncio
import json

import pytest

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator

pytestmark = pytest.mark.integration


async def http_get(port: int, path: str) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_start_ready_health_stop() -> None:
    emulator = EventHubsEmulator(EmulatorConfig.simple(hubs=["a", "b"]), port=0, http_port=0)
    task = asyncio.create_task(emulator.start())
    await asyncio.wait_for(emulator.ready.wait(), 10)  # waiting before start() ran must work
    await task
    assert emulator.state == "running" and emulator.port > 0 and emulator.hubs == ["a", "b"]
    assert emulator.connection_string.startswith(
        f"Endpoint=sb://127.0.0.1:{emulator.port};SharedAccessKeyName="
    )
    assert emulator.connection_string.endswith(";UseDevelopmentEmulator=true")
    assert emulator.connection_string_for("b").endswith(";EntityPath=b")
    assert await http_get(emulator.http_port, "/health") == (
        200, {"status": "healthy", "message": "Service is healthy."}
    )  # fmt: skip
    assert (await http_get(emulator.http_port, "/other"))[0] == 404
    await emulator.stop()
    assert emulator.state == "stopped" and not emulator.ready.is_set()
    await emulator.stop()  # idempotent


async def test_busy_port_is_reported_and_nothing_leaks() -> None:
    first = EventHubsEmulator(EmulatorConfig.simple(), port=0, http_port=None)
    await first.start()
    try:
        second = EventHubsEmulator(EmulatorConfig.simple(), port=first.port, http_port=None)
        with pytest.raises(OSError):
            await second.start()
        assert second.state == "stopped"
    finally:
        await first.stop()


def test_thread_runner_for_sync_callers() -> None:
    runner = EmulatorThread(EventHubsEmulator(EmulatorConfig.simple(), port=0, http_port=None))
    with runner as emulator:
        assert emulator.state == "running"
        assert runner.call(lambda: sorted(emulator.store.hubs)) == ["eh1"]
    assert emulator.state == "stopped"
