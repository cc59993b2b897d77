"""Thin load clients that report through a Locust-style request event and also work without Locust.

Every client takes ``request_event`` by injection: Locust's ``environment.events.request`` inside a
locustfile, :class:`NoOpEvent` (the default) in pytest and scripts, or :class:`RecordingEvent` to look at what
was reported. Timing uses ``perf_counter`` through :func:`measure`; request names are low-cardinality
(``eh.raw send_batch``, ``d2c.send qos1``), never per partition or per device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class RequestEvent(Protocol):
    def fire(self, **kwargs: Any) -> Any: ...


class NoOpEvent:
    """Discards every report (pytest_locust's ``NoOpEvent``)."""

    def fire(self, **kwargs: Any) -> None:
        return None


@dataclass
class RecordingEvent:
    """Keeps every report (tests, the runner's own summaries)."""

    fired: list[dict[str, Any]] = field(default_factory=list)

    def fire(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)

    def failures(self) -> list[dict[str, Any]]:
        return [f for f in self.fired if f.get("exception") is not None]


@dataclass
class Measurement:
    """What :func:`measure` reports; the body may set ``response_length`` (e.g. events in a batch)."""

    response_length: int = 0
    context: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def measure(event: RequestEvent, request_type: str, name: str) -> Iterator[Measurement]:
    """Time the block and fire ``event`` once: success, or failure with the exception (re-raised)."""
    m = Measurement()
    start = time.perf_counter()
    try:
        yield m
    except Exception as exc:
        event.fire(
            request_type=request_type,
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=m.response_length,
            exception=exc,
            context=m.context,
        )
        raise
    event.fire(
        request_type=request_type,
        name=name,
        response_time=(time.perf_counter() - start) * 1000.0,
        response_length=m.response_length,
        exception=None,
        context=m.context,
    )
