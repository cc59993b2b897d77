"""What a simulated engine does when the cloud tells it something (pure: no I/O, no SDK).

Direct methods (payload JSON; the response is ``(status, payload)``):

    setRate      {"rate": R}   this device sends R messages/s from now on (the fleet's share, R/N, before)
    pause        -             no sends (its engine does not advance) until resume
    resume       -             sends again at its rate
    maintenance  -             its engine is replaced by a fresh unit: cycles restart at 1 (a new engine
                               number); the response adds previousEngine and previousCycles
    getState     -             nothing changes; the state is returned

Desired properties: ``sendIntervalS`` (seconds between this device's sends; same as setRate 1/S) and
``paused`` (true/false). Unknown keys are acknowledged as ignored.

Each returns the device's state, which the runner also writes to its reported properties (``state``,
``rate``, ``engine``, ``cycle``, ``lastCommand``, ``sendIntervalS`` when set). Every command is logged at
INFO on this module's logger (``simulate`` shows it on stderr).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

LOG = logging.getLogger(__name__)

METHODS = ("setRate", "pause", "resume", "maintenance", "getState")
MAX_RATE = 1000.0


class FleetLike(Protocol):
    def engine_of(self, device: int) -> int: ...

    def cycle_of(self, device: int) -> int: ...

    def maintenance(self, device: int) -> tuple[int, int]: ...


class PacerLike(Protocol):
    def device_rate(self, device: int) -> float: ...

    def set_device_rate(self, device: int, rate: float, now: float) -> None: ...


@dataclass
class Commander:
    """Applies commands to one process's fleet slice; devices are local indexes, named by ``names``."""

    fleet: FleetLike
    pacer: Callable[[], PacerLike | None]  # the pacer exists once the run has started
    names: list[str]
    now: Callable[[], float]
    paused: set[int] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    _last: dict[int, str] = field(default_factory=dict)
    _interval: dict[int, float] = field(default_factory=dict)

    def state(self, device: int) -> dict[str, Any]:
        pacer = self.pacer()
        out: dict[str, Any] = {
            "state": "paused" if device in self.paused else "running",
            "rate": round(pacer.device_rate(device), 6) if pacer is not None else None,
            "engine": self.fleet.engine_of(device),
            "cycle": self.fleet.cycle_of(device),
            "lastCommand": self._last.get(device),
        }
        if device in self._interval:
            out["sendIntervalS"] = self._interval[device]
        return out

    def _set_rate(self, device: int, rate: Any, what: str) -> str | None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            return f"{what} must be a number"
        if not 0 < rate <= MAX_RATE:
            return f"{what} must be within (0, {MAX_RATE:g}] messages/s"
        pacer = self.pacer()
        if pacer is None:
            return "the run has not started yet"
        pacer.set_device_rate(device, float(rate), self.now())
        return None

    def method(self, device: int, name: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """(status, response payload) for direct method ``name``: 200 done, 400 bad payload, 404 unknown."""
        dev = self.names[device]
        self.counts[name] = self.counts.get(name, 0) + 1
        if name == "setRate":
            rate = payload.get("rate") if isinstance(payload, dict) else payload
            error = self._set_rate(device, rate, "setRate payload {'rate': R}")
            if error:
                LOG.warning("%s: setRate(%r) refused: %s", dev, payload, error)
                return 400, {"error": error}
            self._interval.pop(device, None)
            LOG.info("%s: told to setRate %g msg/s", dev, float(rate))
        elif name == "pause":
            self.paused.add(device)
            LOG.info("%s: told to pause", dev)
        elif name == "resume":
            self.paused.discard(device)
            LOG.info("%s: told to resume", dev)
        elif name == "maintenance":
            cycles = self.fleet.cycle_of(device)
            old, new = self.fleet.maintenance(device)
            LOG.info(
                "%s: told to do maintenance: engine %d (after %d cycles) replaced by fresh engine %d",
                dev,
                old,
                cycles,
                new,
            )
            self._last[device] = name
            return 200, {**self.state(device), "previousEngine": old, "previousCycles": cycles}
        elif name != "getState":
            LOG.warning("%s: unknown direct method %r (known: %s)", dev, name, ", ".join(METHODS))
            return 404, {"error": f"unknown method {name!r}; known: {', '.join(METHODS)}"}
        self._last[device] = name
        return 200, self.state(device)

    def desired(self, device: int, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a desired-properties patch; the reported properties to write back."""
        dev = self.names[device]
        ignored = []
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if key == "sendIntervalS":
                if value is None:
                    continue
                interval = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
                error = self._set_rate(device, 1.0 / interval, "sendIntervalS") if interval > 0 else None
                if interval <= 0 or error:
                    why = error or "must be > 0"
                    LOG.warning("%s: desired sendIntervalS=%r refused: %s", dev, value, why)
                    continue
                self._interval[device] = float(value)
                LOG.info("%s: desired sendIntervalS=%g s applied", dev, float(value))
            elif key == "paused":
                if value is True:
                    self.paused.add(device)
                elif value in (False, None):
                    self.paused.discard(device)
                LOG.info("%s: desired paused=%r applied", dev, value)
            else:
                ignored.append(key)
        if ignored:
            LOG.info("%s: desired properties %s ignored (known: sendIntervalS, paused)", dev, ignored)
        self._last[device] = "desired"
        return self.state(device)
