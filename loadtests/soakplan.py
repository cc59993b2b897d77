"""The chaos soak's fault plan: a pure, seeded function of (seed, duration, nodes) (no I/O, no clock).

:func:`schedule` returns the faults the executor (``enginehub.loadtests.soak``) applies, in time order.
Every kind in :data:`KINDS` appears at least once (so a short CI run exercises each); longer runs add
more faults, one every :data:`MEAN_GAP_S` on average, of kinds drawn at random. The run's span
``[WARMUP_S, duration - TAIL_S]`` is cut into equal slots, one fault per slot, placed at a random time in
the first half of its slot, so faults never overlap in the plan and each leaves the rest of its slot for
recovery. (The executor applies a fault no earlier than its time and not before the previous one has
recovered, so a slow recovery shifts the rest of the plan; ``at`` here is the earliest time.)

Kinds and their parameters (``hold``: seconds the fault lasts; ``target``: the ingest node; ``count``):

- ``kill9``: SIGKILL an ingest node (no drain, no checkpoint, ownership left to expire); restart it after
  ``hold`` s.
- ``sigterm``: SIGTERM an ingest node (a graceful drain, exit 0 expected); restart it after ``hold`` s.
- ``eventhubs_restart``: SIGKILL the stack process (Event Hubs emulator, persistent data dir, and the IoT
  Hub emulator that routes into it); start it again on the same ports after ``hold`` s.
- ``sink_outage``: make the SQLite sink file unwritable for ``hold`` s.
- ``device_drop``: the IoT Hub drops every device connection (the devices reconnect).
- ``poison``: ``count`` events whose payload is not UTF-8 (each must become one dead letter).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("kill9", "sigterm", "eventhubs_restart", "sink_outage", "device_drop", "poison")
#: seconds at the start with no fault (the load settles) and at the end (the last fault recovers)
WARMUP_S = 4.0
TAIL_S = 4.0
#: the shortest slot a fault gets: its hold plus a recovery fits in it on a loaded 2-core machine
MIN_SLOT_S = 5.5
#: one fault per this many seconds on average in a long run
MEAN_GAP_S = 20.0
#: (low, high) of each kind's hold in seconds
HOLDS = {
    "kill9": (1.0, 4.0),
    "sigterm": (1.0, 4.0),
    "eventhubs_restart": (1.0, 4.0),
    "sink_outage": (2.0, 8.0),
    "device_drop": (0.0, 0.0),
    "poison": (0.0, 0.0),
}
POISON_COUNT = (1, 5)
NODE_KINDS = ("kill9", "sigterm")


@dataclass(frozen=True)
class Fault:
    """One planned fault: ``at`` s after the load started (the earliest time it may be applied)."""

    at: float
    kind: str
    hold: float = 0.0
    target: int | None = None
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def min_duration(kinds: tuple[str, ...] = KINDS) -> float:
    """The shortest ``duration`` for which :func:`schedule` fits one fault of every kind."""
    return WARMUP_S + TAIL_S + MIN_SLOT_S * len(kinds)


def schedule(
    seed: int,
    duration: float,
    nodes: int = 2,
    kinds: tuple[str, ...] = KINDS,
    mean_gap: float = MEAN_GAP_S,
) -> list[Fault]:
    """The fault plan (see the module docstring); ValueError when ``duration`` cannot hold every kind."""
    if not kinds:
        raise ValueError("at least one fault kind is needed")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"fault kinds repeated: {list(kinds)}")
    if nodes < 2 and set(kinds) & set(NODE_KINDS):
        raise ValueError("node faults need at least 2 ingest nodes (one keeps the partitions)")
    if mean_gap <= 0:
        raise ValueError(f"mean_gap must be > 0, not {mean_gap}")
    need = min_duration(kinds)
    if duration < need:
        raise ValueError(
            f"--duration {duration:g} s is too short for one fault of each of {len(kinds)} kinds "
            f"(at least {need:g} s)"
        )
    rng = random.Random(seed)
    span = duration - WARMUP_S - TAIL_S
    n = max(len(kinds), min(int(span // mean_gap), int(span // MIN_SLOT_S)))
    order = list(kinds) + [rng.choice(kinds) for _ in range(n - len(kinds))]
    rng.shuffle(order)
    slot = span / n
    plan: list[Fault] = []
    for i, kind in enumerate(order):
        at = WARMUP_S + i * slot + rng.uniform(0.0, slot / 2.0)
        low, high = HOLDS[kind]
        hold = round(rng.uniform(low, high), 2) if high > 0 else 0.0
        target = rng.randrange(nodes) if kind in NODE_KINDS else None
        count = rng.randint(*POISON_COUNT) if kind == "poison" else 0
        plan.append(Fault(at=round(at, 2), kind=kind, hold=hold, target=target, count=count))
    return plan
