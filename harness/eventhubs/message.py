"""The stored form of an event (the opaque ``StoredEvent.payload``) and the fast delivery path.

Stored payload, format 1 (stable: the IoT Hub emulator writes it in-process through ``encode_event``)::

    0x01                      format version
    head_len  uint32 BE       bytes of the producer's header section (0x70), kept verbatim (may be 0)
    ann_len   uint32 BE       bytes of the user's message-annotation map ENTRIES (key, value, key, value...)
    ann_count uint32 BE       number of elements in those entries (2 per annotation)
    head | ann entries | tail tail = every section after the annotations (properties, application-properties,
                              body, footer), verbatim

Delivery-annotations sent by a producer are hop-by-hop and dropped. The service-owned annotations
``x-opt-sequence-number``, ``x-opt-offset``, ``x-opt-enqueued-time``, ``x-opt-partition-key`` are never
stored: ``delivery_bytes`` writes them from the ``StoredEvent`` in front of the user's entries, so delivery
is a few slices and one struct pack (no decode, no re-encode of the message).
"""

from __future__ import annotations

import datetime
import struct
import time
import uuid
from collections.abc import Iterable
from typing import Any

from enginehub.harness.amqp.codec import (
    Symbol,
    Timestamp,
    Ulong,
    decode_value,
    encode_binary,
    encode_symbol,
    encode_value,
)
from enginehub.harness.amqp.errors import DecodeError
from enginehub.harness.amqp.message import (
    DELIVERY_ANNOTATIONS,
    HEADER,
    MESSAGE_ANNOTATIONS,
    Message,
    binary_span,
    decode_message,
    scan_sections,
)
from enginehub.harness.amqp.performatives import Properties

FORMAT_VERSION = 1
BATCH_MESSAGE_FORMAT = 0x80013700
_HDR = struct.Struct(">BIII")
_HDR_SIZE = _HDR.size

SEQUENCE_NUMBER = "x-opt-sequence-number"
OFFSET = "x-opt-offset"
ENQUEUED_TIME = "x-opt-enqueued-time"
PARTITION_KEY = "x-opt-partition-key"
RESERVED_ANNOTATIONS = frozenset({SEQUENCE_NUMBER, OFFSET, ENQUEUED_TIME, PARTITION_KEY})

_PROPERTY_FIELDS = tuple(Properties.__slots__)

# fixed-layout service annotations: seq (long), offset (string, filled in), enqueued time (timestamp)
_SEQ = encode_symbol(SEQUENCE_NUMBER) + b"\x81"
_OFF = encode_symbol(OFFSET)
_TIME = encode_symbol(ENQUEUED_TIME) + b"\x83"
_KEY = encode_symbol(PARTITION_KEY)
_q = struct.Struct(">q").pack
_I = struct.Struct(">I").pack


class MessageFormatError(ValueError):
    """A producer's message cannot be stored (bad encoding); the delivery is rejected with this text."""


def _pack(head: bytes, entries: bytes, count: int, tail: bytes) -> bytes:
    return _HDR.pack(FORMAT_VERSION, len(head), len(entries), count) + head + entries + tail


def _partition_key_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def store_message(msg: bytes, default_key: str | None = None) -> tuple[bytes, str | None]:
    """Turn one encoded AMQP message (as a producer sent it) into ``(stored payload, partition key)``."""
    try:
        sections = scan_sections(msg)
    except DecodeError as exc:
        raise MessageFormatError(f"The message is not a valid AMQP message: {exc}") from None
    head = b""
    entries = b""
    count = 0
    key = default_key
    tail_start = len(msg)
    for sec in sections:
        code = sec.code
        if code == HEADER:
            head = msg[sec.start : sec.end]
        elif code == DELIVERY_ANNOTATIONS:
            continue
        elif code == MESSAGE_ANNOTATIONS:
            try:
                annotations = decode_value(msg, sec.value_start, 1)[0]
            except DecodeError as exc:
                raise MessageFormatError(f"Invalid message-annotations: {exc}") from None
            if annotations is None:
                continue
            if not isinstance(annotations, dict):
                raise MessageFormatError("message-annotations must be a map")
            parts = []
            for k, v in annotations.items():
                if k == PARTITION_KEY:
                    if v is not None:
                        key = _partition_key_text(v)
                elif k not in RESERVED_ANNOTATIONS:
                    parts.append(encode_value(k))
                    parts.append(encode_value(v))
            entries = b"".join(parts)
            count = len(parts)
        else:
            tail_start = sec.start
            break
    return _pack(head, entries, count, msg[tail_start:]), key


def store_delivery(payload: bytes, message_format: int) -> list[tuple[bytes, str | None]]:
    """Split a producer delivery into stored events: one for a plain message, one per data section of a
    batch (message-format 0x80013700). The envelope's partition key applies to inner events without one."""
    if message_format != BATCH_MESSAGE_FORMAT:
        return [store_message(payload)]
    try:
        sections = scan_sections(payload)
    except DecodeError as exc:
        raise MessageFormatError(f"The batch envelope is not a valid AMQP message: {exc}") from None
    envelope_key = None
    out = []
    for sec in sections:
        if sec.code == MESSAGE_ANNOTATIONS:
            annotations = decode_value(payload, sec.value_start, 1)[0]
            if isinstance(annotations, dict):
                envelope_key = _partition_key_text(annotations.get(PARTITION_KEY))
        elif sec.code == 0x75:
            start, end = binary_span(payload, sec)
            out.append(store_message(payload[start:end], envelope_key))
    if not out:
        raise MessageFormatError("The batch message (format 0x80013700) holds no data sections")
    return out


