"""Read back what an ``ingest`` node wrote, for assertions: SQLite files and CrateDB schemas alike."""

from __future__ import annotations

import json
import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_TABLE = "enginehub_events"
VALUE_COLUMNS = (
    "unit #",
    "cycle #",
    *(f"setting {i}" for i in range(1, 4)),
    *(f"sensor {i}" for i in range(1, 22)),
)


def sqlite_path(sink_url: str) -> str:
    path = urlsplit(sink_url).path
    return path[1:] if path.startswith("/") else path


def count_rows(sink_url: str, table: str = DEFAULT_TABLE, message_id_prefix: str = "") -> int:
    """Rows in ``table`` now (0 while it does not exist yet); only ids ``mid:<prefix>...`` with a prefix."""
    try:
        ids = _query(sink_url, f'SELECT id FROM "{table}"', table)
    except Exception:
        return 0
    return (
        sum(1 for (i,) in ids if i.startswith("mid:" + message_id_prefix)) if message_id_prefix else len(ids)
    )


def read_rows(
    sink_url: str, table: str = DEFAULT_TABLE, message_id_prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """``{id: {"payload", "message_id", "device_id", "partition_id", "sequence_number", "unit #", ...}}``;
    with ``message_id_prefix``, only the rows whose message id starts with it (one run of a shared hub)."""
    cols = ", ".join(
        f'"{c}"' for c in ("id", "payload", "event_metadata", "partition_context", *VALUE_COLUMNS)
    )
    out: dict[str, dict[str, Any]] = {}
    for row in _query(sink_url, f'SELECT {cols} FROM "{table}"', table):
        if message_id_prefix and not row[0].startswith("mid:" + message_id_prefix):
            continue
        meta, ctx = _obj(row[2]), _obj(row[3])
        item: dict[str, Any] = {
            "payload": row[1],
            "message_id": meta.get("message_id"),
            "device_id": meta.get("device_id"),
            "sequence_number": meta.get("sequence_number"),
            "partition_id": ctx.get("partition_id"),
        }
        item.update(zip(VALUE_COLUMNS, row[4:], strict=True))
        out[row[0]] = item
    return out


def _obj(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return json.loads(value) if value else {}


def _query(sink_url: str, sql: str, table: str) -> list[tuple[Any, ...]]:
    parts = urlsplit(sink_url)
    if parts.scheme == "sqlite":
        con = sqlite3.connect(f"file:{sqlite_path(sink_url)}?mode=ro", uri=True, timeout=5)
        try:
            return [tuple(r) for r in con.execute(sql).fetchall()]
        finally:
            con.close()
    if parts.scheme.startswith("crate"):
        from crate.client import connect

        schema = parse_qs(parts.query).get("schema", ["doc"])[-1]
        proto = "https" if parts.scheme.endswith("https") else "http"
        conn = connect(
            f"{proto}://{parts.hostname}:{parts.port or 4200}",
            schema=schema,
            username=parts.username,
            password=parts.password,
            timeout=30,
        )
        try:
            cur = conn.cursor()
            cur.execute(f'REFRESH TABLE "{table}"')
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()
    raise ValueError(f"cannot read rows from {sink_url!r}")
