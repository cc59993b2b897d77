"""Bounded polling for tests and fixtures: wait for a condition, and on timeout say what was observed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    describe: Callable[[], object],
    interval: float = 0.05,
) -> T:
    """Poll ``condition()`` every ``interval`` s until it is truthy and return its value; after ``timeout``
    raise AssertionError carrying ``describe()`` (what was observed: rows, offsets, process logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s; observed: {describe()}")
        time.sleep(interval)
