"""Fixtures for end-to-end ingest tests: the Event Hubs emulator (in a thread), the real azure-eventhub
producer, `ingest` consumer PROCESSES, and read-back straight from SQLite / the checkpoint store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enginehub.ingest.testing import EVENTHUB, PARTITIONS, ConsumerProcess


@pytest.fixture
def emulator() -> Iterator[Any]:
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator

    emu = EventHubsEmulator(
        EmulatorConfig.simple(hubs=[EVENTHUB], partitions=PARTITIONS), port=0, http_port=None
    )
    with EmulatorThread(emu) as running:
        yield running


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[Callable[..., ConsumerProcess]]:
    started: list[ConsumerProcess] = []

    def start(args: list[str], name: str = "ingest") -> ConsumerProcess:
        proc = ConsumerProcess(args, tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:  # end only our own processes, by PID
        if proc.proc.poll() is None:
            proc.kill9()
        with contextlib.suppress(Exception):
            proc.wait(10)
