"""Plain data passed between the consumer, the rules and the sinks (no SDK, no I/O).

An :class:`EventRecord` is one received Event Hubs event, independent of the SDK object it came from.
The rules turn it into :class:`Row` objects (one per matching target table) or :class:`DeadLetter` objects
(payload did not parse, no rule matched). Sinks write both kinds and report per-row outcomes in a
:class:`WriteResult`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_TABLE = "enginehub_events"
DEAD_LETTER_TABLE = "enginehub_dead_letters"

#: The typed columns of ``enginehub_events`` in table order (names as in the original pipeline).
TYPED_COLUMNS: tuple[str, ...] = (
    ("unit #", "cycle #")
    + tuple(f"setting {i}" for i in range(1, 4))
    + tuple(f"sensor {i}" for i in range(1, 22))
)
INTEGER_COLUMNS = frozenset({"unit #", "cycle #"})


#: EventRecord and Row are made once per event (and per row) on the hot path, so they are plain slotted
#: dataclasses: a frozen one sets each field through ``object.__setattr__``, ~1.1 us per object (~7 % of
#: the sink worker's CPU per event). Treat them as values all the same: nothing assigns to their fields.
@dataclass(slots=True)
class EventRecord:
    """One received event with the coordinates needed for identity, checkpointing and dead letters."""

    eventhub: str
    consumer_group: str
    partition_id: str
    sequence_number: int
    offset: str
    enqueued_time: dt.datetime | None
    body: bytes
    message_id: str | None = None
    device_id: str | None = None
    partition_key: str | None = None
    content_type: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    system_properties: dict[str, Any] = field(default_factory=dict)

    @property
    def identity_key(self) -> str:
        """The row identity: the message id when present, else (partition id, sequence number)."""
        if self.message_id:
            return f"mid:{self.message_id}"
        return f"seq:{self.partition_id}:{self.sequence_number}"

    def partition_context(self) -> dict[str, Any]:
        return {
            "eventhub": self.eventhub,
            "consumer_group": self.consumer_group,
            "partition_id": self.partition_id,
        }

    def event_metadata(self) -> dict[str, Any]:
        return {
            "sequence_number": self.sequence_number,
            "offset": self.offset,
            "enqueued_time": self.enqueued_time.isoformat() if self.enqueued_time else None,
            "device_id": self.device_id,
            "message_id": self.message_id,
            "partition_key": self.partition_key,
            "content_type": self.content_type,
            "system_properties": self.system_properties,  # JSON-safe: see to_record / jsonable
            "properties": self.properties,
        }


@dataclass(slots=True)
class Row:
    """One row for one target table. ``columns`` holds the typed columns (may be empty)."""

    table: str
    key: str
    partition_context: dict[str, Any]
    event_metadata: dict[str, Any]
    ts: dt.datetime | None
    payload: str
    columns: dict[str, Any]
    #: coordinates of the source event (for dead-lettering a row the sink refuses)
    partition_id: str
    sequence_number: int
    raw: bytes = b""


@dataclass(frozen=True)
class DeadLetter:
    """An event (or one of its rows) that could not be stored as a row, with the reason."""

    key: str
    table: str  # the intended target table ("" when no rule matched)
    eventhub: str
    consumer_group: str
    partition_id: str
    sequence_number: int
    offset: str
    enqueued_time: dt.datetime | None
    reason: str
    raw: bytes

    @classmethod
    def of(cls, event: EventRecord, reason: str, table: str = "") -> DeadLetter:
        return cls(
            key=event.identity_key,
            table=table,
            eventhub=event.eventhub,
            consumer_group=event.consumer_group,
            partition_id=event.partition_id,
            sequence_number=event.sequence_number,
            offset=event.offset,
            enqueued_time=event.enqueued_time,
            reason=reason,
            raw=event.body,
        )

    @classmethod
    def unreadable(
        cls, where: tuple[str, str, str], sequence_number: int, offset: str, raw: bytes, exc: Exception
    ) -> DeadLetter:
        """An event whose SDK object could not be read; ``where`` = (eventhub, consumer group, partition)."""
        eventhub, consumer_group, partition_id = where
        LOG.warning(
            "partition %s: event %d unreadable (%r): dead-lettered", partition_id, sequence_number, exc
        )
        return cls(
            key=f"seq:{partition_id}:{sequence_number}",
            table="",
            eventhub=eventhub,
            consumer_group=consumer_group,
            partition_id=partition_id,
            sequence_number=sequence_number,
            offset=offset,
            enqueued_time=None,
            reason=f"unreadable event: {type(exc).__name__}: {exc}",
            raw=raw,
        )

    @classmethod
    def of_row(cls, row: Row, reason: str) -> DeadLetter:
        return cls(
            key=row.key,
            table=row.table,
            eventhub=str(row.partition_context.get("eventhub", "")),
            consumer_group=str(row.partition_context.get("consumer_group", "")),
            partition_id=row.partition_id,
            sequence_number=row.sequence_number,
            offset=str(row.event_metadata.get("offset", "")),
            enqueued_time=row.ts,
            reason=reason,
            raw=row.raw or row.payload.encode("utf-8", "surrogateescape"),
        )


@dataclass(frozen=True)
class RowFailure:
    """A row the sink did not store. ``retryable`` failures may succeed later (shard unavailable,
    overload); the others are permanent for this row (type mismatch) and belong in the dead-letter table."""

    index: int
    reason: str
    retryable: bool


@dataclass
class WriteResult:
    """Outcome of one ``Sink.write`` call. Every input row is exactly one of: ``inserted`` (new),
    ``duplicates`` (its key was already stored: redelivery) or listed in ``failures``."""

    inserted: int = 0
    duplicates: int = 0
    failures: list[RowFailure] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def confirmed(self) -> int:
        return self.inserted + self.duplicates


class SinkError(Exception):
    """Base class of sink errors."""


class SinkUnavailableError(SinkError):
    """The whole write failed and nothing of it is known to be stored (database down, file read-only,
    lock timeout, connection refused). Retry the same batch later; rows are idempotent by key."""


class SinkConfigError(SinkError, ValueError):
    """The sink URL or table definition is invalid (not retryable)."""


#: AMQP annotations already stored as top-level event metadata (sequence number, offset, enqueued time,
#: partition key), so left out of ``system_properties``
REDUNDANT_SYSTEM_PROPERTIES = frozenset(
    {b"x-opt-sequence-number", b"x-opt-offset", b"x-opt-enqueued-time", b"x-opt-partition-key"}
)


def as_text(value: Any) -> str | None:
    """An AMQP value as text: None stays None, bytes are decoded (undecodable bytes replaced)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def jsonable(value: Any) -> Any:
    """Make AMQP property values JSON-serialisable: bytes keys/values decoded (base64 when not UTF-8),
    datetimes as ISO 8601, everything else unknown as ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


#: json.dumps(value, separators=(",", ":"), default=jsonable) without building an encoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=jsonable)


def dumps(value: Any) -> str:
    """Compact JSON; values JSON cannot encode (bytes, datetimes from hand-built records) via jsonable."""
    return _ENCODER.encode(value)
