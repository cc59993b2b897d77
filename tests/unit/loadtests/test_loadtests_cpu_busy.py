"""Per-CPU busy shares of a load run, from two readings of /proc/stat."""

from __future__ import annotations

import pytest

from enginehub.harness.testing.waiting import wait_until
from enginehub.loadtests.placement import CpuSampler, busy_shares, cpu_ticks, parse_cpu_ticks

STAT_0 = """cpu  300 0 100 600 0 0 0 0 0 0
cpu0 100 0 50 350 0 0 0 0 0 0
cpu1 200 0 50 250 0 0 0 0 0 0
intr 12345 1 2
ctxt 999
"""
# 1,000 ticks later on each CPU: cpu0 busy 990 of them (steal counts as busy: the CPU was not ours to
# spare), cpu1 400 busy, 500 idle and 100 waiting for I/O
STAT_1 = """cpu  0 0 0 0 0 0 0 0 0 0
cpu0 1000 0 80 360 0 0 0 60 0 0
cpu1 500 0 150 750 100 0 0 0 0 0
"""


def test_busy_and_total_ticks_per_cpu_leave_idle_and_iowait_out_of_busy():
    assert parse_cpu_ticks(STAT_0) == {0: (150, 500), 1: (250, 500)}
    assert parse_cpu_ticks(STAT_1) == {0: (1140, 1500), 1: (650, 1500)}


def test_shares_over_the_interval():
    assert busy_shares(parse_cpu_ticks(STAT_0), parse_cpu_ticks(STAT_1)) == {"0": 0.99, "1": 0.4}


def test_no_reading_or_no_ticks_elapsed_gives_no_share():
    assert busy_shares(None, parse_cpu_ticks(STAT_1)) is None
    same = parse_cpu_ticks(STAT_0)
    assert busy_shares(same, same) == {}


def test_this_machine_reads_between_0_and_1():
    before = cpu_ticks()
    sum(i * i for i in range(200_000))  # some ticks pass
    shares = busy_shares(before, cpu_ticks())
    if before is None:  # no /proc/stat here
        assert shares is None
    else:
        assert shares is not None and all(0.0 <= v <= 1.0 for v in shares.values())


def test_the_sampler_reads_the_window_between_the_samples_around_it():
    readings = iter(
        [
            {0: (0, 100)},  # t=0
            {0: (50, 200)},  # t=1: the window starts at 1.5, so this is the last reading before it
            {0: (150, 300)},  # t=2
            {0: (240, 400)},  # t=3: the first at or after the window's end (3.0)
            {0: (240, 500)},  # t=4
        ]
    )
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    sampler = CpuSampler(clock=lambda: next(clock), read=lambda: next(readings))
    for _ in range(5):
        sampler.sample()
    # from t=1 to t=3: (240 - 50) busy of (400 - 200) ticks
    assert sampler.shares(1.5, 3.0) == {"0": 0.95}
    assert sampler.shares(-1.0, 3.0) is None  # no reading before the window
    assert sampler.shares(1.0, 9.0) is None  # nor after it


@pytest.mark.skipif(cpu_ticks() is None, reason="no /proc/stat on this OS")
def test_the_sampler_thread_takes_readings_until_it_is_left():
    with CpuSampler(interval=0.01) as sampler:
        wait_until(lambda: len(sampler._samples) >= 3, 5, lambda: sampler._samples)
    taken = len(sampler._samples)
    first, last = sampler._samples[0][0], sampler._samples[-1][0]
    assert last > first and sampler.shares(first, last) is not None
    sampler._stop.wait(0.05)
    assert len(sampler._samples) == taken  # stopped: no reading after the block