def delivery_bytes(
    payload: bytes,
    sequence_number: int,
    offset: int,
    enqueued_time_ms: int,
    partition_key: str | None,
    delivery_annotations: bytes = b"",
) -> bytes:
    """The message a consumer receives: the stored sections with the service annotations spliced in."""
    _, head_len, ann_len, ann_count = _HDR.unpack_from(payload, 0)
    h_end = _HDR_SIZE + head_len
    a_end = h_end + ann_len
    off = str(offset).encode()
    body = (
        _SEQ + _q(sequence_number) + _OFF + b"\xa1" + bytes((len(off),)) + off + _TIME + _q(enqueued_time_ms)
    )
    count = 6 + ann_count
    if partition_key is not None:
        body += _KEY + encode_value(partition_key)
        count += 2
    if ann_len:
        body += payload[h_end:a_end]
    n = len(body)
    if n < 255 and count < 256:
        section = b"\x00\x53\x72\xc1" + bytes((n + 1, count)) + body
    else:
        section = b"\x00\x53\x72\xd1" + _I(n + 4) + _I(count) + body
    return payload[_HDR_SIZE:h_end] + delivery_annotations + section + payload[a_end:]


def runtime_metric_annotations(
    last_sequence_number: int, last_offset: int, last_enqueued_time_ms: int, now_ms: int | None = None
) -> bytes:
    """Delivery-annotations section with the last-enqueued-event properties (runtime metric capability)."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    return b"\x00\x53\x71" + encode_value(
        {
            Symbol("last_enqueued_sequence_number"): last_sequence_number,
            Symbol("last_enqueued_offset"): str(last_offset),
            Symbol("last_enqueued_time_utc"): Timestamp(last_enqueued_time_ms),
            Symbol("runtime_info_retrieval_time_utc"): Timestamp(now_ms),
        }
    )


def _property_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("content_type", "content_encoding"):
        return Symbol(value)
    if name in ("absolute_expiry_time", "creation_time"):
        if isinstance(value, datetime.datetime):
            return value
        return Timestamp(value)
    if name in ("message_id", "correlation_id"):
        if isinstance(value, (str, bytes, uuid.UUID)):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return Ulong(value)
        raise TypeError(f"{name} must be str, bytes, UUID or a non-negative int, got {type(value).__name__}")
    if name == "user_id" and not isinstance(value, bytes):
        raise TypeError("user_id must be bytes")
    return value


def encode_event(
    body: bytes,
    *,
    properties: dict[str, Any] | None = None,
    application_properties: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
) -> bytes:
    """Build a stored payload for an event with a single data body (used in-process by the IoT Hub emulator).

    ``properties``: AMQP properties by snake_case field name (``message_id``, ``correlation_id``,
    ``content_type``, ``content_encoding``, ``user_id``, ``to``, ``subject``, ``reply_to``,
    ``absolute_expiry_time``, ``creation_time``, ``group_id``, ``group_sequence``, ``reply_to_group_id``).
    ``application_properties``: string keys, AMQP-encodable values. ``annotations``: message annotations
    (symbol keys); the service-owned ``x-opt-*`` names are refused (pass the partition key to
    ``Partition.append``). Raises ``TypeError``/``ValueError`` with the offending name on bad input.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    parts = []
    if properties:
        unknown = set(properties) - set(_PROPERTY_FIELDS)
        if unknown:
            raise ValueError(f"unknown AMQP properties field(s): {sorted(unknown)}")
        parts.append(Properties(**{k: _property_value(k, v) for k, v in properties.items()}).encode_amqp())
    if application_properties:
        for k in application_properties:
            if not isinstance(k, str):
                raise TypeError(f"application property keys must be str, got {k!r}")
        parts.append(b"\x00\x53\x74" + encode_value(dict(application_properties)))
    parts.append(b"\x00\x53\x75" + encode_binary(bytes(body)))
    entries = []
    if annotations:
        for k, v in annotations.items():
            if not isinstance(k, str):
                raise TypeError(f"annotation keys must be str, got {k!r}")
            if k in RESERVED_ANNOTATIONS:
                raise ValueError(f"annotation {k!r} is set by the service (pass partition keys to append())")
            entries.append(encode_symbol(k))
            entries.append(encode_value(v))
    return _pack(b"", b"".join(entries), len(entries), b"".join(parts))


def decode_event(
    payload: bytes,
    sequence_number: int = 0,
    offset: int = 0,
    enqueued_time_ms: int = 0,
    partition_key: str | None = None,
) -> Message:
    """Decode a stored payload as the message a consumer would receive (tests, peek tools)."""
    check_payload(payload)
    return decode_message(delivery_bytes(payload, sequence_number, offset, enqueued_time_ms, partition_key))


def check_payload(payload: bytes) -> None:
    """Raise ``MessageFormatError`` unless ``payload`` is a well-formed stored payload."""
    if len(payload) < _HDR_SIZE:
        raise MessageFormatError("stored payload shorter than its 13-byte header")
    version, head_len, ann_len, _ = _HDR.unpack_from(payload, 0)
    if version != FORMAT_VERSION:
        raise MessageFormatError(f"unknown stored payload format {version}")
    if _HDR_SIZE + head_len + ann_len > len(payload):
        raise MessageFormatError("stored payload lengths run past its end")


def iter_events(payloads: Iterable[bytes]) -> list[Message]:
    return [decode_event(p) for p in payloads]
