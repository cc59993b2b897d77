"""A list-backed sink for unit tests, with switches to simulate an outage or per-row failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from enginehub.ingest.model import DeadLetter, Row, RowFailure, SinkUnavailableError, WriteResult
from enginehub.ingest.sinks.base import TableSpec

LOG = logging.getLogger(__name__)


class MemorySink:
    """Rows are kept in ``rows[table]`` (insertion order), dead letters in ``dead_letters``.

    ``down = True`` makes every write raise :class:`SinkUnavailableError`; ``fail_row`` (a predicate
    returning ``None`` or ``(reason, retryable)``) fails chosen rows the way CrateDB's rowcount -2 does.
    """

    description = "memory://"

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {}
        self.keys: dict[str, set[str]] = {}
        self.dead_letters: list[DeadLetter] = []
        self._dl_keys: set[tuple[str, str]] = set()
        self.tables: dict[str, TableSpec] = {}
        self.down = False
        self.fail_row: Callable[[Row], tuple[str, bool] | None] | None = None
        self.write_calls = 0
        self.opened = False
        self._lock = threading.Lock()

    def open(self, tables: Sequence[TableSpec] = ()) -> None:
        for spec in tables:
            self.tables.setdefault(spec.name, spec)
        self.opened = True

    def write(self, rows: Sequence[Row], dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        with self._lock:
            self.write_calls += 1
            if self.down:
                raise SinkUnavailableError("memory sink is down (simulated outage)")
            result = WriteResult()
            for dl in dead_letters:
                ident = (dl.table, dl.key)
                if ident not in self._dl_keys:
                    self._dl_keys.add(ident)
                    self.dead_letters.append(dl)
                result.dead_letters += 1
            for i, row in enumerate(rows):
                failure = self.fail_row(row) if self.fail_row else None
                if failure is not None:
                    result.failures.append(RowFailure(i, failure[0], failure[1]))
                    continue
                keys = self.keys.setdefault(row.table, set())
                if row.key in keys:
                    result.duplicates += 1
                    continue
                keys.add(row.key)
                self.rows.setdefault(row.table, []).append(row)
                result.inserted += 1
            return result

    def close(self) -> None:
        self.opened = False

    def count(self, table: str) -> int:
        return len(self.rows.get(table, []))
