"""The shared Row type and the per-column precision table."""

from __future__ import annotations

import math

import pytest

from enginehub.datasets import COLUMN_NAMES, DECIMALS, FIELD_NAMES, Row
from enginehub.datasets.schema import format_values, make_row, quantize, row_problem

VALUES = [0.0001, -0.0002, 100.0] + [float(i) + 0.25 for i in range(1, 22)]


def test_column_tables() -> None:
    assert len(DECIMALS) == len(FIELD_NAMES) == len(COLUMN_NAMES) == 26
    assert FIELD_NAMES[:3] == ("unit", "cycle", "setting1") and FIELD_NAMES[-1] == "sensor21"
    assert COLUMN_NAMES[:3] == ("unit #", "cycle #", "setting 1") and COLUMN_NAMES[-1] == "sensor 21"
    # docs/cmapss.md section 2: settings 4/4/1, sensors 15 and 21 four, 17 and 18 integers, others 2.
    assert DECIMALS[:5] == (0, 0, 4, 4, 1)
    sensors = dict(zip(range(1, 22), DECIMALS[5:], strict=True))
    assert {s for s, d in sensors.items() if d == 4} == {15, 21}
    assert {s for s, d in sensors.items() if d == 0} == {17, 18}
    assert sum(d == 2 for d in sensors.values()) == 17


def test_make_row_and_accessors() -> None:
    row = make_row(3, 7, VALUES)
    assert row == Row(3, 7, tuple(VALUES[:3]), tuple(VALUES[3:]))
    assert row.values == tuple(VALUES) and row.sensor(1) == 1.25 and row.sensor(21) == 21.25
    with pytest.raises(IndexError):
        row.sensor(22)
    with pytest.raises(IndexError):
        row.sensor(0)
    assert make_row(1, 1, [1] * 24).sensors[0] == 1.0 and isinstance(
        make_row(1, 1, [1] * 24).sensors[0], float
    )


@pytest.mark.parametrize(
    ("unit", "cycle", "values", "message"),
    [
        (1, 1, VALUES[:23], "expected 24 values, got 23"),
        (0, 1, VALUES, r"unit must be in 1\.\.2147483647, got 0"),
        (1, -3, VALUES, r"cycle must be in 1\.\.2147483647"),
        (2**31, 1, VALUES, r"unit must be in 1\.\.2147483647, got 2147483648"),
        (1.0, 1, VALUES, "unit must be an int"),
        (True, 1, VALUES, "unit must be an int"),
        (1, 1, [math.nan, *VALUES[1:]], r"settings\[1\] is not finite"),
        (1, 1, [*VALUES[:-1], math.inf], r"sensors\[21\] is not finite"),
        (1, 1, [*VALUES[:-1], "1"], r"sensors\[21\] must be a number"),
    ],
)
def test_make_row_rejects(unit: object, cycle: object, values: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_row(unit, cycle, values)  # type: ignore[arg-type]


def test_row_problem_shapes() -> None:
    assert row_problem(make_row(1, 1, VALUES)) is None
    assert "not a Row" in (row_problem("1 2 3") or "")
    assert "sensors must be a tuple of 21" in (row_problem(Row(1, 1, (0.0, 0.0, 0.0), (1.0,))) or "")


def test_quantize_and_format_values() -> None:
    row = make_row(
        2, 9, [0.123456, -0.00004, 99.96] + [1.005] * 14 + [8.41949] + [0.5, 391.6, 2388.4] + [1.0] * 3
    )
    q = quantize(row)
    assert q.settings == (0.1235, -0.0, 100.0)
    assert q.sensor(15) == 8.4195 and q.sensor(17) == 392.0 and q.sensor(18) == 2388.0
    fields = format_values(q)
    assert fields[:5] == ["2", "9", "0.1235", "-0.0000", "100.0"]
    assert fields[5 + 14] == "8.4195" and fields[5 + 16] == "392" and fields[-1] == "1.0000"
    assert quantize(q) == q
