"""CrateDB sink over HTTP ``_sql`` with ``bulk_args`` (the ``crate`` client).

What it fixes relative to the 2018 ingest rule (see docs/cratedb.md):
- one bulk request per table per batch (``cursor.executemany`` -> ``bulk_args``), never one per event;
  ``bulk_size`` (URL ``?bulk_size=N``) caps the rows of one request: a larger write goes as several
  requests of at most N rows, one after the other (default: no cap, one request per table per write);
- ``INSERT ... ON CONFLICT DO NOTHING`` on the identity key, so redelivery is idempotent;
- **every per-row result is inspected**: ``rowcount`` 1 = inserted, 0 = already there, -2 = failed.
  The client's aggregate ``cursor.rowcount`` silently leaves the -2 rows out, so it is never used.
  Failed rows are reported as retryable (unavailable shard, overload, no error detail) or permanent
  (type/parse errors), and the consumer retries or dead-letters them; they are never counted as written;
- start-up retries the connection until ``connect_timeout``; a connection error later drops the
  connection and the next write reconnects (the client would otherwise park the server for 30 s);
- a missing table (dropped while running) is recreated on the next attempt instead of losing events;
- DDL: ``TIMESTAMP WITH TIME ZONE``, OBJECT columns, typed columns GENERATED from ``payload`` for
  ``format = "seed"`` tables like the original; ``auto`` (the default rule) and ``json`` tables get plain
  typed columns filled on insert.

Requires CrateDB >= 5.10.11 (fix for ON CONFLICT with bulk requests).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from enginehub.ingest.model import (
    DEAD_LETTER_TABLE,
    DEFAULT_TABLE,
    INTEGER_COLUMNS,
    TYPED_COLUMNS,
    DeadLetter,
    Row,
    RowFailure,
    SinkConfigError,
    SinkUnavailableError,
    WriteResult,
)
from enginehub.ingest.sinks.base import TableSpec, check_identifier

LOG = logging.getLogger(__name__)

#: Substrings of CrateDB per-row error messages that mean "try again later" (not the row's fault).
RETRYABLE_MARKERS = (
    "UnavailableShardsException",
    "ShardNotFoundException",
    "CircuitBreakingException",
    "EsRejectedExecutionException",
    "RejectedExecutionException",
    "NodeDisconnectedException",
    "NodeNotConnectedException",
    "NoShardAvailableActionException",
    "ClusterBlockException",
    "TimeoutException",
    "timed out",
    "ConnectTransportException",
    "Primary shard is not active",
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed_type(col: str) -> str:
    return "INTEGER" if col in INTEGER_COLUMNS else "DOUBLE PRECISION"


#: Formats whose typed columns CrateDB computes itself (GENERATED from ``payload``, as the original did).
#: ``auto``/``json`` tables get plain typed columns filled on insert from the rules' parse: a generated
#: expression that parses JSON text could not be checked against a real server here, and a DDL error
#: would stop the consumer at start-up.
GENERATED_FORMATS = ("seed",)


def generated_expression(col_index: int, col: str) -> str:
    """The seed line is space separated (C-MAPSS has runs of spaces and a trailing one): normalise the
    whitespace, split, take field ``col_index`` (1-based in CrateDB arrays) and cast.

    Every whitespace run becomes one space BEFORE trimming: CrateDB's ``trim()`` removes spaces only, and
    the seed decoder accepts lines with leading/trailing tabs, CR or LF; trimming first left a leading
    separator, an empty first field and a cast error for such a line (checked on a real CrateDB 6.4.3)."""
    fields = "string_to_array(trim(regexp_replace(payload, '\\s+', ' ', 'g')), ' ')"
    return f"CAST({fields}[{col_index}] AS {_typed_type(col)})"


EVENT_METADATA_TYPE = (
    'OBJECT(DYNAMIC) AS (sequence_number BIGINT, "offset" TEXT, enqueued_time TIMESTAMP WITH TIME ZONE, '
    "device_id TEXT, message_id TEXT, partition_key TEXT, content_type TEXT, "
    "system_properties OBJECT(IGNORED), properties OBJECT(IGNORED))"
)
#: Text of any length (event bodies up to 1 MB, their base64, error messages): no index AND no column store.
#: ``INDEX OFF`` alone keeps the column store (doc values), which refuses values over 32 766 bytes with
#: ``DocValuesField ... is too large`` (seen on a real CrateDB 6.4.3), a permanent per-row failure, and for a
#: dead letter a failed write that the consumer retries forever.
UNBOUNDED_TEXT = "TEXT INDEX OFF STORAGE WITH (columnstore = false)"
PARTITION_CONTEXT_TYPE = "OBJECT(DYNAMIC) AS (eventhub TEXT, consumer_group TEXT, partition_id TEXT)"


def table_ddl(schema: str, spec: TableSpec) -> str:
    """CREATE TABLE IF NOT EXISTS for a target table (pure; unit-tested without a server)."""
    check_identifier(schema, "schema")
    generated = spec.payload_format in GENERATED_FORMATS
    cols = [
        "id TEXT PRIMARY KEY",
        f"partition_context {PARTITION_CONTEXT_TYPE}",
        f"event_metadata {EVENT_METADATA_TYPE}",
        "ts TIMESTAMP WITH TIME ZONE",
        "ingested_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP",
        f"payload {UNBOUNDED_TEXT}",
    ]
    for i, col in enumerate(TYPED_COLUMNS, start=1):
        if generated:
            cols.append(f"{_q(col)} {_typed_type(col)} GENERATED ALWAYS AS ({generated_expression(i, col)})")
        else:
            cols.append(f"{_q(col)} {_typed_type(col)}")
    body = ",\n  ".join(cols)
    return f"CREATE TABLE IF NOT EXISTS {_q(schema)}.{_q(spec.name)} (\n  {body}\n)"


def dead_letter_ddl(schema: str, table: str = DEAD_LETTER_TABLE) -> str:
    check_identifier(schema, "schema")
    check_identifier(table)
    return (
        f"CREATE TABLE IF NOT EXISTS {_q(schema)}.{_q(table)} (\n"
        "  target_table TEXT NOT NULL,\n"
        "  id TEXT NOT NULL,\n"
        "  eventhub TEXT,\n"
        "  consumer_group TEXT,\n"
        "  partition_id TEXT,\n"
        "  sequence_number BIGINT,\n"
        '  "offset" TEXT,\n'
        "  enqueued_time TIMESTAMP WITH TIME ZONE,\n"
        f"  reason {UNBOUNDED_TEXT},\n"
        f"  raw_base64 {UNBOUNDED_TEXT},\n"
        "  ingested_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,\n"
        "  PRIMARY KEY (target_table, id)\n)"
    )


def insert_columns(spec: TableSpec) -> tuple[str, ...]:
    base = ("id", "partition_context", "event_metadata", "ts", "payload")
    return base if spec.payload_format in GENERATED_FORMATS else base + TYPED_COLUMNS


def insert_sql(schema: str, spec: TableSpec) -> str:
    cols = insert_columns(spec)
    return (
        f"INSERT INTO {_q(schema)}.{_q(spec.name)} ({', '.join(_q(c) for c in cols)}) "
        f"VALUES ({', '.join('?' for _ in cols)}) ON CONFLICT DO NOTHING"
    )


def dead_letter_insert_sql(schema: str, table: str = DEAD_LETTER_TABLE) -> str:
    return (
        f"INSERT INTO {_q(schema)}.{_q(table)} (target_table, id, eventhub, consumer_group, partition_id, "
        'sequence_number, "offset", enqueued_time, reason, raw_base64) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def row_params(row: Row, spec: TableSpec) -> list[Any]:
    params: list[Any] = [row.key, row.partition_context, row.event_metadata, _iso(row.ts), row.payload]
    if spec.payload_format not in GENERATED_FORMATS:
        params.extend(row.columns.get(c) for c in TYPED_COLUMNS)
    return params


def dead_letter_params(dl: DeadLetter) -> list[Any]:
    return [
        dl.table,
        dl.key,
        dl.eventhub,
        dl.consumer_group,
        dl.partition_id,
        dl.sequence_number,
        dl.offset,
        _iso(dl.enqueued_time),
        dl.reason,
        base64.b64encode(dl.raw).decode("ascii"),
    ]


def classify(result: dict[str, Any]) -> tuple[str, bool] | None:
    """One ``results[i]`` entry of a bulk response -> ``None`` if stored (rowcount >= 0), else
    ``(reason, retryable)``. CrateDB only attaches ``error`` to the first 10 failures per shard; a failure
    without detail is treated as retryable (the retry reveals the real error)."""
    rowcount = result.get("rowcount")
    if isinstance(rowcount, int) and rowcount >= 0:
        return None
    error = result.get("error") or {}
    message = str(error.get("message") or "") if isinstance(error, dict) else str(error)
    if not message:
        return (f"rowcount {rowcount} without error detail", True)
    code = error.get("code") if isinstance(error, dict) else None
    reason = f"{message} (code {code})" if code is not None else message
    return (reason, any(marker in message for marker in RETRYABLE_MARKERS))


class CrateSink:
    """See the module docstring. ``connect`` is injectable (default ``crate.client.connect``)."""

    def __init__(
        self,
        server: str = "http://localhost:4200",
        *,
        schema: str = "doc",
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 60.0,
        request_timeout: float = 30.0,
        dead_letter_table: str = DEAD_LETTER_TABLE,
        bulk_size: int | None = None,
        connect: Callable[..., Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server
        self.schema = check_identifier(schema, "schema")
        self.username = username
        self.password = password
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.dead_letter_table = check_identifier(dead_letter_table)
        if bulk_size is not None and (
            isinstance(bulk_size, bool) or not isinstance(bulk_size, int) or bulk_size < 1
        ):
            raise SinkConfigError(f"crate sink: bulk_size must be a whole number >= 1, got {bulk_size!r}")
        self.bulk_size = bulk_size
        self.description = f"crate {server} schema {schema}" + (
            f" bulk_size {bulk_size}" if bulk_size else ""
        )
        #: bulk requests sent and the rows they carried (what a bulk size really was: logged on close)
        self.bulk_requests = 0
        self.bulk_rows = 0
        self._connect_fn = connect
        self._sleep = sleep
        self._conn: Any = None
        self._specs: dict[str, TableSpec] = {}
        self._created: set[str] = set()

    # -- connection ---------------------------------------------------------------------------------------
    def _connect_once(self) -> Any:
        from crate.client import connect as crate_connect
        from crate.client.exceptions import Error as CrateError

        fn = self._connect_fn or crate_connect
        try:
            return fn(
                self.server,
                username=self.username,
                password=self.password,
                schema=self.schema,
                timeout=self.request_timeout,
            )
        except CrateError as exc:
            raise SinkUnavailableError(f"CrateDB {self.server} not reachable: {exc}") from exc

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect_once()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing to do
                LOG.debug("closing CrateDB connection failed", exc_info=True)

    def _execute(self, sql: str, params: list[Any] | None = None) -> Any:
        from crate.client.exceptions import ConnectionError as CrateConnectionError
        from crate.client.exceptions import Error as CrateError

        cursor = self._connection().cursor()
        try:
            cursor.execute(sql, params)
        except CrateConnectionError as exc:
            self._drop_connection()
            raise SinkUnavailableError(f"CrateDB {self.server}: {exc}") from exc
        except CrateError as exc:
            raise SinkUnavailableError(
                f"CrateDB {self.server} rejected {sql.split('(')[0]!r}: {exc}"
            ) from exc
        return cursor

    def _bulk(self, sql: str, params: list[list[Any]], what: str) -> list[dict[str, Any]]:
        """One request per ``bulk_size`` rows (all in one without a cap); the per-row results in order."""
        size = self.bulk_size or len(params) or 1
        results: list[dict[str, Any]] = []
        for start in range(0, len(params), size):
            results += self._bulk_request(sql, params[start : start + size], what)
        return results

    def _bulk_request(self, sql: str, params: list[list[Any]], what: str) -> list[dict[str, Any]]:
        from crate.client.exceptions import ConnectionError as CrateConnectionError
        from crate.client.exceptions import Error as CrateError

        cursor = self._connection().cursor()
        try:
            results = cursor.executemany(sql, params)
        except CrateConnectionError as exc:
            self._drop_connection()
            raise SinkUnavailableError(f"CrateDB {self.server}: {exc}") from exc
        except CrateError as exc:
            text = str(exc)
            if "RelationUnknown" in text or ("Relation '" in text and "unknown" in text):
                self._created.discard(what)  # table dropped while we run: recreate on the next attempt
            raise SinkUnavailableError(f"CrateDB bulk insert into {what} failed: {exc}") from exc
        if not isinstance(results, list) or len(results) != len(params):
            raise SinkUnavailableError(
                f"CrateDB bulk insert into {what}: expected {len(params)} results, got {results!r:.200}"
            )
        self.bulk_requests += 1
        self.bulk_rows += len(params)
        return results

    def open(self, tables: Sequence[TableSpec] = ()) -> None:
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.5
        while True:
            try:
                self._connection()
                break
            except SinkUnavailableError as exc:
                if time.monotonic() + delay > deadline:
                    raise SinkUnavailableError(
                        f"CrateDB {self.server} not reachable within {self.connect_timeout:.0f} s: {exc}"
                    ) from exc
                LOG.warning("CrateDB %s not reachable yet (%s); retrying in %.1f s", self.server, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
        for spec in tables:
            self._specs[spec.name] = spec
        self._ensure_tables(list(self._specs))
        LOG.info("crate sink %s ready (tables %s)", self.server, sorted(self._specs))

    def _ensure_tables(self, names: Sequence[str]) -> None:
        if self.dead_letter_table not in self._created:
            self._execute(dead_letter_ddl(self.schema, self.dead_letter_table))
            self._created.add(self.dead_letter_table)
        for name in names:
            if name not in self._created:
                spec = self._specs.setdefault(name, TableSpec(name, "raw"))
                self._execute(table_ddl(self.schema, spec))
                self._created.add(name)

    def write(self, rows: Sequence[Row], dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        result = WriteResult()
        if not rows and not dead_letters:
            return result
        by_table: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_table.setdefault(row.table, []).append(i)
        self._ensure_tables(list(by_table))
        for table, indexes in by_table.items():
            spec = self._specs.get(table) or TableSpec(table, "raw")
            params = [row_params(rows[i], spec) for i in indexes]
            outcomes = self._bulk(insert_sql(self.schema, spec), params, table)
            for i, outcome in zip(indexes, outcomes, strict=True):
                failure = classify(outcome)
                if failure is None:
                    if outcome.get("rowcount") == 0:
                        result.duplicates += 1
                    else:
                        result.inserted += 1
                else:
                    result.failures.append(RowFailure(i, failure[0], failure[1]))
        if dead_letters:
            outcomes = self._bulk(
                dead_letter_insert_sql(self.schema, self.dead_letter_table),
                [dead_letter_params(dl) for dl in dead_letters],
                self.dead_letter_table,
            )
            failed = [(dl, classify(o)) for dl, o in zip(dead_letters, outcomes, strict=True) if classify(o)]
            if failed:
                raise SinkUnavailableError(
                    f"{len(failed)} of {len(dead_letters)} dead letters not stored, first: {failed[0][1]}"
                )
            result.dead_letters = len(dead_letters)
        if result.failures:
            LOG.warning(
                "crate sink: %d of %d rows failed (first: %s)",
                len(result.failures),
                len(rows),
                result.failures[0].reason,
            )
        return result

    def close(self) -> None:
        if self.bulk_requests:
            LOG.info(
                "crate sink: %d bulk requests, %d rows, %.1f rows per request (bulk_size %s)",
                self.bulk_requests,
                self.bulk_rows,
                self.bulk_rows / self.bulk_requests,
                self.bulk_size or "unlimited",
            )
            self.bulk_requests = self.bulk_rows = 0
        self._drop_connection()


DEFAULT_SPEC = TableSpec(DEFAULT_TABLE, "seed")
