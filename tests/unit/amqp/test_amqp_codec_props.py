"""Codec properties: hypothesis round-trips, the fuzzed error contract, every bound at limit and limit+1."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.amqp import codec
from enginehub.harness.amqp import message as amqp_message
from enginehub.harness.amqp.codec import (
    Array,
    Byte,
    Char,
    Described,
    Float,
    Int,
    Short,
    Symbol,
    Timestamp,
    Ubyte,
    Uint,
    Ulong,
    Ushort,
    decode_value,
    encode_value,
    skip_value,
)
from enginehub.harness.amqp.errors import CODEC_ERRORS, DecodeError, EncodeError, LimitExceeded
from enginehub.harness.amqp.framing import FrameParser, FramingError, decode_performative, encode_frame
from enginehub.harness.amqp.message import Message, decode_message, encode_message, scan_sections
from enginehub.harness.amqp.performatives import Properties
from enginehub.harness.eventhubs.message import (
    BATCH_MESSAGE_FORMAT,
    MessageFormatError,
    decode_event,
    encode_event,
    store_delivery,
)

ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def _ints(cls: type, lo: int, hi: int) -> st.SearchStrategy:
    return st.integers(lo, hi).map(cls)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints(Ubyte, 0, 255),
    _ints(Ushort, 0, 0xFFFF),
    _ints(Uint, 0, 0xFFFFFFFF),
    _ints(Ulong, 0, (1 << 64) - 1),
    _ints(Byte, -128, 127),
    _ints(Short, -(1 << 15), (1 << 15) - 1),
    _ints(Int, -(1 << 31), (1 << 31) - 1),
    st.integers(-(1 << 63), (1 << 63) - 1),
    _ints(Timestamp, -(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=False),
    st.floats(width=32, allow_nan=False).map(Float),
    st.uuids(),
    st.binary(max_size=300),
    st.text(max_size=300),
    ascii_text.map(Symbol),
    st.characters().map(Char),
)
hashable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    ascii_text.map(Symbol),
    st.text(max_size=20),
)
arrays = st.one_of(
    st.lists(ascii_text.map(Symbol), max_size=5).map(lambda v: Array(v, code=0xB3)),
    st.lists(st.text(max_size=10), max_size=5).map(lambda v: Array(v, code=0xB1)),
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=5).map(lambda v: Array(v, code=0x71)),
)
values = st.recursive(
    st.one_of(scalars, arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(hashable, children, max_size=6),
        st.builds(Described, st.one_of(_ints(Ulong, 0, (1 << 64) - 1), ascii_text.map(Symbol)), children),
    ),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_keeps_value_and_type(value: object) -> None:
    raw = encode_value(value)
    decoded, end = decode_value(raw)
    assert end == len(raw)
    assert decoded == value
    assert encode_value(decoded) == raw  # types survive (ubyte stays ubyte, symbol stays symbol, ...)
    assert skip_value(raw, 0) == len(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_codec_errors(data: bytes) -> None:
    for fn in (lambda: decode_value(data), lambda: skip_value(data, 0), lambda: decode_performative(data),
               lambda: scan_sections(data), lambda: decode_message(data)):  # fmt: skip
        try:
            fn()
        except CODEC_ERRORS:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0, BATCH_MESSAGE_FORMAT]))
def test_arbitrary_deliveries_are_rejected_with_a_clear_error(data: bytes, fmt: int) -> None:
    try:
        store_delivery(data, fmt)
    except MessageFormatError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_frame_parser_only_raises_framing_errors(data: bytes) -> None:
    parser = FrameParser(512)
    parser.feed(data)
    try:
        list(parser.frames())
    except FramingError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.binary(max_size=500),
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.integers(-1000, 1000), st.text(max_size=10)), max_size=4
    ),
    st.dictionaries(ascii_text.filter(lambda k: not k.startswith("x-opt-")), st.integers(0, 9), max_size=3),
)
def test_encode_event_round_trip(body: bytes, app: dict, ann: dict) -> None:
    payload = encode_event(body, properties={"message_id": "m"}, application_properties=app, annotations=ann)
    msg = decode_event(payload, 9, 99, 1234, "pk")
    assert msg.data == [body]
    assert (msg.application_properties or {}) == app
    assert msg.properties.message_id == "m"
    assert msg.message_annotations["x-opt-sequence-number"] == 9
    assert msg.message_annotations["x-opt-offset"] == "99"
    assert msg.message_annotations["x-opt-partition-key"] == "pk"
    for k, v in ann.items():
        assert msg.message_annotations[k] == v


def test_encode_event_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="x-opt-offset"):
        encode_event(b"x", annotations={"x-opt-offset": "1"})
    with pytest.raises(ValueError, match="unknown AMQP properties"):
        encode_event(b"x", properties={"nope": 1})
    with pytest.raises(TypeError, match="body must be bytes"):
        encode_event("text")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_event(b"x", application_properties={"k": object()})


def test_message_round_trip_and_section_scan() -> None:
    msg = Message(
        properties=Properties(message_id=uuid.UUID(int=1), content_type=Symbol("a/b")),
        application_properties={"a": 1},
        message_annotations={Symbol("x"): "y"},
        data=[b"one", b"two"],
    )
    raw = encode_message(msg)
    assert decode_message(raw) == msg
    assert [s.code for s in scan_sections(raw)] == [0x72, 0x73, 0x74, 0x75, 0x75]


# ---------------------------------------------------------------------------------------------- bounds
def _nested(depth: int) -> bytes:
    raw = b"\xc0\x01\x00"  # an empty list8 (list0 has no body, so it is not a nesting level)
    for _ in range(depth - 1):
        raw = (
            b"\xc0" + bytes((len(raw) + 1, 1)) + raw
            if len(raw) < 250
            else b"\xd0" + struct.pack(">II", len(raw) + 4, 1) + raw
        )
    return raw


def test_nesting_depth_at_limit_and_over() -> None:
    decode_value(_nested(codec.MAX_DEPTH))
    with pytest.raises(LimitExceeded):
        decode_value(_nested(codec.MAX_DEPTH + 1))


def test_described_nesting_is_bounded_too() -> None:
    raw = b"\x40"
    for _ in range(codec.MAX_DEPTH + 1):
        raw = b"\x00\x53\x01" + raw
    with pytest.raises(LimitExceeded):
        decode_value(raw)


def test_element_count_at_limit_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_COUNT", 1000)
    at = b"\xd0" + struct.pack(">II", 4 + 1000, 1000) + b"\x40" * 1000
    assert decode_value(at)[0] == [None] * 1000
    over = b"\xd0" + struct.pack(">II", 4 + 1001, 1001) + b"\x40" * 1001
    with pytest.raises(LimitExceeded):
        decode_value(over)
    array_over = b"\xf0" + struct.pack(">II", 5, 1001) + b"\x40"  # 1001 zero-width nulls: no bytes needed
    with pytest.raises(LimitExceeded):
        decode_value(array_over)


def test_real_count_limit_rejects_huge_claims_without_allocating() -> None:
    claim = b"\xf0" + struct.pack(">II", 5, codec.MAX_COUNT + 1) + b"\x40"
    with pytest.raises(LimitExceeded):
        decode_value(claim)
    array_at = b"\xf0" + struct.pack(">II", 5, 1000) + b"\x40"
    assert decode_value(array_at)[0] == [None] * 1000


def test_frame_size_at_limit_and_over() -> None:
    body = b"\x00" * (512 - 8)
    parser = FrameParser(512)
    parser.feed(encode_frame(0, body))
    assert parser.next_frame().body == body
    parser.feed(encode_frame(0, body + b"\x00"))
    with pytest.raises(FramingError, match="exceeds"):
        parser.next_frame()


def test_sections_per_message_at_limit_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqp_message, "MAX_SECTIONS", 10)
    section = b"\x00\x53\x75\xa0\x01x"
    assert len(scan_sections(section * 10)) == 10
    with pytest.raises(DecodeError, match="sections"):
        scan_sections(section * 11)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xa1", b"\xa1\x05ab", b"\xb1\x00\x00\x00\x09abc", b"\xc0\x05\x02\x40",
     b"\xc1\x03\x01\x40\x40", b"\x56\x02", b"\xff", b"\xa1\x02\xff\xfe", b"\xa3\x01\xff",
     b"\x73\x00\x11\x00\x00", b"\x00\xc0\x01\x00\x40"],
)  # fmt: skip
def test_malformed_values_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_value(raw)


@pytest.mark.parametrize(
    "value", [Ubyte(256), Uint(-1), Ulong(1 << 64), 1 << 63, Byte(200), Symbol("é"), object(), Char("ab")]
)
def test_unencodable_values_raise_encode_error(value: object) -> None:
    with pytest.raises(EncodeError):
        encode_value(value)


def test_composite_decode_is_tolerant_of_short_lists_and_symbolic_descriptors() -> None:
    short = b"\x00\x53\x10\xc0\x03\x01\xa1\x00"  # open with only container-id
    perf, _ = decode_performative(short)
    assert perf.container_id == "" and perf.max_frame_size is None
    symbolic = b"\x00\xa3\x0famqp:close:list\x45"  # symbol descriptor, list0
    perf, _ = decode_performative(symbolic)
    assert type(perf).__name__ == "Close" and perf.error is None
    with pytest.raises(DecodeError, match="unknown performative"):
        decode_performative(b"\x00\x53\x30\x45")
