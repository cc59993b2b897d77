"""Pacing: a total of R messages/s spread over N devices, with per-device jitter, from an injected clock.

Device ``d`` sends its ``k``-th message at::

    start + phase[d] + k * period + jitter[d, k]        period = N / R (seconds between one device's sends)

``phase[d]`` staggers devices evenly over one period (plus a random part, so devices are not in lockstep)
and ``jitter[d, k]`` is drawn uniformly from ``±jitter * period / 2``. Jitter never accumulates: the k-th
slot stays anchored to ``k * period``, so over any window of T seconds the fleet sends R*T messages within
N messages, whatever the jitter (over 60 s at 500/s and 100 devices: within 0.34 %).

A device's own rate can be changed mid-run (``set_device_rate``, the ``setRate`` direct method): its slots
are then re-anchored at the change time with its new period; the other devices keep their schedule.

``Pacer`` is pure (no clock, no I/O): it hands out due times in order. ``PacedLoop`` drives it from a clock.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Callable, Iterator

from enginehub.simulator.clock import Clock

LOG = logging.getLogger(__name__)


class Pacer:
    """Due times for every device's sends, in time order. Devices can leave (``retire``) mid-run."""

    def __init__(
        self,
        devices: int,
        rate: float,
        *,
        start: float = 0.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.devices = devices
        self.rate = float(rate)
        self.period = devices / self.rate
        self.jitter = jitter
        self.start = start
        self._rng = rng or random.Random(0)
        self._heap: list[tuple[float, int, int]] = []
        self._retired: set[int] = set()
        self._phase = [(d + self._rng.random()) * self.period / devices for d in range(devices)]
        # per device: (anchor time, first slot index at the anchor, period); changed by set_device_rate
        self._anchor: dict[int, tuple[float, int, float]] = {}
        self._next_k = [0] * devices
        for d in range(devices):
            heapq.heappush(self._heap, (self._due(d, 0), d, 0))

    def _due(self, device: int, k: int) -> float:
        anchor = self._anchor.get(device)
        if anchor is not None:
            at, k0, period = anchor
            j = (self._rng.random() - 0.5) * self.jitter * period if self.jitter else 0.0
            return max(at, at + (k - k0 + 0.5) * period + j)
        j = (self._rng.random() - 0.5) * self.jitter * self.period if self.jitter else 0.0
        # |j| < period / 2, so a device's slots stay strictly ordered; none is due before the start
        return max(self.start, self.start + self._phase[device] + k * self.period + j)

    def device_rate(self, device: int) -> float:
        """Messages/s of ``device`` now (the fleet's share, R/N, unless set)."""
        anchor = self._anchor.get(device)
        return 1.0 / (anchor[2] if anchor is not None else self.period)

    def set_device_rate(self, device: int, rate: float, now: float) -> None:
        """From ``now`` on, ``device`` sends ``rate`` messages/s (its next slot half a period after now)."""
        if not 0 < rate < float("inf"):
            raise ValueError(f"rate must be a finite number > 0, got {rate}")
        if not 0 <= device < self.devices:
            raise ValueError(f"no device {device}")
        k = self._next_k[device] + 1  # a new slot index: the pending heap entry goes stale
        self._next_k[device] = k
        self._anchor[device] = (now, k, 1.0 / rate)
        heapq.heappush(self._heap, (self._due(device, k), device, k))

    def peek(self) -> float | None:
        """When the next send is due (None once every device retired)."""
        self._drop_retired()
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[float, int]:
        """The next (due time, device index); schedules that device's following send."""
        self._drop_retired()
        due, device, k = heapq.heappop(self._heap)
        self._next_k[device] = k + 1
        heapq.heappush(self._heap, (self._due(device, k + 1), device, k + 1))
        return due, device

    def retire(self, device: int) -> None:
        """Stop scheduling `device` (its engine finished and the run does not replace engines)."""
        self._retired.add(device)

    @property
    def active(self) -> int:
        return self.devices - len(self._retired)

    def due_until(self, t: float) -> Iterator[tuple[float, int]]:
        """Every (due, device) with due < t, in order."""
        while (nxt := self.peek()) is not None and nxt < t:
            yield self.pop()

    def _drop_retired(self) -> None:
        heap = self._heap
        while heap and (heap[0][1] in self._retired or heap[0][2] != self._next_k[heap[0][1]]):
            heapq.heappop(heap)  # retired, or superseded by set_device_rate


class PacedLoop:
    """Calls ``dispatch(device, due, lag)`` for every slot of a ``Pacer`` as the clock reaches it.

    Stops at ``end`` (clock time), when ``should_stop()`` turns true, or when every device retired.
    ``lag`` is how late the dispatch is against its due time; ``max_lag`` keeps the worst.
    """

    def __init__(self, pacer: Pacer, clock: Clock, *, end: float | None = None) -> None:
        self.pacer = pacer
        self.clock = clock
        self.end = end
        self.dispatched = 0
        self.max_lag = 0.0
        self.last_lag = 0.0

    async def run(
        self,
        dispatch: Callable[[int, float, float], object],
        should_stop: Callable[[], bool] = lambda: False,
        *,
        max_nap: float = 0.25,
    ) -> None:
        clock = self.clock
        while not should_stop():
            due = self.pacer.peek()
            if due is None or (self.end is not None and due >= self.end):
                if due is not None and self.end is not None:
                    # idle until the end of the run (a stop request still ends it early)
                    rest = self.end - clock.monotonic()
                    if rest > 0:
                        await clock.sleep(min(rest, max_nap))
                        continue
                return
            now = clock.monotonic()
            if due > now:
                await clock.sleep(min(due - now, max_nap))
                continue
            due, device = self.pacer.pop()
            lag = now - due
            self.last_lag = lag
            if lag > self.max_lag:
                self.max_lag = lag
            self.dispatched += 1
            dispatch(device, due, lag)
