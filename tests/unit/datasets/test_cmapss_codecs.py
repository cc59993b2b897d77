"""Payload codecs: golden lines from the NASA files, roundtrip and error-contract property tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enginehub.datasets import cmapss, codecs
from enginehub.datasets.codecs import PayloadError
from enginehub.datasets.schema import COLUMN_NAMES, FIELD_NAMES, VALUE_DECIMALS, Row, quantize

FIRST_LINE = (
    "1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 "
    "47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190"
)
FIRST = codecs.decode_line(FIRST_LINE)


def _value(d: int) -> st.SearchStrategy[float]:
    # A value the column can carry exactly: an integer number of 10^-d steps, |value| < 10^7.
    return st.integers(-(10 ** (7 + d)), 10 ** (7 + d)).map(lambda n: n / 10**d)


column_rows = st.builds(
    lambda unit, cycle, values: Row(unit, cycle, tuple(values[:3]), tuple(values[3:])),
    st.integers(1, 10**9),
    st.integers(1, 10**6),
    st.tuples(*(_value(d) for d in VALUE_DECIMALS)),
)
any_rows = st.builds(
    lambda unit, cycle, values: Row(unit, cycle, tuple(values[:3]), tuple(values[3:])),
    st.integers(1, 10**9),
    st.integers(1, 10**6),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=24, max_size=24),
)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
extras = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in FIELD_NAMES),
    json_scalars | st.lists(json_scalars, max_size=3),
    max_size=4,
)


# ---------------------------------------------------------------- golden


def test_first_nasa_line_decodes_and_encodes_exactly() -> None:
    assert FIRST.unit == 1 and FIRST.cycle == 1
    assert FIRST.settings == (-0.0007, -0.0004, 100.0)
    assert FIRST.sensor(3) == 1589.7 and FIRST.sensor(17) == 392.0 and FIRST.sensor(21) == 23.419
    assert codecs.encode_line(FIRST) == FIRST_LINE
    assert codecs.decode_line(FIRST_LINE + "  \n") == FIRST
    assert codecs.decode_line(("\t" + FIRST_LINE.replace(" ", " \t ")).encode()) == FIRST


def test_json_golden_keeps_column_decimals_and_extras() -> None:
    text = codecs.encode_json(FIRST, {"dataset": "FD001"})
    assert text.startswith(
        '{"unit": 1, "cycle": 1, "setting1": -0.0007, "setting2": -0.0004, "setting3": 100.0,'
    )
    assert '"sensor3": 1589.70,' in text and '"sensor17": 392,' in text
    assert text.endswith('"sensor21": 23.4190, "dataset": "FD001"}')
    assert list(json.loads(text)) == [*FIELD_NAMES, "dataset"]
    assert codecs.decode_json_extras(text) == (FIRST, {"dataset": "FD001"})
    assert codecs.encode_json(FIRST, {}) == codecs.encode_json(FIRST)


@pytest.mark.parametrize("name", ["train_FD001.txt", "test_FD004.txt"])
def test_every_nasa_line_reencodes_to_its_source(cmapss_dir: Path, name: str) -> None:
    rows = cmapss.read_rows(cmapss_dir / name)
    with open(cmapss_dir / name, encoding="ascii") as fh:
        for row, line in zip(rows, fh, strict=True):
            assert codecs.encode_line(row) == line.rstrip(), line
    assert all(codecs.decode_json(codecs.encode_json(r)) == r for r in rows[:2000])


def test_row_to_columns_names_and_types() -> None:
    cols = codecs.row_to_columns(FIRST)
    assert list(cols) == list(COLUMN_NAMES)
    assert cols["unit #"] == 1 and type(cols["unit #"]) is int and type(cols["cycle #"]) is int
    assert cols["setting 3"] == 100.0 and cols["sensor 21"] == 23.419 and type(cols["sensor 17"]) is float
    assert codecs.columns_to_row(cols) == FIRST
    assert codecs.columns_to_row(cols | {"unit #": 1.0, "sensor 1": "518.67"}) == FIRST


# ---------------------------------------------------------------- properties


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(column_rows)
def test_line_roundtrip_exact(row: Row) -> None:
    text = codecs.encode_line(row)
    assert codecs.decode_line(text) == row
    assert codecs.decode_line(text.encode()) == row
    assert codecs.decode(text) == row


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(column_rows, extras)
def test_json_roundtrip_exact(row: Row, extra: dict) -> None:
    text = codecs.encode_json(row, extra)
    assert codecs.decode_json_extras(text) == (row, extra)
    assert codecs.decode_json(text.encode()) == row
    assert codecs.decode(b"  " + text.encode()) == row


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(any_rows)
@example(Row(1, 1, (0.00005, -0.00005, 1e300), (2.675,) * 21))
def test_any_finite_row_roundtrips_to_its_quantized_form(row: Row) -> None:
    q = quantize(row)
    assert codecs.decode_line(codecs.encode_line(row)) == q
    assert codecs.decode_json(codecs.encode_json(row)) == q
    assert all(
        abs(a - b) <= 0.5 * 10**-d * (1 + 1e-9) + abs(a) * 1e-15
        for a, b, d in zip(row.values, q.values, VALUE_DECIMALS, strict=True)
    )
    assert codecs.row_to_columns(row)["unit #"] == row.unit


def _only_payload_error(call, data) -> None:  # noqa: ANN001
    try:
        row = call(data)
    except PayloadError:
        return
    assert isinstance(row, Row) and 1 <= row.unit <= 2**31 - 1 and 1 <= row.cycle <= 2**31 - 1
    assert len(row.settings) == 3 and len(row.sensors) == 21
    assert all(isinstance(v, float) and math.isfinite(v) for v in row.values)


DECODERS = [codecs.decode_line, codecs.decode_json, codecs.decode, lambda d: codecs.decode_json_extras(d)[0]]


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_input_raises_only_payload_error(data: str | bytes) -> None:
    for decode in DECODERS:
        _only_payload_error(decode, data)


@settings(max_examples=300, deadline=None)
@given(column_rows, st.integers(0, 25), st.text(max_size=12))
def test_one_mutated_field_raises_only_payload_error(row: Row, index: int, junk: str) -> None:
    fields = codecs.encode_line(row).split(" ")
    fields[index] = junk
    _only_payload_error(codecs.decode_line, " ".join(fields))
    obj = json.loads(codecs.encode_json(row))
    obj[FIELD_NAMES[index]] = junk
    _only_payload_error(codecs.decode_json, json.dumps(obj))


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(st.recursive(json_scalars | st.floats(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_arbitrary_json_values_raise_only_payload_error(value: object) -> None:
    _only_payload_error(codecs.decode_json, json.dumps(value))


# ---------------------------------------------------------------- each bad input, with its reason

GOOD = FIRST_LINE.split()


def _line(index: int, value: str) -> str:
    fields = list(GOOD)
    fields[index] = value
    return " ".join(fields)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "empty seed payload"),
        ("  \r\n", "empty seed payload"),
        (" ".join(GOOD[:25]), "has 25 fields, expected 26"),
        (FIRST_LINE + " 1", "has 27 fields"),
        (FIRST_LINE + "\n" + FIRST_LINE, "has 51 fields"),
        (_line(0, "1.0"), r"field 1 \(unit\): expected an integer, got '1.0'"),
        (_line(0, "0"), r"field 1 \(unit\): must be in 1\.\.2147483647, got 0"),
        (_line(1, "2147483648"), r"field 2 \(cycle\): must be in 1\.\.2147483647"),
        (_line(1, "-4"), r"field 2 \(cycle\): expected an integer"),
        (_line(1, "1" * 19), r"field 2 \(cycle\): expected an integer"),
        (_line(6, "x"), r"field 7 \(sensor2\): expected a number, got 'x'"),
        (_line(5, "nan"), r"field 6 \(sensor1\): expected a number"),
        (_line(5, "inf"), "expected a number"),
        (_line(25, "1e999"), r"field 26 \(sensor21\): not a finite number"),
        (_line(3, "1_000"), "expected a number"),
        (_line(3, "１２"), "expected a number"),  # full-width digits: float() would take them
        (_line(3, "1,5"), "expected a number"),
        (b"\xff" + FIRST_LINE.encode(), "not UTF-8"),
        ("1 " * (codecs.MAX_PAYLOAD_BYTES // 2 + 1), "too long"),
        (b"1" * (codecs.MAX_PAYLOAD_BYTES + 1), "too long"),
        (12, "must be str or bytes"),
    ],
)
def test_bad_seed_payloads(payload: str | bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        codecs.decode_line(payload)  # type: ignore[arg-type]


GOOD_JSON = json.loads(codecs.encode_json(FIRST))


def _obj(**change: object) -> str:
    return json.dumps(GOOD_JSON | change)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "invalid JSON payload"),
        ("{", "invalid JSON payload"),
        ("[1, 2]", "must be an object, got list"),
        ('"text"', "must be an object, got str"),
        (json.dumps({k: v for k, v in GOOD_JSON.items() if k != "sensor9"}), "lacks sensor9"),
        ("{}", r"lacks unit, cycle, setting1 \(\+23 more\)"),
        (_obj(unit=True), "unit must be an integer"),
        (_obj(cycle=2.0), "cycle must be an integer"),
        (_obj(cycle=0), r"cycle must be in 1\.\.2147483647"),
        (_obj(unit=2**31), r"unit must be in 1\.\.2147483647, got '2147483648'"),
        (_obj(sensor4="641.82"), "sensor4 must be a number"),
        (_obj(sensor4=None), "sensor4 must be a number"),
        (_obj(sensor4=10**400), "sensor4 is not a finite number"),
        (_obj().replace("641.82", "1e999"), "sensor2 is not a finite number"),
        (_obj().replace("641.82", "NaN"), "NaN is not a number"),
        (_obj().replace("641.82", "-Infinity"), "-Infinity is not a number"),
        (_obj()[:-1] + ', "unit": 1}', "duplicate key 'unit'"),
        ("[" * 100_000 + "]" * 100_000, "too long|nested too deeply"),
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
        ('{"unit": ' + "9" * 5000 + "}", "invalid JSON payload"),
        (b'{"unit": "\xff"}', "not UTF-8"),
    ],
)
def test_bad_json_payloads(payload: str | bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        codecs.decode_json(payload)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (FIRST._replace(unit=0), r"unit must be in 1\.\.2147483647"),
        (FIRST._replace(cycle=2**31), r"cycle must be in 1\.\.2147483647"),
        (FIRST._replace(cycle=1.5), "cycle must be an int"),
        (FIRST._replace(sensors=FIRST.sensors[:20]), "sensors must be a tuple of 21"),
        (FIRST._replace(settings=(math.nan, 0.0, 100.0)), r"settings\[1\] is not finite"),
        ("1 1 0", "not a Row"),
    ],
)
def test_encoders_reject_malformed_rows(row: Row, reason: str) -> None:
    for encode in (codecs.encode_line, codecs.encode_json, codecs.row_to_columns):
        with pytest.raises(PayloadError, match=reason):
            encode(row)


def test_encode_json_rejects_bad_extras() -> None:
    with pytest.raises(PayloadError, match=r"extras reuse row keys: \['unit'\]"):
        codecs.encode_json(FIRST, {"unit": 3})
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        codecs.encode_json(FIRST, {"when": object()})
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        codecs.encode_json(FIRST, {"x": math.nan})


def test_columns_to_row_rejects() -> None:
    cols = codecs.row_to_columns(FIRST)
    with pytest.raises(PayloadError, match="columns lack sensor 21"):
        codecs.columns_to_row({k: v for k, v in cols.items() if k != "sensor 21"})
    with pytest.raises(PayloadError, match="not numbers"):
        codecs.columns_to_row(cols | {"sensor 2": "abc"})
    with pytest.raises(PayloadError, match="unit must be an int"):
        codecs.columns_to_row(cols | {"unit #": 1.5})
    with pytest.raises(PayloadError, match=r"sensors\[1\] is not finite"):
        codecs.columns_to_row(cols | {"sensor 1": math.inf})


def test_decode_dispatch_rejects_non_text() -> None:
    with pytest.raises(PayloadError, match="must be str or bytes"):
        codecs.decode(None)  # type: ignore[arg-type]
    assert codecs.decode(bytearray(FIRST_LINE.encode())) == FIRST
