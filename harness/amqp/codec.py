"""Pure AMQP 1.0 type codec (no I/O): Python values <-> the AMQP type system (OASIS AMQP 1.0, part 1).

Decoding (``decode_value(buf, pos)`` -> ``(value, new_pos)``) maps AMQP types to Python:

=================  =======================================  ====================================
AMQP               decoded as                               encoded from
=================  =======================================  ====================================
null               ``None``                                 ``None``
boolean            ``bool``                                 ``bool``
ubyte/ushort/      ``Ubyte``/``Ushort``/``Uint``/``Ulong``  the wrapper (``int`` -> long)
uint/ulong
byte/short/int     ``Byte``/``Short``/``Int``               the wrapper
long               ``int``                                  ``int`` (``Long`` also accepted)
float / double     ``Float`` / ``float``                    the wrapper / ``float``
char               ``Char`` (str of length 1)               ``Char``
decimal32/64/128   ``Decimal32``/``Decimal64``/``Decimal128``  (raw bytes kept)
timestamp          ``Timestamp`` (int, ms since epoch)      ``Timestamp`` or ``datetime``
uuid               ``uuid.UUID``                            ``uuid.UUID``
binary             ``bytes``                                ``bytes``/``bytearray``/``memoryview``
string             ``str``                                  ``str``
symbol             ``Symbol`` (str subclass)                ``Symbol``
list               ``list``                                 ``list``/``tuple``
map                ``dict``                                 ``dict``
array              ``Array`` (list subclass + element code) ``Array``
described          ``Described(descriptor, value)``         ``Described`` or a composite object
=================  =======================================  ====================================

The decoder is tolerant (all width variants, list0/list8/list32, ulong and symbol descriptors) and bounded:
nesting depth ``MAX_DEPTH`` and element count per compound ``MAX_COUNT``. Errors: see ``errors.py``.
The encoder always picks the smallest encoding (small-ulong descriptors ``0x00 0x53 <code>``).
"""

from __future__ import annotations

import datetime
import struct
import uuid
from typing import Any, NamedTuple

from enginehub.harness.amqp.errors import DecodeError, EncodeError, LimitExceeded

MAX_DEPTH = 32  # nesting of compounds/described values accepted by the decoder
MAX_COUNT = 1 << 20  # elements in one list/map/array accepted by the decoder


# --------------------------------------------------------------------------------------------- types
class Ubyte(int):
    __slots__ = ()


class Ushort(int):
    __slots__ = ()


class Uint(int):
    __slots__ = ()


class Ulong(int):
    __slots__ = ()


class Byte(int):
    __slots__ = ()


class Short(int):
    __slots__ = ()


class Int(int):
    __slots__ = ()


class Long(int):
    __slots__ = ()


class Timestamp(int):
    """Milliseconds since the Unix epoch (AMQP timestamp)."""

    __slots__ = ()


class Float(float):
    """A 32-bit IEEE float."""

    __slots__ = ()


class Char(str):
    __slots__ = ()


class Symbol(str):
    __slots__ = ()


class _RawFixed(bytes):
    __slots__ = ()


class Decimal32(_RawFixed):
    __slots__ = ()


class Decimal64(_RawFixed):
    __slots__ = ()


class Decimal128(_RawFixed):
    __slots__ = ()


class Described(NamedTuple):
    descriptor: Any
    value: Any


class Array(list):
    """An AMQP array: homogeneous, with the element constructor code (e.g. 0xB3 symbol, 0xA1 string)."""

    __slots__ = ("code",)

    def __init__(self, items: Any = (), code: int = 0xB3) -> None:
        super().__init__(items)
        self.code = code

    def __eq__(self, other: object) -> bool:
        return list.__eq__(self, other)  # type: ignore[arg-type]

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------------------- decoder
_u8 = struct.Struct(">B").unpack_from
_i8 = struct.Struct(">b").unpack_from
_u16 = struct.Struct(">H").unpack_from
_i16 = struct.Struct(">h").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_i64 = struct.Struct(">q").unpack_from
_f32 = struct.Struct(">f").unpack_from
_f64 = struct.Struct(">d").unpack_from
_II = struct.Struct(">II").unpack_from

