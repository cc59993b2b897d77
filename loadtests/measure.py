"""Measurement: which ids were produced, when rows became visible, and what that adds up to (no Locust).

- :class:`ProducedLog`: every producer logs the id range of each batch it sent: ``acked`` (the hub
  accepted it) or ``unconfirmed`` (error/timeout: the batch may or may not be stored). Ids are
  ``<prefix>-<n>``, carried as the AMQP message id, which the ingest rules turn into the row key
  ``mid:<id>``.
- :class:`VisibilityProbe`: samples ``(wall time, max(rowid))`` of the sink table every ``interval`` s. SQLite
  assigns increasing rowids to new rows, so a row with rowid ``r`` became visible (committed) at the first
  sample whose max rowid is ``>= r``: end-to-end latency = that time - the event's enqueued time, with
  ``interval`` resolution and no per-row cost in the pipeline.
- :func:`analyze`: lost = acked ids with no row; duplicates = rows beyond the first for one message id;
  sustained rate = rows that became visible inside the steady window / its length (not the peak).
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


@dataclass
class ProducedLog:
    """Id ranges ``(prefix, first, last)`` inclusive, per outcome."""

    acked: list[tuple[str, int, int]] = field(default_factory=list)
    unconfirmed: list[tuple[str, int, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, prefix: str, first: int, count: int, ok: bool) -> None:
        with self._lock:
            (self.acked if ok else self.unconfirmed).append((prefix, first, first + count - 1))

    @property
    def produced(self) -> int:
        return sum(last - first + 1 for _, first, last in self.acked)

    def ids(self, which: str = "acked") -> Iterator[str]:
        for prefix, first, last in getattr(self, which):
            for n in range(first, last + 1):
                yield f"{prefix}-{n}"

    def to_json(self) -> dict[str, Any]:
        return {"acked": self.acked, "unconfirmed": self.unconfirmed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProducedLog:
        return cls(
            acked=[tuple(x) for x in data.get("acked", [])],  # type: ignore[misc]
            unconfirmed=[tuple(x) for x in data.get("unconfirmed", [])],  # type: ignore[misc]
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(db: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    return conn


class VisibilityProbe:
    """``start()`` a background sampler of ``max(rowid)``; ``stop()``; ``samples`` [(time, max rowid)]."""

    def __init__(self, db: str | Path, table: str = "enginehub_events", interval: float = 0.05) -> None:
        self.db = Path(db)
        self.table = table
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def sample(self) -> int:
        if self._conn is None:
            if not self.db.exists():
                return 0
            self._conn = _connect(self.db)
        try:
            row = self._conn.execute(f"SELECT max(rowid) FROM {_quote(self.table)}").fetchone()
        except sqlite3.OperationalError:  # table not created yet
            return 0
        value = int(row[0] or 0)
        now = time.time()
        if not self.samples or value > self.samples[-1][1]:
            self.samples.append((now, value))
        return value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except sqlite3.Error as exc:
                LOG.debug("visibility probe: %s", exc)

    def start(self) -> VisibilityProbe:
        self._thread = threading.Thread(target=self._run, name="visibility-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.sample()
        except sqlite3.Error:
            pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def count_rows(db: str | Path, table: str, prefix: str) -> int:
    """Rows of this run (ids ``mid:<prefix>...``); 0 when the table does not exist yet."""
    if not Path(db).exists():
        return 0
    conn = _connect(db)
    try:
        lo, hi = _bounds(prefix)
        return int(
            conn.execute(
                f"SELECT count(*) FROM {_quote(table)} WHERE id >= ? AND id < ?", (lo, hi)
            ).fetchone()[0]
        )
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _bounds(prefix: str) -> tuple[str, str]:
    lo = f"mid:{prefix}"
    return lo, lo[:-1] + chr(ord(lo[-1]) + 1)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


@dataclass
class Report:
    produced: int
    unconfirmed: int
    rows: int
    lost: int
    duplicates: int
    unexpected_rows: int
    events_per_s_sustained: float
    steady_window_s: float
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    max_latency_ms: float | None
    lost_examples: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def analyze(
    db: str | Path,
    table: str,
    run_prefix: str,
    produced: ProducedLog,
    samples: list[tuple[float, int]],
    steady_window: tuple[float, float] | None,
) -> Report:
    """Compare produced ids with the rows of this run (see the module docstring)."""
    acked = set(produced.ids("acked"))
    unconfirmed = set(produced.ids("unconfirmed"))
    lo, hi = _bounds(run_prefix)
    conn = _connect(db)
    try:
        cur = conn.execute(
            f"SELECT rowid, json_extract(event_metadata, '$.message_id'), "
            f"json_extract(event_metadata, '$.enqueued_time') FROM {_quote(table)} WHERE id >= ? AND id < ?",
            (lo, hi),
        )
        rows = cur.fetchall()
    finally:
        conn.close()
    sample_ids = [s[1] for s in samples]
    sample_times = [s[0] for s in samples]
    seen: set[str] = set()
    duplicates = unexpected = 0
    latencies: list[float] = []
    visible_in_window = 0
    t0, t1 = steady_window if steady_window else (float("-inf"), float("inf"))
    for rowid, mid, enqueued in rows:
        if mid in seen:
            duplicates += 1
            continue
        seen.add(mid)
        if mid not in acked and mid not in unconfirmed:
            unexpected += 1
        i = bisect.bisect_left(sample_ids, rowid)
        if i < len(sample_times):
            visible = sample_times[i]
            if t0 <= visible <= t1:
                visible_in_window += 1
            if enqueued:
                latencies.append((visible - dt.datetime.fromisoformat(enqueued).timestamp()) * 1000.0)
    missing = acked - seen
    latencies.sort()
    window = (t1 - t0) if steady_window else 0.0
    return Report(
        produced=len(acked),
        unconfirmed=len(unconfirmed),
        rows=len(rows),
        lost=len(missing),
        duplicates=duplicates,
        unexpected_rows=unexpected,
        events_per_s_sustained=round(visible_in_window / window, 1) if window > 0 else 0.0,
        steady_window_s=round(window, 2),
        p50_latency_ms=_round(percentile(latencies, 50)),
        p99_latency_ms=_round(percentile(latencies, 99)),
        max_latency_ms=_round(latencies[-1] if latencies else None),
        lost_examples=sorted(missing)[:5],
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits; ``None`` = not checked."""

    min_rate: float | None = None
    max_lost: int | None = 0
    max_duplicates: int | None = 0
    max_p99_ms: float | None = None

    def failures(self, report: Report) -> list[str]:
        out = []
        if self.min_rate is not None and report.events_per_s_sustained < self.min_rate:
            out.append(f"sustained {report.events_per_s_sustained:.0f} events/s < {self.min_rate:.0f}")
        if self.max_lost is not None and report.lost > self.max_lost:
            out.append(f"lost {report.lost} > {self.max_lost} (e.g. {report.lost_examples})")
        if self.max_duplicates is not None and report.duplicates > self.max_duplicates:
            out.append(f"duplicates {report.duplicates} > {self.max_duplicates}")
        if self.max_p99_ms is not None and (
            report.p99_latency_ms is None or report.p99_latency_ms > self.max_p99_ms
        ):
            out.append(f"p99 latency {report.p99_latency_ms} ms > {self.max_p99_ms} ms")
        if report.produced == 0:
            out.append("nothing was produced")
        return out
