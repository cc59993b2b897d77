"""Message building: payload, deterministic message id, content type/encoding, properties, creation time.

The message id is ``{run_id}-{unit}-{cycle}``: the same (run, unit, cycle) always gives the same id, so a
re-send (SDK DUP after a drop, our retry after a timeout, the duplicate fault) carries the same id and the
consumer stores one row. Custom properties: ``unit``, ``cycle``, ``dataset`` and
``iothub-creation-time-utc`` (the SDK sets no creation time itself); a malformed fault adds
``enginehub-fault=malformed``.

Pure: takes the time as an argument; builds ``OutMessage`` (plain data, picklable); ``device.py`` turns it
into an SDK ``Message``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from enginehub.datasets.schema import Row

LOG = logging.getLogger(__name__)

PAYLOADS = ("seed", "json")
CONTENT_TYPES = {"seed": "text/plain", "json": "application/json"}
CONTENT_ENCODING = "utf-8"
CREATION_TIME_PROPERTY = "iothub-creation-time-utc"
FAULT_PROPERTY = "enginehub-fault"


@dataclass(frozen=True)
class OutMessage:
    """One device-to-cloud message, ready to hand to the SDK."""

    message_id: str
    body: bytes
    content_type: str
    content_encoding: str
    properties: dict[str, str] = field(default_factory=dict)
    unit: int = 0
    cycle: int = 0
    malformed: bool = False


def message_id(run_id: str, unit: int, cycle: int) -> str:
    return f"{run_id}-{unit}-{cycle}"


def format_creation_time(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``: ``2024-01-01T00:00:00.000Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def encode_payload(row: Row, payload: str) -> bytes:
    """The row as the seed line or JSON (codecs from ``enginehub.datasets.codecs``)."""
    from enginehub.datasets import codecs

    if payload == "seed":
        out = codecs.encode_line(row)
    elif payload == "json":
        out = codecs.encode_json(row)
    else:
        raise ValueError(f"payload must be one of {PAYLOADS}, got {payload!r}")
    return out if isinstance(out, bytes) else out.encode("utf-8")


def build_message(
    row: Row,
    *,
    run_id: str,
    payload: str,
    dataset: str,
    created: datetime,
    encode: Callable[[Row, str], bytes] = encode_payload,
) -> OutMessage:
    if payload not in PAYLOADS:
        raise ValueError(f"payload must be one of {PAYLOADS}, got {payload!r}")
    return OutMessage(
        message_id=message_id(run_id, row.unit, row.cycle),
        body=encode(row, payload),
        content_type=CONTENT_TYPES[payload],
        content_encoding=CONTENT_ENCODING,
        properties={
            "unit": str(row.unit),
            "cycle": str(row.cycle),
            "dataset": dataset,
            CREATION_TIME_PROPERTY: format_creation_time(created),
        },
        unit=row.unit,
        cycle=row.cycle,
    )


def malform(msg: OutMessage, rng: random.Random) -> OutMessage:
    """The same message with a body no consumer can parse (truncated, a non-number, or invalid UTF-8)."""
    mode = rng.randrange(3)
    if mode == 0:
        body = b" ".join(msg.body.split(b" ")[:5])  # too few fields
    elif mode == 1:
        body = b"not-a-number " + msg.body
    else:
        body = b"\xff\xfe" + msg.body[:10]  # not UTF-8
    props = dict(msg.properties)
    props[FAULT_PROPERTY] = "malformed"
    return OutMessage(
        msg.message_id, body, msg.content_type, msg.content_encoding, props, msg.unit, msg.cycle, True
    )