# fixed width by constructor (bytes after the constructor), used by decode and skip
_FIXED: dict[int, int] = {
    0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x45: 0,
    0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1, 0x54: 1, 0x55: 1, 0x56: 1,
    0x60: 2, 0x61: 2,
    0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4,
    0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8, 0x84: 8,
    0x94: 16, 0x98: 16,
}  # fmt: skip


def _need(buf: bytes, pos: int, n: int) -> None:
    if pos + n > len(buf):
        raise DecodeError(f"truncated: need {n} bytes at offset {pos}, have {max(len(buf) - pos, 0)}")


def _decode_fixed(code: int, buf: bytes, pos: int) -> tuple[Any, int]:
    width = _FIXED[code]
    if pos + width > len(buf):
        raise DecodeError(f"truncated: constructor 0x{code:02x} needs {width} bytes at offset {pos}")
    if code == 0x40:
        return None, pos
    if code == 0x41:
        return True, pos
    if code == 0x42:
        return False, pos
    if code == 0x43:
        return Uint(0), pos
    if code == 0x44:
        return Ulong(0), pos
    if code == 0x45:
        return [], pos
    if code == 0x50:
        return Ubyte(buf[pos]), pos + 1
    if code == 0x51:
        return Byte(_i8(buf, pos)[0]), pos + 1
    if code == 0x52:
        return Uint(buf[pos]), pos + 1
    if code == 0x53:
        return Ulong(buf[pos]), pos + 1
    if code == 0x54:
        return Int(_i8(buf, pos)[0]), pos + 1
    if code == 0x55:
        return _i8(buf, pos)[0], pos + 1
    if code == 0x56:
        b = buf[pos]
        if b > 1:
            raise DecodeError(f"invalid boolean byte 0x{b:02x} at offset {pos}")
        return b == 1, pos + 1
    if code == 0x60:
        return Ushort(_u16(buf, pos)[0]), pos + 2
    if code == 0x61:
        return Short(_i16(buf, pos)[0]), pos + 2
    if code == 0x70:
        return Uint(_u32(buf, pos)[0]), pos + 4
    if code == 0x71:
        return Int(_i32(buf, pos)[0]), pos + 4
    if code == 0x72:
        return Float(_f32(buf, pos)[0]), pos + 4
    if code == 0x73:
        cp = _u32(buf, pos)[0]
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            raise DecodeError(f"invalid char code point {cp:#x} at offset {pos}")
        return Char(chr(cp)), pos + 4
    if code == 0x74:
        return Decimal32(buf[pos : pos + 4]), pos + 4
    if code == 0x80:
        return Ulong(_u64(buf, pos)[0]), pos + 8
    if code == 0x81:
        return _i64(buf, pos)[0], pos + 8
    if code == 0x82:
        return _f64(buf, pos)[0], pos + 8
    if code == 0x83:
        return Timestamp(_i64(buf, pos)[0]), pos + 8
    if code == 0x84:
        return Decimal64(buf[pos : pos + 8]), pos + 8
    if code == 0x94:
        return Decimal128(buf[pos : pos + 16]), pos + 16
    # 0x98 uuid
    return uuid.UUID(bytes=bytes(buf[pos : pos + 16])), pos + 16


def _decode_variable(code: int, buf: bytes, pos: int) -> tuple[Any, int]:
    if code < 0xB0:  # 0xa0 vbin8 / 0xa1 str8 / 0xa3 sym8
        _need(buf, pos, 1)
        size = buf[pos]
        pos += 1
    else:
        _need(buf, pos, 4)
        size = _u32(buf, pos)[0]
        pos += 4
    end = pos + size
    if end > len(buf):
        raise DecodeError(f"truncated: variable-width value of {size} bytes at offset {pos}")
    raw = bytes(buf[pos:end])
    if code in (0xA0, 0xB0):
        return raw, end
    if code in (0xA1, 0xB1):
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 in string at offset {pos}: {exc.reason}") from None
    try:
        return Symbol(raw.decode("ascii")), end
    except UnicodeDecodeError:
        raise DecodeError(f"invalid ASCII in symbol at offset {pos}") from None


