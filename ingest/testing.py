"""Factories for tests and benchmarks: events with known ids and valid/invalid C-MAPSS payloads."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from enginehub.ingest.model import EventRecord
from enginehub.ingest.payloads import JSON_FIELDS


def seed_values(unit: int, cycle: int) -> list[float]:
    """26 deterministic values: unit, cycle, 3 settings, 21 sensors."""
    settings = [round(0.0001 * unit, 4), round(-0.0002 * cycle, 4), 100.0]
    sensors = [round(500.0 + s + unit * 0.01 + cycle * 0.001, 4) for s in range(1, 22)]
    return [float(unit), float(cycle), *settings, *sensors]


def seed_line(unit: int, cycle: int) -> str:
    values = seed_values(unit, cycle)
    head = f"{unit} {cycle} "
    return head + " ".join(repr(v) for v in values[2:]) + " "


def json_payload(unit: int, cycle: int) -> str:
    values = seed_values(unit, cycle)
    obj: dict[str, Any] = dict(zip(JSON_FIELDS, values, strict=True))
    obj["unit"], obj["cycle"] = unit, cycle
    return json.dumps(obj)


def message_id(unit: int, cycle: int) -> str:
    return f"engine-{unit}-cycle-{cycle}"


def make_event(
    seq: int,
    body: bytes | str | None = None,
    *,
    partition_id: str = "0",
    message_id: str | None = None,
    device_id: str | None = "engine-1",
    eventhub: str = "eh1",
    consumer_group: str = "$Default",
    properties: dict[str, Any] | None = None,
) -> EventRecord:
    if body is None:
        body = seed_line(1, seq + 1)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return EventRecord(
        eventhub=eventhub,
        consumer_group=consumer_group,
        partition_id=partition_id,
        sequence_number=seq,
        offset=str(seq * 100),
        enqueued_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seq),
        body=body,
        message_id=message_id,
        device_id=device_id,
        properties=dict(properties or {}),
    )
