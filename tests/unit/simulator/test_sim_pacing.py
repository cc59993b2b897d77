"""Pacing on a fake clock: no real sleeping anywhere."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from enginehub.simulator.clock import FakeClock
from enginehub.simulator.pacing import PacedLoop, Pacer


def test_pacer_due_times_are_ordered_and_rate_is_within_one_percent_over_60s() -> None:
    pacer = Pacer(100, 500.0, jitter=0.2, rng=random.Random(7))
    dues = [due for due, _ in pacer.due_until(60.0)]
    assert dues == sorted(dues)
    assert abs(len(dues) - 30_000) / 30_000 < 0.01
    # and every 10 s window holds its share, not just the total
    for w in range(1, 6):
        n = sum(1 for d in dues if w * 10 <= d < (w + 1) * 10)
        assert abs(n - 5_000) <= 100, (w, n)


def test_each_device_gets_its_share_and_jitter_varies_intervals() -> None:
    pacer = Pacer(10, 50.0, jitter=0.5, rng=random.Random(1))
    per_device: dict[int, list[float]] = {}
    for due, dev in pacer.due_until(20.0):
        per_device.setdefault(dev, []).append(due)
    counts = Counter({d: len(v) for d, v in per_device.items()})
    assert set(counts) == set(range(10))
    assert all(99 <= c <= 101 for c in counts.values()), counts  # 5 msg/s each for 20 s
    gaps = [b - a for a, b in zip(per_device[3], per_device[3][1:], strict=False)]
    assert min(gaps) < 0.19 and max(gaps) > 0.21  # jittered around the 0.2 s period
    assert min(gaps) > 0  # never reordered within a device


def test_no_jitter_gives_exact_period_and_same_seed_same_schedule() -> None:
    a = [x for x in Pacer(4, 8.0, jitter=0.0, rng=random.Random(3)).due_until(5.0)]
    b = [x for x in Pacer(4, 8.0, jitter=0.0, rng=random.Random(3)).due_until(5.0)]
    assert a == b
    dev0 = [d for d, dev in a if dev == 0]
    assert all(abs((y - x) - 0.5) < 1e-9 for x, y in zip(dev0, dev0[1:], strict=False))
    c = [x for x in Pacer(4, 8.0, jitter=0.3, rng=random.Random(4)).due_until(5.0)]
    assert c != a


def test_devices_are_staggered_not_in_lockstep() -> None:
    pacer = Pacer(100, 100.0, jitter=0.0, rng=random.Random(2))
    first = [due for due, _ in pacer.due_until(1.0)]
    assert len(first) == 100
    assert max(b - a for a, b in zip(first, first[1:], strict=False)) < 0.03  # spread over the second


def test_retired_devices_stop_being_scheduled() -> None:
    pacer = Pacer(3, 3.0, jitter=0.0)
    pacer.retire(1)
    assert {dev for _, dev in pacer.due_until(10.0)} == {0, 2}
    pacer.retire(0)
    pacer.retire(2)
    assert pacer.peek() is None and pacer.active == 0


@pytest.mark.parametrize(("devices", "rate", "jitter"), [(0, 1.0, 0.1), (1, 0.0, 0.1), (1, 1.0, 1.0)])
def test_bad_pacer_arguments(devices: int, rate: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacer(devices, rate, jitter=jitter)


async def test_paced_loop_on_fake_clock_achieves_rate_within_one_percent() -> None:
    clock = FakeClock(start=100.0)
    pacer = Pacer(100, 500.0, start=100.0, rng=random.Random(5))
    loop = PacedLoop(pacer, clock, end=160.0)
    sent: list[tuple[int, float]] = []
    await loop.run(lambda dev, due, lag: sent.append((dev, clock.monotonic())))
    assert abs(len(sent) - 30_000) / 30_000 < 0.01
    assert clock.monotonic() == pytest.approx(160.0, abs=0.3)
    assert loop.max_lag < 1e-9  # the fake clock never oversleeps
    assert all(t >= 100.0 for _, t in sent)


async def test_paced_loop_reports_lag_when_dispatch_is_slow_and_stops_on_request() -> None:
    clock = FakeClock()
    loop = PacedLoop(Pacer(10, 100.0, jitter=0.0), clock, end=10.0)
    seen = 0

    def slow(dev: int, due: float, lag: float) -> None:
        nonlocal seen
        seen += 1
        clock.advance(0.02)  # each dispatch costs twice its slot: we fall behind

    await loop.run(slow, should_stop=lambda: seen >= 200)
    assert seen == 200
    assert loop.max_lag > 1.0
