"""Fleet replay: N devices, each replaying one engine (a C-MAPSS unit) cycle by cycle.

Device ``g`` (global index, 0-based; id ``engine-{g+1:04d}``) starts with engine number ``g + 1``. When its
engine reaches its last cycle, a fresh engine takes its place: engine ``e + N`` (N = devices in the whole
fleet, across workers), so engine numbers never repeat within a run and need no coordination between
worker processes. Engine ``e`` replays source unit ``(e - 1) % U + 1`` of the dataset (U source units), with
its unit number rewritten to ``e`` so every (unit, cycle) of a run is unique. With ``replace=False`` a
device stops when its first engine ends. ``maintenance(d)`` (the ``maintenance`` direct method) swaps the
device's engine for a fresh unit at once, the next engine number in its sequence: its cycles restart at 1
and, the engine number being new, so do its message ids.

Pure: no clock, no I/O; the data comes from a ``UnitSource``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from enginehub.datasets.schema import Row

LOG = logging.getLogger(__name__)


class UnitSource(Protocol):
    """Rows per unit of one dataset."""

    name: str

    def unit_numbers(self) -> Sequence[int]: ...

    def rows(self, unit: int) -> Sequence[Row]: ...


class MemorySource:
    """A ``UnitSource`` over rows held in memory (grouped by their unit, ordered by cycle)."""

    def __init__(self, name: str, rows: Sequence[Row]) -> None:
        self.name = name
        grouped: dict[int, list[Row]] = {}
        for row in rows:
            grouped.setdefault(row.unit, []).append(row)
        for unit_rows in grouped.values():
            unit_rows.sort(key=lambda r: r.cycle)
        if not grouped:
            raise ValueError(f"dataset {name} has no rows")
        self._units = grouped
        self._numbers = sorted(grouped)

    def unit_numbers(self) -> Sequence[int]:
        return self._numbers

    def rows(self, unit: int) -> Sequence[Row]:
        return self._units[unit]


@dataclass
class _Cursor:
    engine: int
    source_unit: int
    rows: Sequence[Row]
    pos: int = 0


class Fleet:
    """Which row each device sends next."""

    def __init__(
        self,
        source: UnitSource,
        devices: int,
        *,
        total_devices: int | None = None,
        first_index: int = 0,
        replace: bool = True,
    ) -> None:
        total = total_devices if total_devices is not None else devices
        if devices < 1 or first_index < 0 or first_index + devices > total:
            raise ValueError(f"bad fleet slice: {devices} devices from {first_index} of {total}")
        self.source = source
        self.devices = devices
        self.total_devices = total
        self.first_index = first_index
        self.replace = replace
        self._numbers = list(source.unit_numbers())
        self._cursors = [self._cursor(first_index + d + 1) for d in range(devices)]
        self.engines_started = devices
        self.engines_finished = 0

    def _cursor(self, engine: int) -> _Cursor:
        unit = self._numbers[(engine - 1) % len(self._numbers)]
        return _Cursor(engine, unit, self.source.rows(unit))

    def engine_of(self, device: int) -> int:
        return self._cursors[device].engine

    def source_unit_of(self, device: int) -> int:
        return self._cursors[device].source_unit

    def cycle_of(self, device: int) -> int:
        """Cycles sent so far by the device's current engine."""
        return self._cursors[device].pos

    def maintenance(self, device: int) -> tuple[int, int]:
        """Replace ``device``'s engine by a fresh unit now; (previous engine, new engine)."""
        old = self._cursors[device].engine
        self._cursors[device] = self._cursor(old + self.total_devices)
        self.engines_started += 1
        LOG.debug("device %d: engine %d replaced by %d (maintenance)", device, old, old + self.total_devices)
        return old, old + self.total_devices

    def next_row(self, device: int) -> Row | None:
        """The next row for `device` (unit = engine number), or None when it is done (``replace=False``)."""
        cur = self._cursors[device]
        if cur.pos >= len(cur.rows):
            self.engines_finished += 1
            if not self.replace:
                return None
            cur = self._cursors[device] = self._cursor(cur.engine + self.total_devices)
            self.engines_started += 1
        row = cur.rows[cur.pos]
        cur.pos += 1
        return row._replace(unit=cur.engine)
