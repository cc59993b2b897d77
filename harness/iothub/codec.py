"""Pure MQTT 3.1.1 codec (OASIS mqtt-v3.1.1 §2-§3): bytes <-> packet dataclasses. No sockets, no asyncio.

Error contract: :func:`decode` (and :func:`decode_body`) on ANY input either returns a packet whose fields
are within the bounds below, returns ``None`` when more bytes are needed, or raises one of
:data:`~enginehub.harness.iothub.errors.CODEC_ERRORS`. Nothing else.

Bounds: remaining length <= ``max_packet_size`` (default :data:`DEFAULT_MAX_PACKET_SIZE`) and <= the
4-byte varint maximum; at most :data:`MAX_FILTERS` topic filters per SUBSCRIBE/UNSUBSCRIBE; strings are
UTF-8 without U+0000 and at most 65535 bytes (the u16 length prefix).

QoS 2 flows (PUBREC/PUBREL/PUBCOMP) are decoded so that the server can recognise and reject them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from enginehub.harness.iothub.errors import MalformedPacketError, PacketTooLargeError

# Packet types (§2.2.1)
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

MAX_VARINT = 268_435_455  # 0xFF 0xFF 0xFF 0x7F (§2.2.3)
#: IoT Hub messages are <= 256 KiB; leave room for a long topic/property bag (topic <= 64 KiB).
DEFAULT_MAX_PACKET_SIZE = 256 * 1024 + 65_536 + 16
MAX_FILTERS = 64
MAX_STRING = 65_535

_U16 = struct.Struct("!H")

SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (§3.1). ``protocol_level`` 4 is MQTT 3.1.1; the server rejects others with CONNACK 1."""

    client_id: str
    username: str | None = None
    password: bytes | None = None
    keepalive: int = 60
    clean_session: bool = False
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    protocol_name: str = "MQTT"
    protocol_level: int = 4


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK (§3.2): return code 0 accepted, 1-5 refused."""

    return_code: int = 0
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (§3.3). ``packet_id`` is None for QoS 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    packet_id: int | None = None
    dup: bool = False
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (§3.8): ``topics`` is a tuple of (filter, requested QoS)."""

    packet_id: int
    topics: tuple[tuple[str, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK (§3.9): return codes 0, 1, 2 or 0x80 (failure)."""

    packet_id: int
    return_codes: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topics: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


Packet = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
)

# Required fixed-header flags (low nibble) for every type except PUBLISH (§2.2.2).
_FLAGS = {
    CONNECT: 0,
    CONNACK: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    SUBACK: 0,
    UNSUBSCRIBE: 2,
    UNSUBACK: 0,
    PINGREQ: 0,
    PINGRESP: 0,
    DISCONNECT: 0,
}


# ------------------------------------------------------------------------------------------------
# fixed header


def encode_varint(n: int) -> bytes:
    """Remaining-length encoding (§2.2.3)."""
    if n < 0 or n > MAX_VARINT:
        raise PacketTooLargeError(f"remaining length {n} out of range 0..{MAX_VARINT}")
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse_fixed_header(
    buf: bytes | bytearray | memoryview, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
) -> tuple[int, int, int] | None:
    """Return ``(first_byte, remaining_length, header_length)`` or None if ``buf`` is too short."""
    n = len(buf)
    if n < 2:
        return None
    value = 0
    mult = 1
    for i in range(1, 5):
        if i >= n:
            return None
        byte = buf[i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            if i > 1 and byte == 0:
                raise MalformedPacketError("non-minimal remaining-length encoding")
            if value > max_packet_size:
                raise PacketTooLargeError(f"packet of {value} bytes exceeds the limit {max_packet_size}")
            return buf[0], value, i + 1
        mult *= 128
    raise MalformedPacketError("remaining length longer than 4 bytes")


def decode(
    buf: bytes | bytearray | memoryview, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
) -> tuple[Packet, int] | None:
    """Decode one packet from the start of ``buf``: ``(packet, bytes consumed)``, or None if incomplete."""
    header = parse_fixed_header(buf, max_packet_size)
    if header is None:
        return None
    first, length, hlen = header
    end = hlen + length
    if len(buf) < end:
        return None
    return decode_body(first, bytes(buf[hlen:end])), end


def decode_all(data: bytes, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> tuple[list[Packet], bytes]:
    """Decode every complete packet in ``data``; return them and the unconsumed tail."""
    out: list[Packet] = []
    view = memoryview(data)
    pos = 0
    while True:
        res = decode(view[pos:], max_packet_size)
        if res is None:
            return out, bytes(view[pos:])
        out.append(res[0])
        pos += res[1]


# ------------------------------------------------------------------------------------------------
# body decoding


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise MalformedPacketError("packet truncated (expected 1 byte)")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        if self.pos + 2 > len(self.buf):
            raise MalformedPacketError("packet truncated (expected 2 bytes)")
        v = (self.buf[self.pos] << 8) | self.buf[self.pos + 1]
        self.pos += 2
        return v

    def binary(self) -> bytes:
        n = self.u16()
        if self.pos + n > len(self.buf):
            raise MalformedPacketError(f"field of {n} bytes runs past the end of the packet")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def string(self) -> str:
        raw = self.binary()
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacketError(f"string is not valid UTF-8: {exc.reason}") from None
        if "\x00" in s:
            raise MalformedPacketError("string contains U+0000")
        return s

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise MalformedPacketError(f"{what}: {len(self.buf) - self.pos} unexpected trailing bytes")


def _packet_id(r: _Reader, what: str) -> int:
    pid = r.u16()
    if pid == 0:
        raise MalformedPacketError(f"{what}: packet identifier 0")
    return pid


def decode_body(first_byte: int, body: bytes) -> Packet:
    """Decode a packet from its first byte and its variable header + payload (``body``)."""
    ptype = first_byte >> 4
    flags = first_byte & 0x0F
    if ptype == PUBLISH:
        return _decode_publish(flags, body)
    expected = _FLAGS.get(ptype)
    if expected is None:
        raise MalformedPacketError(f"reserved packet type {ptype}")
    if flags != expected:
        raise MalformedPacketError(f"packet type {ptype}: fixed-header flags {flags:#x} != {expected:#x}")
    r = _Reader(body)
    if ptype == CONNECT:
        return _decode_connect(r)
    if ptype == CONNACK:
        ack_flags = r.u8()
        if ack_flags & 0xFE:
            raise MalformedPacketError("CONNACK: reserved acknowledge flags set")
        code = r.u8()
        r.end("CONNACK")
        if code > 5:
            raise MalformedPacketError(f"CONNACK: return code {code}")
        return Connack(code, bool(ack_flags & 1))
    if ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        pid = _packet_id(r, "ack")
        r.end("ack")
        cls = {PUBACK: Puback, PUBREC: Pubrec, PUBREL: Pubrel, PUBCOMP: Pubcomp, UNSUBACK: Unsuback}[ptype]
        return cls(pid)
    if ptype == SUBSCRIBE:
        pid = _packet_id(r, "SUBSCRIBE")
        topics: list[tuple[str, int]] = []
        while r.remaining():
            if len(topics) >= MAX_FILTERS:
                raise MalformedPacketError(f"SUBSCRIBE: more than {MAX_FILTERS} topic filters")
            filt = r.string()
            if not filt:
                raise MalformedPacketError("SUBSCRIBE: empty topic filter")
            qos = r.u8()
            if qos > 2:
                raise MalformedPacketError(f"SUBSCRIBE: requested QoS byte {qos:#x}")
            topics.append((filt, qos))
        if not topics:
            raise MalformedPacketError("SUBSCRIBE: no topic filter")
        return Subscribe(pid, tuple(topics))
    if ptype == SUBACK:
        pid = _packet_id(r, "SUBACK")
        codes = r.rest()
        if not codes:
            raise MalformedPacketError("SUBACK: no return code")
        if len(codes) > MAX_FILTERS:
            raise MalformedPacketError(f"SUBACK: more than {MAX_FILTERS} return codes")
        for c in codes:
            if c not in (0, 1, 2, SUBACK_FAILURE):
                raise MalformedPacketError(f"SUBACK: return code {c:#x}")
        return Suback(pid, tuple(codes))
    if ptype == UNSUBSCRIBE:
        pid = _packet_id(r, "UNSUBSCRIBE")
        filters: list[str] = []
        while r.remaining():
            if len(filters) >= MAX_FILTERS:
                raise MalformedPacketError(f"UNSUBSCRIBE: more than {MAX_FILTERS} topic filters")
            filt = r.string()
            if not filt:
                raise MalformedPacketError("UNSUBSCRIBE: empty topic filter")
            filters.append(filt)
        if not filters:
            raise MalformedPacketError("UNSUBSCRIBE: no topic filter")
        return Unsubscribe(pid, tuple(filters))
    # PINGREQ, PINGRESP, DISCONNECT
    r.end(f"packet type {ptype}")
    return {PINGREQ: Pingreq, PINGRESP: Pingresp, DISCONNECT: Disconnect}[ptype]()


def _decode_publish(flags: int, body: bytes) -> Publish:
    qos = (flags >> 1) & 3
    dup = bool(flags & 8)
    if qos == 3:
        raise MalformedPacketError("PUBLISH: QoS 3")
    if qos == 0 and dup:
        raise MalformedPacketError("PUBLISH: DUP set on QoS 0")
    # the _Reader steps inlined (same checks, same errors): this runs once per telemetry message
    size = len(body)
    if size < 2:
        raise MalformedPacketError("packet truncated (expected 2 bytes)")
    n = (body[0] << 8) | body[1]
    pos = 2 + n
    if pos > size:
        raise MalformedPacketError(f"field of {n} bytes runs past the end of the packet")
    try:
        topic = body[2:pos].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacketError(f"string is not valid UTF-8: {exc.reason}") from None
    if "\x00" in topic:
        raise MalformedPacketError("string contains U+0000")
    if not topic:
        raise MalformedPacketError("PUBLISH: empty topic name")
    if "+" in topic or "#" in topic:
        raise MalformedPacketError("PUBLISH: wildcard in topic name")
    if qos:
        if pos + 2 > size:
            raise MalformedPacketError("packet truncated (expected 2 bytes)")
        pid: int | None = (body[pos] << 8) | body[pos + 1]
        if pid == 0:
            raise MalformedPacketError("PUBLISH: packet identifier 0")
        pos += 2
    else:
        pid = None
    return Publish(topic, body[pos:], qos, pid, dup, bool(flags & 1))


def _decode_connect(r: _Reader) -> Connect:
    name = r.string()
    level = r.u8()
    if name not in ("MQTT", "MQIsdp"):
        raise MalformedPacketError(f"CONNECT: protocol name {name!r}")
    cflags = r.u8()
    if cflags & 1:
        raise MalformedPacketError("CONNECT: reserved flag set")
    keepalive = r.u16()
    will = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 3
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_user = bool(cflags & 0x80)
    if not will and (will_qos or will_retain):
        raise MalformedPacketError("CONNECT: will QoS/retain without will flag")
    if will_qos == 3:
        raise MalformedPacketError("CONNECT: will QoS 3")
    if has_password and not has_user:
        raise MalformedPacketError("CONNECT: password flag without username flag")
    client_id = r.string()
    will_topic = will_message = None
    if will:
        will_topic = r.string()
        will_message = r.binary()
    username = r.string() if has_user else None
    password = r.binary() if has_password else None
    r.end("CONNECT")
    return Connect(
        client_id=client_id,
        username=username,
        password=password,
        keepalive=keepalive,
        clean_session=bool(cflags & 0x02),
        will_topic=will_topic,
        will_message=will_message,
        will_qos=will_qos,
        will_retain=will_retain,
        protocol_name=name,
        protocol_level=level,
    )


# ------------------------------------------------------------------------------------------------
# encoding


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > MAX_STRING:
        raise MalformedPacketError(f"string of {len(raw)} bytes exceeds {MAX_STRING}")
    return _U16.pack(len(raw)) + raw


def _bin(b: bytes) -> bytes:
    if len(b) > MAX_STRING:
        raise MalformedPacketError(f"binary field of {len(b)} bytes exceeds {MAX_STRING}")
    return _U16.pack(len(b)) + b


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def _check_pid(pid: int | None) -> int:
    if pid is None or not 0 < pid <= 0xFFFF:
        raise MalformedPacketError(f"packet identifier {pid!r} out of range 1..65535")
    return pid


def encode_puback(packet_id: int) -> bytes:
    """Fast path for the hottest server packet."""
    return b"\x40\x02" + _U16.pack(packet_id)


PINGRESP_BYTES = b"\xd0\x00"


def encode(packet: Packet) -> bytes:
    """Encode a packet; raises a codec error when a field is out of range."""
    if isinstance(packet, Publish):
        if packet.qos not in (0, 1, 2):
            raise MalformedPacketError(f"PUBLISH: QoS {packet.qos}")
        if packet.qos == 0 and packet.dup:
            raise MalformedPacketError("PUBLISH: DUP set on QoS 0")
        flags = (8 if packet.dup else 0) | (packet.qos << 1) | (1 if packet.retain else 0)
        body = _str(packet.topic)
        if packet.qos:
            body += _U16.pack(_check_pid(packet.packet_id))
        return _frame((PUBLISH << 4) | flags, body + packet.payload)
    if isinstance(packet, Puback):
        return encode_puback(_check_pid(packet.packet_id))
    if isinstance(packet, Connect):
        flags = 0
        payload = _str(packet.client_id)
        if packet.clean_session:
            flags |= 0x02
        if packet.will_topic is not None:
            flags |= 0x04 | (packet.will_qos << 3) | (0x20 if packet.will_retain else 0)
            payload += _str(packet.will_topic) + _bin(packet.will_message or b"")
        if packet.username is not None:
            flags |= 0x80
            payload += _str(packet.username)
        if packet.password is not None:
            if packet.username is None:
                raise MalformedPacketError("CONNECT: password without username")
            flags |= 0x40
            payload += _bin(packet.password)
        if not 0 <= packet.keepalive <= 0xFFFF:
            raise MalformedPacketError(f"CONNECT: keepalive {packet.keepalive}")
        head = (
            _str(packet.protocol_name) + bytes((packet.protocol_level, flags)) + _U16.pack(packet.keepalive)
        )
        return _frame(CONNECT << 4, head + payload)
    if isinstance(packet, Connack):
        return bytes((CONNACK << 4, 2, 1 if packet.session_present else 0, packet.return_code))
    if isinstance(packet, Pubrec | Pubrel | Pubcomp | Unsuback):
        ptype = {Pubrec: PUBREC, Pubrel: PUBREL, Pubcomp: PUBCOMP, Unsuback: UNSUBACK}[type(packet)]
        return bytes(((ptype << 4) | _FLAGS[ptype], 2)) + _U16.pack(_check_pid(packet.packet_id))
    if isinstance(packet, Subscribe):
        if not packet.topics:
            raise MalformedPacketError("SUBSCRIBE: no topic filter")
        body = _U16.pack(_check_pid(packet.packet_id))
        body += b"".join(_str(t) + bytes((q,)) for t, q in packet.topics)
        return _frame((SUBSCRIBE << 4) | 2, body)
    if isinstance(packet, Suback):
        return _frame(SUBACK << 4, _U16.pack(_check_pid(packet.packet_id)) + bytes(packet.return_codes))
    if isinstance(packet, Unsubscribe):
        if not packet.topics:
            raise MalformedPacketError("UNSUBSCRIBE: no topic filter")
        body = _U16.pack(_check_pid(packet.packet_id)) + b"".join(_str(t) for t in packet.topics)
        return _frame((UNSUBSCRIBE << 4) | 2, body)
    if isinstance(packet, Pingreq):
        return b"\xc0\x00"
    if isinstance(packet, Pingresp):
        return PINGRESP_BYTES
    if isinstance(packet, Disconnect):
        return b"\xe0\x00"
    raise TypeError(f"not an MQTT packet: {packet!r}")