def _compound_header(code: int, buf: bytes, pos: int) -> tuple[int, int, int]:
    """Return (count, start of elements, end) for list8/32, map8/32 (and arrays' outer header)."""
    if code in (0xC0, 0xC1, 0xE0):
        _need(buf, pos, 2)
        size, count = buf[pos], buf[pos + 1]
        start = pos + 2
        end = pos + 1 + size
        if size < 1:
            raise DecodeError(f"compound size {size} smaller than its count field at offset {pos}")
    else:
        _need(buf, pos, 8)
        size, count = _II(buf, pos)
        start = pos + 8
        end = pos + 4 + size
        if size < 4:
            raise DecodeError(f"compound size {size} smaller than its count field at offset {pos}")
    if end > len(buf):
        raise DecodeError(f"truncated: compound of {size} bytes at offset {pos}")
    if count > MAX_COUNT:
        raise LimitExceeded(f"compound has {count} elements, more than the limit {MAX_COUNT}")
    return count, start, end


def decode_value(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Any, int]:
    """Decode one AMQP value from ``buf`` at ``pos``; return ``(value, position after it)``."""
    if pos >= len(buf):
        raise DecodeError(f"truncated: no constructor at offset {pos}")
    code = buf[pos]
    pos += 1
    if code in _FIXED:
        return _decode_fixed(code, buf, pos)
    if code in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
        return _decode_variable(code, buf, pos)
    if code == 0x00:
        if depth >= MAX_DEPTH:
            raise LimitExceeded(f"nesting deeper than {MAX_DEPTH}")
        descriptor, pos = decode_value(buf, pos, depth + 1)
        if isinstance(descriptor, (list, dict, Described)):
            raise DecodeError("descriptor must be a ulong or a symbol")
        value, pos = decode_value(buf, pos, depth + 1)
        return Described(descriptor, value), pos
    if code in (0xC0, 0xD0, 0xC1, 0xD1):
        return _decode_compound(code, buf, pos, depth)
    if code in (0xE0, 0xF0):
        if depth >= MAX_DEPTH:
            raise LimitExceeded(f"nesting deeper than {MAX_DEPTH}")
        return _decode_array(code, buf, pos, depth)
    raise DecodeError(f"unknown constructor 0x{code:02x} at offset {pos - 1}")


