"""The C-MAPSS row: one engine (unit) at one cycle, 3 operational settings and 21 sensor readings.

Column layout of the NASA text files and of the seed pipeline's payload line (26 numeric fields):

    unit cycle setting1 setting2 setting3 sensor1 ... sensor21

Number formats are fixed in all twelve original files (docs/cmapss.md section 2): unit and cycle are
integers; settings 1 and 2 have 4 decimals; setting 3 has 1 decimal; sensors 15 and 21 have 4 decimals;
sensors 17 and 18 are integers; all other sensors have 2 decimals. `DECIMALS` records that per column,
so a row printed with `format_values` reproduces the source text exactly (less the trailing spaces).

Standard library only: the simulator, the ingest consumer and the harness all import this.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

LOG = logging.getLogger(__name__)

N_SETTINGS = 3
N_SENSORS = 21
N_COLUMNS = 2 + N_SETTINGS + N_SENSORS  # 26

#: Names used in JSON payloads: "unit", "cycle", "setting1".."setting3", "sensor1".."sensor21".
FIELD_NAMES: tuple[str, ...] = (
    "unit",
    "cycle",
    *(f"setting{i}" for i in range(1, N_SETTINGS + 1)),
    *(f"sensor{i}" for i in range(1, N_SENSORS + 1)),
)

#: Typed columns of the original pipeline's table: "unit #", "cycle #", "setting 1".., "sensor 1"..
COLUMN_NAMES: tuple[str, ...] = (
    "unit #",
    "cycle #",
    *(f"setting {i}" for i in range(1, N_SETTINGS + 1)),
    *(f"sensor {i}" for i in range(1, N_SENSORS + 1)),
)

#: Decimals printed per column, in file order (26 entries; unit and cycle are integers).
DECIMALS: tuple[int, ...] = (
    0,  # unit
    0,  # cycle
    4,  # setting 1
    4,  # setting 2
    1,  # setting 3
    *(4 if s in (15, 21) else 0 if s in (17, 18) else 2 for s in range(1, N_SENSORS + 1)),
)

#: Largest unit / cycle number: the typed columns "unit #" and "cycle #" are 32-bit INTEGER in CrateDB.
MAX_ID = 2**31 - 1

#: Decimals of the 24 float columns only (settings then sensors).
VALUE_DECIMALS: tuple[int, ...] = DECIMALS[2:]


class Row(NamedTuple):
    """One engine at one cycle: 3 `settings`, 21 `sensors` (sensor i is `sensors[i - 1]`)."""

    unit: int
    cycle: int
    settings: tuple[float, ...]
    sensors: tuple[float, ...]

    @property
    def values(self) -> tuple[float, ...]:
        """The 24 float columns in file order: settings 1..3 then sensors 1..21."""
        return self.settings + self.sensors

    def sensor(self, number: int) -> float:
        """Sensor `number` (1-based, as in the NASA readme)."""
        if not 1 <= number <= N_SENSORS:
            raise IndexError(f"sensor number must be 1..{N_SENSORS}, got {number}")
        return self.sensors[number - 1]


def make_row(unit: int, cycle: int, values: tuple[float, ...] | list[float]) -> Row:
    """Build a Row from unit, cycle and the 24 float columns (settings 1..3, sensors 1..21), checked.

    Raises ValueError when a count is wrong, unit/cycle is not an int >= 1, or a value is not finite.
    """
    check = Row(unit, cycle, tuple(values[:N_SETTINGS]), tuple(values[N_SETTINGS:]))
    if len(values) != N_SETTINGS + N_SENSORS:
        raise ValueError(f"expected {N_SETTINGS + N_SENSORS} values, got {len(values)}")
    problem = row_problem(check)
    if problem:
        raise ValueError(problem)
    return Row(unit, cycle, tuple(float(v) for v in check.settings), tuple(float(v) for v in check.sensors))


def row_problem(row: object) -> str | None:
    """Why `row` is not a well-formed Row (a sentence), or None when it is."""
    if not isinstance(row, tuple) or len(row) != 4:
        return f"not a Row: {type(row).__name__}"
    unit, cycle, settings, sensors = row
    for name, v in (("unit", unit), ("cycle", cycle)):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{name} must be an int, got {type(v).__name__}"
        if not 1 <= v <= MAX_ID:
            return f"{name} must be in 1..{MAX_ID}, got {v}"
    for name, group, n in (("settings", settings, N_SETTINGS), ("sensors", sensors, N_SENSORS)):
        if not isinstance(group, tuple) or len(group) != n:
            return f"{name} must be a tuple of {n} floats"
        for i, v in enumerate(group, 1):
            if isinstance(v, bool) or not isinstance(v, int | float):
                return f"{name}[{i}] must be a number, got {type(v).__name__}"
            if not math.isfinite(v):
                return f"{name}[{i}] is not finite: {v!r}"
    return None


def quantize(row: Row) -> Row:
    """The row with every value rounded to its column's decimals (what the line format can carry).

    Rounding goes through the printed decimal text, so quantize(row) == decode_line(encode_line(row)).
    """
    values = tuple(float(f"{v:.{d}f}") for v, d in zip(row.values, VALUE_DECIMALS, strict=True))
    return Row(row.unit, row.cycle, values[:N_SETTINGS], values[N_SETTINGS:])


def format_values(row: Row) -> list[str]:
    """The 26 fields of `row` as text, each with its column's decimals (no validation)."""
    out = [str(row.unit), str(row.cycle)]
    out.extend(f"{v:.{d}f}" for v, d in zip(row.values, VALUE_DECIMALS, strict=True))
    return out
