"""The event loop a process runs its asyncio code on: ``asyncio`` (the default: asyncio's own loop),
``uvloop``, or ``auto`` (uvloop when it can be imported, else asyncio's).

Why: the Event Hubs SDK reads every AMQP frame through ``asyncio.wait_for`` (a task and a timer handle per
frame), and reading a live stream it wakes up for many small reads. libuv's loop does both for less. The
bare SDK receiving 4 partitions on the 2-core development machine (loadtests/README.md, "Event loop and
receive options"): backlog 45-47 -> 42 µs of CPU per event, live stream at 15,000 events/s 48-50 -> 42.

uvloop is a dependency of the package on Linux and macOS (it has no Windows build); where it is missing,
``auto`` quietly uses asyncio's loop and ``uvloop`` is a clear error.

Why not the default: on uvloop the bare SDK gains more than our pipeline (the baseline +12-18 %, the
pipeline +9-10 %), so the ratios to a bare SDK loop on the same event loop that issues #5 and #8 measure
fall (#5's benchmark: 0.90 on asyncio's loop, 0.82 on uvloop, same session), while the absolute rates rise.
Which of the two matters more is the owner's call; until then the default stays asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

EVENT_LOOPS = ("auto", "uvloop", "asyncio")
#: the default of every ``--event-loop`` (ingest, its sink worker, the load runner, the benchmark)
DEFAULT_LOOP = "asyncio"


class EventLoopUnavailable(ValueError):
    """``uvloop`` was asked for and cannot be imported."""


def loop_factory(name: str = DEFAULT_LOOP) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for ``asyncio.Runner(loop_factory=...)``; None = asyncio's default loop."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop {name!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if name == "uvloop":
            raise EventLoopUnavailable(
                f"event loop uvloop: not installed ({exc}); pip install uvloop, or use --event-loop asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def resolve(name: str = DEFAULT_LOOP) -> str:
    """The loop ``name`` gives in this environment: ``uvloop`` or ``asyncio``."""
    return "asyncio" if loop_factory(name) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], name: str = DEFAULT_LOOP) -> T:
    """``asyncio.run(main)`` on the loop ``name`` gives."""
    try:
        factory = loop_factory(name)
    except ValueError:
        main.close()  # never awaited: no "coroutine was never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