def _decode_compound(code: int, buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise LimitExceeded(f"nesting deeper than {MAX_DEPTH}")
    count, p, end = _compound_header(code, buf, pos)
    if code in (0xC1, 0xD1):
        if count % 2:
            raise DecodeError(f"map with odd element count {count}")
        result: dict[Any, Any] = {}
        for _ in range(count // 2):
            key, p = decode_value(buf, p, depth + 1)
            if p > end:
                raise DecodeError("map element runs past the map's size")
            try:
                hash(key)
            except TypeError:
                raise DecodeError("map key of unhashable type (list/map) is not supported") from None
            value, p = decode_value(buf, p, depth + 1)
            if p > end:
                raise DecodeError("map element runs past the map's size")
            result[key] = value
        if p != end:
            raise DecodeError(f"map size mismatch: elements end at {p}, declared end {end}")
        return result, end
    items: list[Any] = []
    append = items.append
    for _ in range(count):
        value, p = decode_value(buf, p, depth + 1)
        if p > end:
            raise DecodeError("list element runs past the list's size")
        append(value)
    if p != end:
        raise DecodeError(f"list size mismatch: elements end at {p}, declared end {end}")
    return items, end


def _decode_array(code: int, buf: bytes, pos: int, depth: int) -> tuple[Array, int]:
    count, p, end = _compound_header(code, buf, pos)
    _need(buf, p, 1)
    descriptor = None
    elem = buf[p]
    p += 1
    if elem == 0x00:
        descriptor, p = decode_value(buf, p, depth + 1)
        _need(buf, p, 1)
        elem = buf[p]
        p += 1
    if elem == 0x00:
        raise DecodeError("nested described array element constructor")
    items = Array(code=elem)
    for _ in range(count):
        # each element is encoded without its constructor: re-use the scalar decoders
        if elem in _FIXED:
            value, p = _decode_fixed(elem, buf, p)
        elif elem in (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3):
            value, p = _decode_variable(elem, buf, p)
        elif elem in (0xC0, 0xD0, 0xC1, 0xD1):
            value, p = _decode_compound(elem, buf, p, depth + 1)
        elif elem in (0xE0, 0xF0):
            if depth + 1 >= MAX_DEPTH:
                raise LimitExceeded(f"nesting deeper than {MAX_DEPTH}")
            value, p = _decode_array(elem, buf, p, depth + 1)
        else:
            raise DecodeError(f"unknown array element constructor 0x{elem:02x}")
        if p > end:
            raise DecodeError("array element runs past the array's size")
        items.append(Described(descriptor, value) if descriptor is not None else value)
    if p != end:
        raise DecodeError(f"array size mismatch: elements end at {p}, declared end {end}")
    return items, end


def skip_value(buf: bytes, pos: int) -> int:
    """Return the position after the value at ``pos`` without decoding it (bounds-checked)."""
    if pos >= len(buf):
        raise DecodeError(f"truncated: no constructor at offset {pos}")
    code = buf[pos]
    pos += 1
    width = _FIXED.get(code)
    if width is not None:
        end = pos + width
    elif code in (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0):
        _need(buf, pos, 1)
        end = pos + 1 + buf[pos]
    elif code in (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0):
        _need(buf, pos, 4)
        end = pos + 4 + _u32(buf, pos)[0]
    elif code == 0x00:
        pos = skip_value(buf, pos)
        return skip_value(buf, pos)
    else:
        raise DecodeError(f"unknown constructor 0x{code:02x} at offset {pos - 1}")
    if end > len(buf):
        raise DecodeError(f"truncated: value at offset {pos - 1} runs past the end")
    return end


# ------------------------------------------------------------------------------------------- encoder
_p8 = struct.Struct(">B").pack
_pi8 = struct.Struct(">b").pack
_p16 = struct.Struct(">H").pack
_pi16 = struct.Struct(">h").pack
_p32 = struct.Struct(">I").pack
_pi32 = struct.Struct(">i").pack
_p64 = struct.Struct(">Q").pack
_pi64 = struct.Struct(">q").pack
_pf32 = struct.Struct(">f").pack
_pf64 = struct.Struct(">d").pack
_BI = struct.Struct(">BI").pack
_BII = struct.Struct(">BII").pack
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _range(value: int, lo: int, hi: int, name: str) -> None:
    if not lo <= value <= hi:
        raise EncodeError(f"{value} out of range for AMQP {name}")


def encode_uint(v: int) -> bytes:
    if v == 0:
        return b"\x43"
    if 0 < v < 256:
        return b"\x52" + _p8(v)
    _range(v, 0, 0xFFFFFFFF, "uint")
    return b"\x70" + _p32(v)


def encode_ulong(v: int) -> bytes:
    if v == 0:
        return b"\x44"
    if 0 < v < 256:
        return b"\x53" + _p8(v)
    _range(v, 0, 0xFFFFFFFFFFFFFFFF, "ulong")
    return b"\x80" + _p64(v)


def encode_long(v: int) -> bytes:
    if -128 <= v <= 127:
        return b"\x55" + _pi8(v)
    _range(v, -(1 << 63), (1 << 63) - 1, "long")
    return b"\x81" + _pi64(v)


def encode_int(v: int) -> bytes:
    if -128 <= v <= 127:
        return b"\x54" + _pi8(v)
    _range(v, -(1 << 31), (1 << 31) - 1, "int")
    return b"\x71" + _pi32(v)


def encode_binary(v: bytes) -> bytes:
    n = len(v)
    return (b"\xa0" + _p8(n) if n < 256 else b"\xb0" + _p32(n)) + bytes(v)


def encode_string(v: str) -> bytes:
    raw = _utf8(v)
    n = len(raw)
    return (b"\xa1" + _p8(n) if n < 256 else b"\xb1" + _p32(n)) + raw


def _utf8(v: str) -> bytes:
    try:
        return v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"string is not valid Unicode: {exc.reason}") from None


def encode_symbol(v: str) -> bytes:
    try:
        raw = v.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"symbol {v!r} is not ASCII") from None
    n = len(raw)
    return (b"\xa3" + _p8(n) if n < 256 else b"\xb3" + _p32(n)) + raw


