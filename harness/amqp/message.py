"""AMQP 1.0 bare/annotated message sections (pure).

A message is a sequence of described sections: header 0x70, delivery-annotations 0x71,
message-annotations 0x72, properties 0x73, application-properties 0x74, body (data 0x75 repeated,
amqp-sequence 0x76 repeated, or one amqp-value 0x77), footer 0x78. ``scan_sections`` finds the byte span of
each section without decoding it (the fast path for storing and forwarding messages verbatim);
``decode_message`` decodes everything; ``encode_message`` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from enginehub.harness.amqp.codec import (
    Described,
    decode_value,
    encode_binary,
    encode_composite_list,
    encode_symbol_map,
    encode_value,
    skip_value,
)
from enginehub.harness.amqp.errors import DecodeError
from enginehub.harness.amqp.performatives import Header, Properties, composite_from

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78

_SECTION_NAMES = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}
MAX_SECTIONS = 100_000  # sections per message (a batch carries one data section per event)


class Section(NamedTuple):
    code: int
    start: int  # where the section (its 0x00 descriptor) starts
    value_start: int  # where the section's value starts
    end: int


def scan_sections(buf: bytes, start: int = 0, end: int | None = None) -> list[Section]:
    """Split ``buf[start:end]`` into message sections without decoding their values."""
    if end is None:
        end = len(buf)
    view = buf if end == len(buf) else buf[:end]
    out: list[Section] = []
    pos = start
    while pos < end:
        if view[pos] != 0x00:
            raise DecodeError(f"message section at offset {pos} is not a described value")
        if pos + 2 < end and view[pos + 1] == 0x53:  # small-ulong descriptor, the usual case
            code = view[pos + 2]
            vpos = pos + 3
        else:
            descriptor, vpos = decode_value(view, pos + 1, 1)
            if isinstance(descriptor, str):
                code = _SECTION_NAMES.get(descriptor, -1)
            elif isinstance(descriptor, int) and not isinstance(descriptor, bool):
                code = descriptor
            else:
                code = -1
        if not HEADER <= code <= FOOTER:
            raise DecodeError(f"unknown message section descriptor at offset {pos}")
        nxt = skip_value(view, vpos)
        out.append(Section(code, pos, vpos, nxt))
        if len(out) > MAX_SECTIONS:
            raise DecodeError(f"message has more than {MAX_SECTIONS} sections")
        pos = nxt
    return out


def section_value(buf: bytes, section: Section) -> Any:
    return decode_value(buf, section.value_start, 1)[0]


def binary_span(buf: bytes, section: Section) -> tuple[int, int]:
    """Return the span of the binary value of a data section (vbin8/vbin32)."""
    p = section.value_start
    code = buf[p]
    if code == 0xA0:
        return p + 2, section.end
    if code == 0xB0:
        return p + 5, section.end
    raise DecodeError(f"data section at offset {section.start} does not hold binary")


@dataclass(slots=True)
class Message:
    header: Header | None = None
    delivery_annotations: dict[Any, Any] | None = None
    message_annotations: dict[Any, Any] | None = None
    properties: Properties | None = None
    application_properties: dict[Any, Any] | None = None
    data: list[bytes] = field(default_factory=list)
    sequence: list[list[Any]] = field(default_factory=list)
    value: Any = None
    has_value: bool = False
    footer: dict[Any, Any] | None = None


def decode_message(buf: bytes) -> Message:
    msg = Message()
    for sec in scan_sections(buf):
        value = section_value(buf, sec)
        code = sec.code
        if code == HEADER:
            msg.header = composite_from(Described(HEADER, value)) if isinstance(value, list) else None
        elif code == PROPERTIES:
            msg.properties = composite_from(Described(PROPERTIES, value)) if isinstance(value, list) else None
        elif code == DATA:
            if not isinstance(value, bytes):
                raise DecodeError("data section does not hold binary")
            msg.data.append(value)
        elif code == AMQP_SEQUENCE:
            msg.sequence.append(value)
        elif code == AMQP_VALUE:
            msg.value, msg.has_value = value, True
        else:
            if value is not None and not isinstance(value, dict):
                raise DecodeError(f"section 0x{code:02x} must hold a map")
            if code == DELIVERY_ANNOTATIONS:
                msg.delivery_annotations = value
            elif code == MESSAGE_ANNOTATIONS:
                msg.message_annotations = value
            elif code == APPLICATION_PROPERTIES:
                msg.application_properties = value
            else:
                msg.footer = value
    return msg


def encode_section(code: int, value: Any) -> bytes:
    return b"\x00\x53" + bytes((code,)) + encode_value(value)


def encode_message(msg: Message) -> bytes:
    parts = []
    if msg.header is not None:
        parts.append(msg.header.encode_amqp())
    if msg.delivery_annotations:
        parts.append(b"\x00\x53\x71" + encode_symbol_map(msg.delivery_annotations))
    if msg.message_annotations:
        parts.append(b"\x00\x53\x72" + encode_symbol_map(msg.message_annotations))
    if msg.properties is not None:
        parts.append(msg.properties.encode_amqp())
    if msg.application_properties:
        parts.append(b"\x00\x53\x74" + encode_value(dict(msg.application_properties)))
    for d in msg.data:
        parts.append(b"\x00\x53\x75" + encode_binary(d))
    for s in msg.sequence:
        parts.append(b"\x00\x53\x76" + encode_composite_list(s))
    if msg.has_value:
        parts.append(encode_section(AMQP_VALUE, msg.value))
    if msg.footer:
        parts.append(b"\x00\x53\x78" + encode_symbol_map(msg.footer))
    return b"".join(parts)
