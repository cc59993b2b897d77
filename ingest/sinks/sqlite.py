"""SQLite sink: the embedded default (standard library only).

- WAL journal, ``synchronous=FULL`` by default (a committed batch survives power loss before its
  checkpoint is written; ``?synchronous=normal`` trades that for speed).
- One transaction per batch, taken with ``BEGIN IMMEDIATE`` and a busy timeout, so several consumer
  processes on one machine can share the file: writers queue instead of failing.
- Idempotent: ``INSERT OR IGNORE`` on the identity key (``id`` PRIMARY KEY); the number of new rows is
  the statement's rowcount, the rest are redeliveries.
- Typed columns are computed on insert by the rules (SQLite has no generated columns from a parse).
- One connection is kept between batches (opening one per batch cost more CPU than the inserts: with
  WAL, closing the last connection checkpoints and removes the WAL file every time). It is dropped and
  reopened whenever it could mask an outage: before each batch the file must still be the same file
  (device, inode) and writable (``os.access``: catches ``chmod`` and, for root, ``chattr +i``);
  otherwise, and after any failed write, the next batch opens a fresh connection, exactly as a
  connection-per-batch sink would. A database that became unwritable (file permissions, disk full,
  locked for longer than the busy timeout) is therefore reported as :class:`SinkUnavailableError` on the
  next batch instead of being masked by an old file descriptor.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from enginehub.ingest.model import (
    DEAD_LETTER_TABLE,
    INTEGER_COLUMNS,
    TYPED_COLUMNS,
    DeadLetter,
    Row,
    SinkConfigError,
    SinkUnavailableError,
    WriteResult,
    dumps,
)
from enginehub.ingest.sinks.base import TableSpec, check_identifier

LOG = logging.getLogger(__name__)

BASE_COLUMNS = ("id", "partition_context", "event_metadata", "ts", "ingested_at", "payload")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ddl(table: str) -> str:
    check_identifier(table)
    typed = ",\n  ".join(f"{_q(c)} {'INTEGER' if c in INTEGER_COLUMNS else 'REAL'}" for c in TYPED_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(table)} (\n"
        "  id TEXT PRIMARY KEY,\n"
        "  partition_context TEXT NOT NULL,\n"
        "  event_metadata TEXT NOT NULL,\n"
        "  ts TEXT,\n"
        "  ingested_at TEXT NOT NULL,\n"
        "  payload TEXT NOT NULL,\n"
        f"  {typed}\n)"
    )


def dead_letter_ddl(table: str = DEAD_LETTER_TABLE) -> str:
    check_identifier(table)
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(table)} (\n"
        "  target_table TEXT NOT NULL,\n"
        "  id TEXT NOT NULL,\n"
        "  eventhub TEXT NOT NULL,\n"
        "  consumer_group TEXT NOT NULL,\n"
        "  partition_id TEXT NOT NULL,\n"
        "  sequence_number INTEGER NOT NULL,\n"
        '  "offset" TEXT,\n'
        "  enqueued_time TEXT,\n"
        "  reason TEXT NOT NULL,\n"
        "  raw BLOB NOT NULL,\n"
        "  ingested_at TEXT NOT NULL,\n"
        "  PRIMARY KEY (target_table, id)\n)"
    )


def insert_sql(table: str) -> str:
    cols = BASE_COLUMNS + TYPED_COLUMNS
    return (
        f"INSERT OR IGNORE INTO {_q(table)} ({', '.join(_q(c) for c in cols)}) "
        f"VALUES ({', '.join('?' for _ in cols)})"
    )


def dead_letter_insert_sql(table: str = DEAD_LETTER_TABLE) -> str:
    return (
        f"INSERT OR IGNORE INTO {_q(table)} (target_table, id, eventhub, consumer_group, partition_id, "
        'sequence_number, "offset", enqueued_time, reason, raw, ingested_at) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is dt.UTC:  # what the SDK hands out: no conversion needed
        return value.isoformat()
    return value.astimezone(dt.UTC).isoformat()


#: the keys of ``EventRecord.event_metadata()``, in its order
_METADATA_KEYS = (
    "sequence_number",
    "offset",
    "enqueued_time",
    "device_id",
    "message_id",
    "partition_key",
    "content_type",
    "system_properties",
    "properties",
)
_METADATA_TEXT_KEYS = tuple((key, f',"{key}":') for key in _METADATA_KEYS[1:7])


def metadata_json(meta: dict[str, Any]) -> str:
    """``dumps(meta)``, assembled directly in the usual case (the event_metadata layout, text or null
    fields, no properties): the same string, about half the CPU. Anything else goes to ``dumps``."""
    if type(meta) is dict and len(meta) == 9 and tuple(meta) == _METADATA_KEYS:
        seq, system, props = meta["sequence_number"], meta["system_properties"], meta["properties"]
        if type(seq) is int and type(system) is dict and not system and type(props) is dict and not props:
            parts = ['{"sequence_number":', int.__repr__(seq)]
            for key, head in _METADATA_TEXT_KEYS:
                value = meta[key]
                if value is None:
                    parts += (head, "null")
                elif type(value) is str:
                    parts += (head, encode_basestring_ascii(value))
                else:
                    return dumps(meta)
            parts.append(',"system_properties":{},"properties":{}}')
            return "".join(parts)
    return dumps(meta)


def row_params(row: Row, now: str, context_json: str | None = None) -> tuple[object, ...]:
    """Parameters of ``insert_sql``. ``context_json``: ``dumps(row.partition_context)`` when the caller
    already has it (rows of one partition share it)."""
    return (
        row.key,
        dumps(row.partition_context) if context_json is None else context_json,
        metadata_json(row.event_metadata),
        _iso(row.ts),
        now,
        row.payload,
        *map(row.columns.get, TYPED_COLUMNS),
    )


def _rows_params(rows: Sequence[Row], now: str) -> dict[str, list[tuple[object, ...]]]:
    """``row_params`` of each row grouped by table; the partition context JSON is encoded once per
    distinct context object (the rules share one per batch)."""
    by_table: dict[str, list[tuple[object, ...]]] = {}
    contexts: dict[int, str] = {}
    for row in rows:
        context = row.partition_context
        context_json = contexts.get(id(context))
        if context_json is None:  # ids are stable here: every context is referenced by `rows`
            context_json = contexts[id(context)] = dumps(context)
        params = by_table.get(row.table)
        if params is None:
            params = by_table[row.table] = []
        params.append(row_params(row, now, context_json))
    return by_table


def dead_letter_params(dl: DeadLetter, now: str) -> tuple[object, ...]:
    return (
        dl.table,
        dl.key,
        dl.eventhub,
        dl.consumer_group,
        dl.partition_id,
        dl.sequence_number,
        dl.offset,
        _iso(dl.enqueued_time),
        dl.reason,
        dl.raw,
        now,
    )


class SqliteSink:
    """See the module docstring. ``busy_timeout`` (s) bounds how long a batch waits for another writer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        busy_timeout: float = 10.0,
        dead_letter_table: str = DEAD_LETTER_TABLE,
    ) -> None:
        if synchronous.lower() not in ("full", "normal", "extra"):
            raise SinkConfigError(f"sqlite synchronous={synchronous!r}: use full, normal or extra")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.dead_letter_table = check_identifier(dead_letter_table)
        self.description = f"sqlite:///{self.path}"
        self._tables: set[str] = set()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._sql: dict[str, str] = {}

    # -- connection ---------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            return conn
        except sqlite3.Error as exc:
            raise SinkUnavailableError(f"cannot open {self.path}: {exc}") from exc

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database file while it is there and writable, else None."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        if not os.access(self.path, os.W_OK):
            return None
        return st.st_dev, st.st_ino

    def _drop(self) -> None:
        conn, self._conn, self._file_id = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                LOG.debug("closing %s failed", self.path, exc_info=True)

    def _connection(self) -> sqlite3.Connection:
        """The kept connection while the file is still the same writable file; else a fresh one (which
        then reports the outage on the write, as a connection per batch would)."""
        file_id = self._file_identity()
        if self._conn is not None and (file_id is None or file_id != self._file_id):
            self._drop()
        if self._conn is None:
            self._conn = self._connect()
            self._file_id = file_id
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """``PRAGMA journal_mode=WAL``, retried on SQLITE_BUSY until ``busy_timeout``.

        Switching a fresh database to WAL escalates a shared lock to an exclusive one. When several
        processes open the same new file at once (ingest nodes started together), SQLite returns
        SQLITE_BUSY to all but one of them *without* calling the busy handler (lock escalation could
        deadlock), so the connection's timeout does not apply and a node failed to start with "database
        is locked". The winner's switch takes milliseconds; the others retry here until it is done."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def open(self, tables: Sequence[TableSpec] = ()) -> None:
        if not self.path.parent.is_dir():
            raise SinkConfigError(f"sqlite sink: directory {self.path.parent} does not exist")
        conn = self._connect()
        try:
            mode = self._enable_wal(conn)
            if str(mode).lower() != "wal":
                LOG.warning("sqlite %s: journal_mode is %s, not WAL", self.path, mode)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(dead_letter_ddl(self.dead_letter_table))
            for spec in tables:
                conn.execute(table_ddl(spec.name))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SinkUnavailableError(f"cannot create tables in {self.path}: {exc}") from exc
        finally:
            conn.close()
        self._tables.update(spec.name for spec in tables)
        LOG.info("sqlite sink %s ready (tables %s)", self.path, sorted(self._tables))

    def write(self, rows: Sequence[Row], dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        if not rows and not dead_letters:
            return WriteResult()
        now = dt.datetime.now(dt.UTC).isoformat()
        by_table = _rows_params(rows, now)
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for table in by_table:
                        if table not in self._tables:
                            conn.execute(table_ddl(table))
                    inserted = 0
                    for table, params in by_table.items():
                        sql = self._sql.get(table)
                        if sql is None:
                            sql = self._sql[table] = insert_sql(table)
                        cur = conn.executemany(sql, params)
                        inserted += max(cur.rowcount, 0)
                    if dead_letters:
                        conn.executemany(
                            dead_letter_insert_sql(self.dead_letter_table),
                            [dead_letter_params(dl, now) for dl in dead_letters],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            LOG.debug("rollback on %s failed", self.path, exc_info=True)
                    raise
            except sqlite3.Error as exc:
                self._drop()  # the next batch starts from a fresh connection
                raise SinkUnavailableError(f"sqlite write to {self.path} failed: {exc}") from exc
            except BaseException:
                self._drop()
                raise
            self._tables.update(by_table)
        return WriteResult(inserted=inserted, duplicates=len(rows) - inserted, dead_letters=len(dead_letters))

    def close(self) -> None:
        """Closes the kept connection (the last one to close checkpoints the WAL); harmless twice."""
        with self._lock:
            self._drop()