def encode_timestamp(v: int | datetime.datetime) -> bytes:
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.UTC)
        delta = v - _EPOCH
        v = (delta.days * 86_400_000) + (delta.seconds * 1000) + delta.microseconds // 1000
    _range(v, -(1 << 63), (1 << 63) - 1, "timestamp")
    return b"\x83" + _pi64(v)


def _compound(body: bytes, count: int, small: int, large: int) -> bytes:
    if len(body) + 1 < 256 and count < 256:
        return bytes((small, len(body) + 1, count)) + body
    return _BII(large, len(body) + 4, count) + body


def encode_list(items: Any) -> bytes:
    if not items:
        return b"\x45"
    return _compound(b"".join([encode_value(i) for i in items]), len(items), 0xC0, 0xD0)


def encode_composite_list(items: Any) -> bytes:
    """A list that is never list0 (composite bodies: always list8/list32, even when empty)."""
    return _compound(b"".join([encode_value(i) for i in items]), len(items), 0xC0, 0xD0)


def encode_map(mapping: dict[Any, Any]) -> bytes:
    parts = []
    for k, v in mapping.items():
        parts.append(encode_value(k))
        parts.append(encode_value(v))
    return _compound(b"".join(parts), len(parts), 0xC1, 0xD1)


def encode_symbol_map(mapping: dict[Any, Any]) -> bytes:
    """A map whose ``str`` keys are encoded as symbols (annotations, fields, filter sets)."""
    parts = []
    for k, v in mapping.items():
        parts.append(encode_symbol(k) if type(k) is str else encode_value(k))
        parts.append(encode_value(v))
    return _compound(b"".join(parts), len(parts), 0xC1, 0xD1)


def _array_element(code: int, v: Any) -> bytes:
    if code == 0xB3:
        try:
            raw = v.encode("ascii")
        except (UnicodeEncodeError, AttributeError):
            raise EncodeError(f"array element {v!r} is not an ASCII symbol") from None
        return _p32(len(raw)) + raw
    if code == 0xB1:
        if not isinstance(v, str):
            raise EncodeError(f"array element {v!r} is not a string")
        raw = _utf8(v)
        return _p32(len(raw)) + raw
    if code == 0xB0:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise EncodeError(f"array element {v!r} is not binary")
        return _p32(len(v)) + bytes(v)
    if code in _ARRAY_FIXED:
        fmt, lo, hi = _ARRAY_FIXED[code]
        if isinstance(v, bool) and code != 0x56 or not isinstance(v, (int, float)):
            raise EncodeError(f"array element {v!r} does not fit constructor 0x{code:02x}")
        if lo is not None:
            _range(int(v), lo, hi, f"array element 0x{code:02x}")
        return struct.pack(fmt, v)
    if code == 0x98:
        if not isinstance(v, uuid.UUID):
            raise EncodeError(f"array element {v!r} is not a UUID")
        return v.bytes
    if code in (0xD0, 0xD1):
        full = encode_list(v) if code == 0xD0 else encode_map(v)
        if full[0] in (0xC0, 0xC1):
            return _p32(full[1] + 3) + _p32(full[2]) + full[3:]
        if full[0] == 0x45:
            return _p32(4) + _p32(0)
        return full[1:]
    raise EncodeError(f"unsupported array element constructor 0x{code:02x}")


