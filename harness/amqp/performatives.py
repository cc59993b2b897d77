"""AMQP 1.0 composite types declared as data: performatives, SASL frames, outcomes, terminus, error,
message-section composites.

Every composite is a small slotted class with its descriptor code, symbolic name and a field table
``(name, encoder)``. Encoding always writes ALL fields (trailing nulls included) as list8/list32 with a
small-ulong descriptor: pyamqp reads fields by position and breaks on short lists. Decoding is tolerant:
short lists (or list0) fill the missing fields with ``None``, extra fields are ignored, and the descriptor
may be the ulong code or the symbolic name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from enginehub.harness.amqp.codec import (
    Array,
    Described,
    Symbol,
    encode_binary,
    encode_string,
    encode_symbol,
    encode_symbol_map,
    encode_timestamp,
    encode_uint,
    encode_ulong,
    encode_value,
)
from enginehub.harness.amqp.errors import DecodeError, EncodeError


def _bool(v: Any) -> bytes:
    return b"\x41" if v else b"\x42"


def _ubyte(v: Any) -> bytes:
    if not 0 <= v <= 255:
        raise EncodeError(f"{v} out of range for ubyte")
    return b"\x50" + bytes((v,))


def _ushort(v: Any) -> bytes:
    if not 0 <= v <= 0xFFFF:
        raise EncodeError(f"{v} out of range for ushort")
    return b"\x60" + v.to_bytes(2, "big")


def _symbols(v: Any) -> bytes:
    """symbol, multiple=true: one symbol, or an array of symbols."""
    if isinstance(v, str):
        return encode_symbol(v)
    return encode_value(Array([Symbol(x) for x in v], code=0xB3))


def _fields(v: Any) -> bytes:
    return encode_symbol_map(v)


def _any(v: Any) -> bytes:
    return encode_value(v)


_ENC: dict[str, Callable[[Any], bytes]] = {
    "bool": _bool,
    "ubyte": _ubyte,
    "ushort": _ushort,
    "uint": encode_uint,
    "ulong": encode_ulong,
    "string": encode_string,
    "symbol": encode_symbol,
    "symbols": _symbols,
    "binary": encode_binary,
    "fields": _fields,
    "map": _any,
    "timestamp": encode_timestamp,
    "any": _any,
}

COMPOSITES: dict[int, type[Composite]] = {}
COMPOSITES_BY_NAME: dict[str, type[Composite]] = {}


class Composite:
    """Base of every composite. Subclasses set CODE, NAME and FIELDS."""

    __slots__ = ()
    CODE: ClassVar[int]
    NAME: ClassVar[str]
    FIELDS: ClassVar[tuple[tuple[str, str], ...]]
    _ENCODERS: ClassVar[tuple[Callable[[Any], bytes], ...]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            args = args[: len(names)]
        for name, value in zip(names, args, strict=False):
            object.__setattr__(self, name, value)
        for name in names[len(args) :]:
            object.__setattr__(self, name, kwargs.pop(name, None))
        if kwargs:
            raise TypeError(f"{self.NAME}: unknown fields {sorted(kwargs)}")

    def values(self) -> list[Any]:
        return [getattr(self, n) for n in self.__slots__]

    def encode_amqp(self) -> bytes:
        parts = []
        for enc, name in zip(self._ENCODERS, self.__slots__, strict=True):
            v = getattr(self, name)
            parts.append(b"\x40" if v is None else enc(v))
        body = b"".join(parts)
        count = len(parts)
        head = b"\x00\x53" + bytes((self.CODE,))
        if len(body) + 1 < 256:
            return head + bytes((0xC0, len(body) + 1, count)) + body
        return head + b"\xd0" + (len(body) + 4).to_bytes(4, "big") + count.to_bytes(4, "big") + body

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.values() == other.values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n) is not None)
        return f"{type(self).__name__}({shown})"


def _composite(code: int, name: str, fields: str) -> Callable[[type], type]:
    parsed = tuple(tuple(f.split(":")) for f in fields.split())

    def wrap(cls: type) -> type:
        ns = {
            "__slots__": tuple(f[0] for f in parsed),
            "CODE": code,
            "NAME": name,
            "FIELDS": parsed,
            "_ENCODERS": tuple(_ENC[f[1]] for f in parsed),
            "__doc__": cls.__doc__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        }
        new = type(cls.__name__, (Composite,), ns)
        COMPOSITES[code] = new
        COMPOSITES_BY_NAME[name] = new
        return new

    return wrap


# ------------------------------------------------------------------ performatives (frame bodies)
@_composite(
    0x10,
    "amqp:open:list",
    "container_id:string hostname:string max_frame_size:uint channel_max:ushort idle_time_out:uint "
    "outgoing_locales:symbols incoming_locales:symbols offered_capabilities:symbols "
    "desired_capabilities:symbols properties:fields",
)
class Open(Composite):
    """OPEN (10 fields)."""


@_composite(
    0x11,
    "amqp:begin:list",
    "remote_channel:ushort next_outgoing_id:uint incoming_window:uint outgoing_window:uint handle_max:uint "
    "offered_capabilities:symbols desired_capabilities:symbols properties:fields",
)
class Begin(Composite):
    """BEGIN (8 fields)."""


@_composite(
    0x12,
    "amqp:attach:list",
    "name:string handle:uint role:bool snd_settle_mode:ubyte rcv_settle_mode:ubyte source:any target:any "
    "unsettled:map incomplete_unsettled:bool initial_delivery_count:uint max_message_size:ulong "
    "offered_capabilities:symbols desired_capabilities:symbols properties:fields",
)
class Attach(Composite):
    """ATTACH (14 fields). role: False = sender, True = receiver."""


@_composite(
    0x13,
    "amqp:flow:list",
    "next_incoming_id:uint incoming_window:uint next_outgoing_id:uint outgoing_window:uint handle:uint "
    "delivery_count:uint link_credit:uint available:uint drain:bool echo:bool properties:fields",
)
class Flow(Composite):
    """FLOW (11 fields)."""


@_composite(
    0x14,
    "amqp:transfer:list",
    "handle:uint delivery_id:uint delivery_tag:binary message_format:uint settled:bool more:bool "
    "rcv_settle_mode:ubyte state:any resume:bool aborted:bool batchable:bool",
)
class Transfer(Composite):
    """TRANSFER (11 fields); the payload follows the performative in the frame."""


@_composite(
    0x15,
    "amqp:disposition:list",
    "role:bool first:uint last:uint settled:bool state:any batchable:bool",
)
class Disposition(Composite):
    """DISPOSITION (6 fields)."""


@_composite(0x16, "amqp:detach:list", "handle:uint closed:bool error:any")
class Detach(Composite):
    """DETACH (3 fields)."""


@_composite(0x17, "amqp:end:list", "error:any")
class End(Composite):
    """END (1 field)."""


@_composite(0x18, "amqp:close:list", "error:any")
class Close(Composite):
    """CLOSE (1 field)."""


# ------------------------------------------------------------------------------------------ SASL
@_composite(0x40, "amqp:sasl-mechanisms:list", "sasl_server_mechanisms:symbols")
class SASLMechanisms(Composite):
    """sasl-mechanisms (1 field)."""


@_composite(0x41, "amqp:sasl-init:list", "mechanism:symbol initial_response:binary hostname:string")
class SASLInit(Composite):
    """sasl-init (3 fields)."""


@_composite(0x42, "amqp:sasl-challenge:list", "challenge:binary")
class SASLChallenge(Composite):
    """sasl-challenge."""


@_composite(0x43, "amqp:sasl-response:list", "response:binary")
class SASLResponse(Composite):
    """sasl-response."""


@_composite(0x44, "amqp:sasl-outcome:list", "code:ubyte additional_data:binary")
class SASLOutcome(Composite):
    """sasl-outcome (2 fields); code 0 = ok, 1 = auth."""


# --------------------------------------------------------------------------- error, outcomes, terminus
@_composite(0x1D, "amqp:error:list", "condition:symbol description:string info:fields")
class Error(Composite):
    """error (3 fields: pyamqp reads error[2], so it is always written)."""


@_composite(0x23, "amqp:received:list", "section_number:uint section_offset:ulong")
class Received(Composite):
    """received delivery state."""


@_composite(0x24, "amqp:accepted:list", "")
class Accepted(Composite):
    """accepted outcome."""


@_composite(0x25, "amqp:rejected:list", "error:any")
class Rejected(Composite):
    """rejected outcome."""


@_composite(0x26, "amqp:released:list", "")
class Released(Composite):
    """released outcome."""


@_composite(
    0x27, "amqp:modified:list", "delivery_failed:bool undeliverable_here:bool message_annotations:fields"
)
class Modified(Composite):
    """modified outcome."""


@_composite(
    0x28,
    "amqp:source:list",
    "address:string durable:uint expiry_policy:symbol timeout:uint dynamic:bool "
    "dynamic_node_properties:fields distribution_mode:symbol filter:fields default_outcome:any "
    "outcomes:symbols capabilities:symbols",
)
class Source(Composite):
    """source terminus (11 fields)."""


@_composite(
    0x29,
    "amqp:target:list",
    "address:string durable:uint expiry_policy:symbol timeout:uint dynamic:bool "
    "dynamic_node_properties:fields capabilities:symbols",
)
class Target(Composite):
    """target terminus (7 fields)."""


# ------------------------------------------------------------------------------ message composites
@_composite(
    0x70, "amqp:header:list", "durable:bool priority:ubyte ttl:uint first_acquirer:bool delivery_count:uint"
)
class Header(Composite):
    """message header section (5 fields)."""


@_composite(
    0x73,
    "amqp:properties:list",
    "message_id:any user_id:binary to:any subject:string reply_to:any correlation_id:any "
    "content_type:symbol content_encoding:symbol absolute_expiry_time:timestamp creation_time:timestamp "
    "group_id:string group_sequence:uint reply_to_group_id:string",
)
class Properties(Composite):
    """message properties section (13 fields)."""


PERFORMATIVE_CODES = frozenset(range(0x10, 0x19))
SASL_CODES = frozenset(range(0x40, 0x45))


def composite_from(value: Any) -> Any:
    """Turn a decoded ``Described`` of a known composite into its class (tolerant: short/long lists)."""
    if type(value) is not Described:
        return value
    descriptor, body = value
    cls = COMPOSITES.get(descriptor) if isinstance(descriptor, int) else COMPOSITES_BY_NAME.get(descriptor)
    if cls is None:
        return value
    if not isinstance(body, list):
        raise DecodeError(f"{cls.NAME} body must be a list, got {type(body).__name__}")
    obj = cls(*body)
    for name, kind in cls.FIELDS:
        if kind == "any":
            v = getattr(obj, name)
            if type(v) is Described:
                object.__setattr__(obj, name, composite_from(v))
    return obj
