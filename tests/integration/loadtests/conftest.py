"""Fixtures for the load-test clients: an in-process Event Hubs emulator on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator


@pytest.fixture
def emulator() -> Iterator[EventHubsEmulator]:
    config = EmulatorConfig.simple(hubs=["eh1"], partitions=2, consumer_groups=["cg1"])
    emu = EventHubsEmulator(config, port=0, http_port=None)
    thread = EmulatorThread(emu)
    thread.start()
    try:
        yield emu
    finally:
        thread.stop()