_ARRAY_FIXED: dict[int, tuple[str, int | None, int | None]] = {
    0x56: (">?", None, None),
    0x50: (">B", 0, 0xFF),
    0x51: (">b", -128, 127),
    0x60: (">H", 0, 0xFFFF),
    0x61: (">h", -(1 << 15), (1 << 15) - 1),
    0x70: (">I", 0, 0xFFFFFFFF),
    0x71: (">i", -(1 << 31), (1 << 31) - 1),
    0x80: (">Q", 0, (1 << 64) - 1),
    0x81: (">q", -(1 << 63), (1 << 63) - 1),
    0x83: (">q", -(1 << 63), (1 << 63) - 1),
    0x72: (">f", None, None),
    0x82: (">d", None, None),
}
_ARRAY_CODE_NORMAL = {0xA0: 0xB0, 0xA1: 0xB1, 0xA3: 0xB3, 0xC0: 0xD0, 0xC1: 0xD1, 0x45: 0xD0,
                      0x52: 0x70, 0x43: 0x70, 0x53: 0x80, 0x44: 0x80, 0x54: 0x71, 0x55: 0x81,
                      0x41: 0x56, 0x42: 0x56}  # fmt: skip


def encode_array(arr: Array) -> bytes:
    code = _ARRAY_CODE_NORMAL.get(arr.code, arr.code)
    body = b"".join([_array_element(code, v) for v in arr])
    return _BII(0xF0, len(body) + 5, len(arr)) + bytes((code,)) + body


def encode_described(descriptor: Any, value: Any) -> bytes:
    if isinstance(descriptor, int) and not isinstance(descriptor, bool):
        d = encode_ulong(descriptor)
    elif isinstance(descriptor, str):
        d = encode_symbol(descriptor)
    else:
        raise EncodeError(f"descriptor {descriptor!r} must be a ulong or a symbol")
    return b"\x00" + d + encode_value(value)


def encode_value(v: Any) -> bytes:  # noqa: C901 - one dispatch on the Python type
    """Encode a Python value as one AMQP value (see the module table for the mapping)."""
    t = type(v)
    if v is None:
        return b"\x40"
    if t is bool:
        return b"\x41" if v else b"\x42"
    if t is str:
        return encode_string(v)
    if t is Symbol:
        return encode_symbol(v)
    if t is int or t is Long:
        return encode_long(v)
    if t is bytes or t is bytearray or t is memoryview:
        return encode_binary(v)
    if t is Uint:
        return encode_uint(v)
    if t is Ulong:
        return encode_ulong(v)
    if t is Ubyte:
        _range(v, 0, 255, "ubyte")
        return b"\x50" + _p8(v)
    if t is Ushort:
        _range(v, 0, 0xFFFF, "ushort")
        return b"\x60" + _p16(v)
    if t is Byte:
        _range(v, -128, 127, "byte")
        return b"\x51" + _pi8(v)
    if t is Short:
        _range(v, -(1 << 15), (1 << 15) - 1, "short")
        return b"\x61" + _pi16(v)
    if t is Int:
        return encode_int(v)
    if t is Timestamp or isinstance(v, datetime.datetime):
        return encode_timestamp(v)
    if t is float:
        return b"\x82" + _pf64(v)
    if t is Float:
        try:
            return b"\x72" + _pf32(v)
        except OverflowError:
            raise EncodeError(f"{v} does not fit an AMQP float") from None
    if t is uuid.UUID:
        return b"\x98" + v.bytes
    if t is Char:
        if len(v) != 1:
            raise EncodeError("char must be exactly one code point")
        return b"\x73" + _p32(ord(v))
    if t is Decimal32 or t is Decimal64 or t is Decimal128:
        width, code = {Decimal32: (4, 0x74), Decimal64: (8, 0x84), Decimal128: (16, 0x94)}[t]
        if len(v) != width:
            raise EncodeError(f"{t.__name__} needs {width} bytes")
        return bytes((code,)) + bytes(v)
    if t is Described:
        return encode_described(v.descriptor, v.value)
    if t is Array:
        return encode_array(v)
    if t is list or t is tuple:
        return encode_list(v)
    if t is dict:
        return encode_map(v)
    encode = getattr(v, "encode_amqp", None)
    if encode is not None:
        return encode()
    raise EncodeError(f"cannot encode a value of Python type {t.__name__} as AMQP")
