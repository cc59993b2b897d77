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
- :class:`CrateRows` (a CrateDB sink, ``--sink-url crate://...``): CrateDB has no rowid, and a row is
  visible to SELECT only after a refresh (every 1 s by default), so each row's own ``ingested_at``
  (``DEFAULT CURRENT_TIMESTAMP``, set by the server when the bulk insert runs; the row is durable and
  readable by primary key from then on) is its visible time: no probe. Counting and reading issue
  ``REFRESH TABLE`` first; the rows are read in pages of ``page`` ids (keyset on the primary key).
- :func:`summarize`: the same analysis on rows from either sink (pure).
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


@dataclass(frozen=True)
class SeenRow:
    """One stored row of a run: its message id, enqueued time and when it became visible (epoch s; None
    when unknown: an SQLite row after the probe's last sample)."""

    message_id: str | None
    enqueued: float | None
    visible: float | None


def _epoch(value: Any) -> float | None:
    """An enqueued/ingested time as stored: ISO text (SQLite JSON) or epoch ms (CrateDB timestamps)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    return dt.datetime.fromisoformat(str(value)).timestamp()


class CrateRows:
    """The rows of a run in a CrateDB sink table (see the module docstring). ``sink_url``: the ingest
    nodes' ``--sink`` (``crate://host:4200?schema=s``; credentials in the URL are used)."""

    #: seconds between two counts while waiting for the rows (each count refreshes the table)
    poll_interval = 0.5

    def __init__(self, sink_url: str, table: str = "enginehub_events", page: int = 50_000) -> None:
        from urllib.parse import parse_qs, urlsplit

        from enginehub.harness.providers.cratedb import CrateDBServer

        self.server = CrateDBServer.from_url(sink_url)
        query = {k: v[-1] for k, v in parse_qs(urlsplit(sink_url).query).items()}
        self.schema = query.get("schema", "doc")
        self.table = table
        self.page = page
        self.relation = f"{_quote(self.schema)}.{_quote(table)}"

    def _query(self, sql: str, args: list[Any] | None = None) -> list[list[Any]] | None:
        """Rows of ``sql``; None when the table does not exist (yet)."""
        from crate.client.exceptions import ProgrammingError

        try:
            return self.server.query(sql, args)
        except ProgrammingError as exc:
            text = str(exc)
            if (
                "RelationUnknown" in text
                or "SchemaUnknown" in text
                or ("Relation '" in text and "unknown" in text)
            ):
                return None
            raise

    def refresh(self) -> bool:
        return self._query(f"REFRESH TABLE {self.relation}") is not None

    def count(self, prefix: str) -> int:
        if not self.refresh():
            return 0
        lo, hi = _bounds(prefix)
        got = self._query(f"SELECT count(*) FROM {self.relation} WHERE id >= ? AND id < ?", [lo, hi])
        return int(got[0][0]) if got else 0

    def rows(self, prefix: str) -> list[SeenRow]:
        if not self.refresh():
            return []
        lo, hi = _bounds(prefix)
        out: list[SeenRow] = []
        after = None
        sql = (
            f"SELECT id, event_metadata['message_id'], event_metadata['enqueued_time'], ingested_at "
            f"FROM {self.relation} WHERE id >= ? AND id < ? AND id > ? ORDER BY id LIMIT {int(self.page)}"
        )
        while True:
            got = self._query(sql, [lo, hi, after if after is not None else ""]) or []
            for _key, mid, enqueued, ingested in got:
                out.append(SeenRow(mid, _epoch(enqueued), _epoch(ingested)))
            if len(got) < self.page:
                return out
            after = got[-1][0]


def is_crate_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("crate", "crate+http", "crate+https")


def crate_sink_url(url: str, fresh_schema: str) -> tuple[str, str, bool]:
    """The runner's ``--sink-url`` as an ``ingest --sink`` URL: ``crate://``/``crate+https://`` as given,
    ``http(s)://host:4200`` turned into ``crate(+https)://``; without ``schema=`` it gets ``fresh_schema``.
    Returns (url, schema, whether the schema is the fresh one). Other query keys (``bulk_size``) stay."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    mapped = {
        "http": "crate",
        "https": "crate+https",
        "crate": "crate",
        "crate+http": "crate",
        "crate+https": "crate+https",
    }
    if scheme not in mapped:
        raise ValueError(f"--sink-url {url!r}: expected crate://host:4200[?schema=s] or http://host:4200")
    if not parts.hostname:
        raise ValueError(f"--sink-url {url!r} has no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "schema" and v]
    schema = given[-1] if given else fresh_schema
    if not given:
        query = [(k, v) for k, v in query if k != "schema"] + [("schema", schema)]
    netloc = parts.netloc if parts.port else f"{parts.netloc}:4200"
    rebuilt = urlunsplit((mapped[scheme], netloc, "", urlencode(query), ""))
    return rebuilt, schema, not given


def redact(url: str) -> str:
    """``url`` without its password (for logs and the JSON result)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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
    """Compare produced ids with the rows of this run in an SQLite sink (see the module docstring)."""
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
    seen_rows = []
    for rowid, mid, enqueued in rows:
        i = bisect.bisect_left(sample_ids, rowid)
        seen_rows.append(SeenRow(mid, _epoch(enqueued), sample_times[i] if i < len(sample_times) else None))
    return summarize(seen_rows, produced, steady_window)


def summarize(
    rows: list[SeenRow], produced: ProducedLog, steady_window: tuple[float, float] | None
) -> Report:
    """The report for the stored rows of a run (pure): see the module docstring."""
    acked = set(produced.ids("acked"))
    unconfirmed = set(produced.ids("unconfirmed"))
    seen: set[str | None] = set()
    duplicates = unexpected = 0
    latencies: list[float] = []
    visible_in_window = 0
    t0, t1 = steady_window if steady_window else (float("-inf"), float("inf"))
    for row in rows:
        mid = row.message_id
        if mid in seen:
            duplicates += 1
            continue
        seen.add(mid)
        if mid not in acked and mid not in unconfirmed:
            unexpected += 1
        if row.visible is not None:
            if t0 <= row.visible <= t1:
                visible_in_window += 1
            if row.enqueued is not None:
                latencies.append((row.visible - row.enqueued) * 1000.0)
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
