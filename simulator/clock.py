"""Injected clocks: the simulator never reads time or sleeps except through one of these.

``Clock`` is the protocol; ``SystemClock`` is the real one (monotonic for pacing, UTC wall time for the
creation-time property, ``asyncio.sleep``); ``FakeClock`` is for tests: ``sleep`` advances the fake time
instantly, so a 60 s replay runs in milliseconds with no real sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

LOG = logging.getLogger(__name__)


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic scale (pacing, timeouts)."""
        ...

    def utcnow(self) -> datetime:
        """The wall time, timezone-aware UTC (message creation time)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (negative or zero: just yield to the loop)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def utcnow(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it and returns at once."""

    def __init__(self, start: float = 0.0, wall: datetime | None = None) -> None:
        self._t = start
        self._start = start
        self._wall = wall or datetime(2024, 1, 1, tzinfo=UTC)
        self.sleeps = 0

    def monotonic(self) -> float:
        return self._t

    def utcnow(self) -> datetime:
        return self._wall + timedelta(seconds=self._t - self._start)

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.advance(seconds)
        await asyncio.sleep(0)
