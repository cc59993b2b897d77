"""Errors of the AMQP 1.0 engine: the codec's closed error contract and the wire error conditions.

Codec contract: decoding arbitrary bytes either returns a value or raises a subclass of
:class:`CodecError` (``DecodeError``, and its subclass ``LimitExceeded`` when a size, count or nesting bound
is hit). Encoding a value the codec cannot represent raises :class:`EncodeError`. Nothing else escapes
(``CODEC_ERRORS`` is the tuple fuzz tests check against).
"""

from __future__ import annotations

import enum


class CodecError(ValueError):
    """Base of every error the codec raises."""


class DecodeError(CodecError):
    """The bytes are not a valid AMQP encoding (truncated, unknown constructor, bad UTF-8, ...)."""


class LimitExceeded(DecodeError):
    """A declared bound (nesting depth, element count, size) was exceeded."""


class EncodeError(CodecError):
    """The value cannot be encoded (unsupported Python type, integer out of range, ...)."""


CODEC_ERRORS: tuple[type[Exception], ...] = (CodecError,)


class Condition(enum.StrEnum):
    """AMQP error conditions used by the engine and the Event Hubs layer (symbols on the wire)."""

    INTERNAL_ERROR = "amqp:internal-error"
    NOT_FOUND = "amqp:not-found"
    UNAUTHORIZED_ACCESS = "amqp:unauthorized-access"
    DECODE_ERROR = "amqp:decode-error"
    RESOURCE_LIMIT_EXCEEDED = "amqp:resource-limit-exceeded"
    NOT_ALLOWED = "amqp:not-allowed"
    INVALID_FIELD = "amqp:invalid-field"
    NOT_IMPLEMENTED = "amqp:not-implemented"
    PRECONDITION_FAILED = "amqp:precondition-failed"
    CONNECTION_FORCED = "amqp:connection:forced"
    FRAMING_ERROR = "amqp:connection:framing-error"
    SESSION_UNATTACHED_HANDLE = "amqp:session:unattached-handle"
    SESSION_HANDLE_IN_USE = "amqp:session:handle-in-use"
    LINK_DETACH_FORCED = "amqp:link:detach-forced"
    LINK_STOLEN = "amqp:link:stolen"
    LINK_MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
    ARGUMENT_OUT_OF_RANGE = "com.microsoft:argument-out-of-range"
    SERVER_BUSY = "com.microsoft:server-busy"


class AMQPConnectionError(Exception):
    """Raised inside the connection layer to end the connection with a CLOSE carrying this error."""

    def __init__(self, condition: Condition | str, description: str) -> None:
        super().__init__(description)
        self.condition = condition.value if isinstance(condition, Condition) else condition
        self.description = description


class LinkError(Exception):
    """Raised by an application handler to refuse a link (attach echoed, then detach with this error)."""

    def __init__(self, condition: Condition | str, description: str) -> None:
        super().__init__(description)
        self.condition = condition.value if isinstance(condition, Condition) else condition
        self.description = description
