"""AMQP 1.0 frame layer (pure): protocol headers, the 8-byte frame header, frame bodies.

A frame is ``size:uint32 doff:uint8 type:uint8 channel:uint16 [extended header] body``. ``type`` 0 = AMQP,
1 = SASL. An empty body is a heartbeat. ``FrameParser`` is fed bytes and yields complete frames; it raises
``FramingError`` (a ``DecodeError``) for a size below 8, a doff below 2 or past the frame, or a frame
bigger than ``max_frame_size``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from enginehub.harness.amqp.codec import Described, decode_value
from enginehub.harness.amqp.errors import DecodeError
from enginehub.harness.amqp.performatives import composite_from

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
TLS_HEADER = b"AMQP\x02\x01\x00\x00"
FRAME_AMQP = 0
FRAME_SASL = 1
MIN_MAX_FRAME_SIZE = 512

_HDR = struct.Struct(">IBBH")
HEARTBEAT = b"\x00\x00\x00\x08\x02\x00\x00\x00"


class FramingError(DecodeError):
    """The byte stream is not a valid sequence of AMQP frames."""


class Frame(NamedTuple):
    type: int
    channel: int
    body: bytes  # the frame body (performative + payload); b"" for a heartbeat


def encode_frame(channel: int, body: bytes, frame_type: int = FRAME_AMQP) -> bytes:
    return _HDR.pack(len(body) + 8, 2, frame_type, channel) + body


class FrameParser:
    """Incremental frame splitter. ``feed(data)`` then iterate ``frames()``."""

    __slots__ = ("_buf", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._pos = 0  # consumed bytes at the front of _buf (compacted on feed)
        self.max_frame_size = max_frame_size

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def take(self, n: int) -> bytes | None:
        """Take ``n`` raw bytes (protocol headers) if available."""
        if len(self._buf) - self._pos < n:
            return None
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 8:
            return None
        size, doff, ftype, channel = _HDR.unpack_from(buf, pos)
        if size < 8:
            raise FramingError(f"frame size {size} is smaller than the 8-byte header")
        if size > self.max_frame_size:
            raise FramingError(
                f"frame size {size} exceeds the negotiated max-frame-size {self.max_frame_size}"
            )
        if doff < 2 or doff * 4 > size:
            raise FramingError(f"invalid data offset {doff} for a frame of {size} bytes")
        if len(buf) - pos < size:
            return None
        body = bytes(buf[pos + doff * 4 : pos + size])
        self._pos = pos + size
        return Frame(ftype, channel, body)

    def frames(self) -> Iterator[Frame]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame


def decode_performative(body: bytes) -> tuple[Any, int]:
    """Decode the performative at the start of a frame body; return ``(composite, payload offset)``.

    Raises ``DecodeError`` when the body is not a described list, or an unknown descriptor.
    """
    value, pos = decode_value(body, 0)
    if type(value) is not Described:
        raise DecodeError("frame body is not a described performative")
    perf = composite_from(value)
    if type(perf) is Described:
        raise DecodeError(f"unknown performative descriptor {value.descriptor!r}")
    return perf, pos
