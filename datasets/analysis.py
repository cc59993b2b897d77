"""Data science on the ingested data: read sink rows into pandas, the lag feature, LSTM-ready windows.

Sinks are addressed by the same URLs as the ``ingest`` CLI:

- ``sqlite:///path/to.db`` — the embedded default (SQLAlchemy's pysqlite dialect, standard library)
- ``crate://host:4200`` — CrateDB over HTTP through SQLAlchemy (``sqlalchemy-cratedb``); add
  ``?schema=NAME`` to read tables of another schema.

Rows come back with the column names of the original table (``"unit #"``, ``"cycle #"``, ``"setting 1"``
.. ``"setting 3"``, ``"sensor 1"`` .. ``"sensor 21"``), ordered by unit and cycle.

The lag feature ("sensor 4 (t - 1)") exists in two forms (docs/cratedb.md section 4):

- :func:`lag_selfjoin_query` — the original 2018 self-join (``b."cycle #" = a."cycle #" - 1``). Under
  at-least-once duplicates it MULTIPLIES rows: k copies of each cycle give k*k joined rows.
- :func:`lag_window_query` — ``LAG() OVER (PARTITION BY "unit #" ORDER BY "cycle #")``: one scan, one
  output row per stored row, whatever the duplicates; with ``dedup=True`` it first collapses identical
  (unit, cycle, sensor) rows, which gives the exact lag even on a table without an identity key.

This module also writes C-MAPSS rows into a table of the ``enginehub_events`` shape on SQLite
(:func:`load_rows_sqlite`), which the RUL CLI uses to "load the files into an embedded SQLite first".

Needs the ``analysis`` extra (pandas, numpy, sqlalchemy, sqlalchemy-cratedb).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import sqlalchemy as sa

from enginehub.datasets import codecs
from enginehub.datasets.schema import COLUMN_NAMES, N_SENSORS, Row

LOG = logging.getLogger(__name__)

DEFAULT_TABLE = "enginehub_events"
UNIT = "unit #"
CYCLE = "cycle #"
SETTING_COLUMNS: tuple[str, ...] = COLUMN_NAMES[2:5]
SENSOR_COLUMNS: tuple[str, ...] = COLUMN_NAMES[5:]
#: Columns of the raw event envelope that precede the typed columns (same as the ingest SQLite sink).
ENVELOPE_COLUMNS: tuple[str, ...] = (
    "id",
    "partition_context",
    "event_metadata",
    "ts",
    "ingested_at",
    "payload",
)


class AnalysisError(Exception):
    """A sink URL, table or column that cannot be used."""


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (works on SQLite and CrateDB): ``unit #`` -> ``"unit #"``."""
    if not name or "\x00" in name:
        raise AnalysisError(f"bad SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def sensor_column(number: int) -> str:
    """``"sensor 4"`` for 4 (1-based, as in the NASA readme)."""
    if not 1 <= number <= N_SENSORS:
        raise AnalysisError(f"sensor number must be 1..{N_SENSORS}, got {number}")
    return f"sensor {number}"


# -- engines ---------------------------------------------------------------------------------------------


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///`` URL of a database file."""
    return f"sqlite:///{Path(path)}"


def make_engine(url: str) -> sa.Engine:
    """An SQLAlchemy engine for a sink URL (``sqlite:///…`` or ``crate://…``)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:" and not Path(path).is_file():
            raise AnalysisError(f"{url}: no such SQLite database file")
        return sa.create_engine(url)
    if scheme.startswith("crate"):
        try:
            import sqlalchemy_cratedb  # noqa: F401 - registers the crate:// dialect
        except ImportError as exc:  # pragma: no cover - the analysis extra installs it
            raise AnalysisError(
                "crate:// URLs need sqlalchemy-cratedb (pip install 'enginehub[analysis]')"
            ) from exc
        return sa.create_engine(url)
    raise AnalysisError(f"unsupported sink URL {url!r}: expected sqlite:///PATH or crate://HOST:4200")


def _schema_of(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("schema")
    return values[0] if values else None


def qualified_table(table: str, url: str | None = None) -> str:
    """The quoted table name, qualified with ``?schema=`` of a crate:// URL when present."""
    schema = _schema_of(url) if url and url.lower().startswith("crate") else None
    return (quote_ident(schema) + "." if schema else "") + quote_ident(table)


def _engine(source: str | sa.Engine) -> tuple[sa.Engine, str | None]:
    if isinstance(source, sa.Engine):
        return source, None
    return make_engine(source), source


def table_exists(source: str | sa.Engine, table: str) -> bool:
    engine, url = _engine(source)
    schema = _schema_of(url) if url and url.lower().startswith("crate") else None
    return sa.inspect(engine).has_table(table, schema=schema)


def query_frame(source: str | sa.Engine, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Run ``sql`` (SQLAlchemy text, ``:name`` parameters) and return a DataFrame."""
    engine, _ = _engine(source)
    with engine.connect() as conn:
        return pd.read_sql_query(sa.text(sql), conn, params=params or {})


# -- reading rows ----------------------------------------------------------------------------------------


def read_events(
    source: str | sa.Engine,
    table: str = DEFAULT_TABLE,
    *,
    units: Iterable[int] | None = None,
    columns: Sequence[str] = COLUMN_NAMES,
) -> pd.DataFrame:
    """The typed columns of ``table`` as a DataFrame ordered by unit and cycle.

    ``units`` restricts to those units; ``columns`` to those typed columns (unit and cycle always come
    first). Unit and cycle are int64, the other columns float64.
    """
    cols = [UNIT, CYCLE] + [c for c in columns if c not in (UNIT, CYCLE)]
    unknown = [c for c in cols if c not in COLUMN_NAMES]
    if unknown:
        raise AnalysisError(
            f"unknown column(s) {unknown}: expected names of {DEFAULT_TABLE} ({COLUMN_NAMES[:3]}…)"
        )
    engine, url = _engine(source)
    sql = f"SELECT {', '.join(quote_ident(c) for c in cols)} FROM {qualified_table(table, url)}"
    params: dict[str, Any] = {}
    if units is not None:
        wanted = sorted({int(u) for u in units})
        if not wanted:
            return _typed(pd.DataFrame({c: [] for c in cols}))
        names = [f"u{i}" for i in range(len(wanted))]
        sql += f" WHERE {quote_ident(UNIT)} IN ({', '.join(':' + n for n in names)})"
        params = dict(zip(names, wanted, strict=True))
    sql += f" ORDER BY {quote_ident(UNIT)}, {quote_ident(CYCLE)}"
    frame = query_frame(engine, sql, params)
    return _typed(frame[cols])


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c in out.columns:
        out[c] = out[c].astype("int64") if c in (UNIT, CYCLE) else out[c].astype("float64")
    return out.reset_index(drop=True)


def rows_to_frame(rows: Iterable[Row]) -> pd.DataFrame:
    """C-MAPSS rows (from the files) as a DataFrame with the table's typed column names and dtypes."""
    data = [(r.unit, r.cycle, *r.settings, *r.sensors) for r in rows]
    return _typed(pd.DataFrame(data, columns=list(COLUMN_NAMES)))


# -- the lag feature -------------------------------------------------------------------------------------


def lag_column(sensor: int) -> str:
    """The original feature name: ``"sensor 4 (t - 1)"``."""
    return f"{sensor_column(sensor)} (t - 1)"


def lag_selfjoin_query(table: str = DEFAULT_TABLE, sensor: int = 4, *, url: str | None = None) -> str:
    """The original self-join lag query for one unit (bind ``:unit``), ordered by cycle.

    Same join as the 2018 notebook (``b."cycle #" = a."cycle #" - 1``); the cycle column and an ORDER BY
    were added (the original relied on the storage order). The first cycle has no partner and is dropped.
    """
    t = qualified_table(table, url)
    s, lag = quote_ident(sensor_column(sensor)), quote_ident(lag_column(sensor))
    u, c = quote_ident(UNIT), quote_ident(CYCLE)
    return (
        f"SELECT a.{u}, a.{c}, a.{s}, b.{s} AS {lag} "
        f"FROM {t} a INNER JOIN {t} b ON a.{u} = b.{u} AND b.{c} = (a.{c} - 1) "
        f"WHERE a.{u} = :unit ORDER BY a.{c}"
    )


def lag_window_query(
    table: str = DEFAULT_TABLE, sensor: int = 4, *, url: str | None = None, dedup: bool = False
) -> str:
    """The lag with ``LAG() OVER (PARTITION BY "unit #" ORDER BY "cycle #")`` for one unit (bind ``:unit``).

    One output row per stored row (the first cycle gets NULL). ``dedup=True`` reads
    ``SELECT DISTINCT unit, cycle, sensor`` first, so redelivered copies count once and every lag is the
    previous cycle's value.
    """
    t = qualified_table(table, url)
    s, lag = quote_ident(sensor_column(sensor)), quote_ident(lag_column(sensor))
    u, c = quote_ident(UNIT), quote_ident(CYCLE)
    source = f"(SELECT DISTINCT {u}, {c}, {s} FROM {t} WHERE {u} = :unit) d" if dedup else t
    where = "" if dedup else f" WHERE {u} = :unit"
    return (
        f"SELECT {u}, {c}, {s}, LAG({s}) OVER (PARTITION BY {u} ORDER BY {c}) AS {lag} "
        f"FROM {source}{where} ORDER BY {c}"
    )


def sensor_lag(
    source: str | sa.Engine,
    unit: int,
    *,
    sensor: int = 4,
    table: str = DEFAULT_TABLE,
    method: str = "window",
    dedup: bool = False,
) -> pd.DataFrame:
    """``unit #``, ``cycle #``, ``sensor N`` and ``sensor N (t - 1)`` of one unit, ordered by cycle.

    ``method`` is ``"window"`` (LAG() OVER, the default) or ``"selfjoin"`` (the original query).
    """
    engine, url = _engine(source)
    if method == "window":
        sql = lag_window_query(table, sensor, url=url, dedup=dedup)
    elif method == "selfjoin":
        if dedup:
            raise AnalysisError("dedup is only available with method='window'")
        sql = lag_selfjoin_query(table, sensor, url=url)
    else:
        raise AnalysisError(f"method must be 'window' or 'selfjoin', got {method!r}")
    frame = query_frame(engine, sql, {"unit": int(unit)})
    frame.columns = [UNIT, CYCLE, sensor_column(sensor), lag_column(sensor)]
    return frame


# -- loading C-MAPSS rows into an enginehub_events-shaped SQLite table -----------------------------------


def sqlite_table_ddl(table: str = DEFAULT_TABLE) -> str:
    """DDL of an ``enginehub_events``-shaped table on SQLite (the ingest SQLite sink's shape):
    ``id`` TEXT PRIMARY KEY (identity key), the envelope columns, then the typed columns."""
    typed = ",\n  ".join(
        f"{quote_ident(c)} {'INTEGER' if c in (UNIT, CYCLE) else 'REAL'}" for c in COLUMN_NAMES
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n"
        "  id TEXT PRIMARY KEY,\n"
        "  partition_context TEXT NOT NULL,\n"
        "  event_metadata TEXT NOT NULL,\n"
        "  ts TEXT,\n"
        "  ingested_at TEXT NOT NULL,\n"
        "  payload TEXT NOT NULL,\n"
        f"  {typed}\n)"
    )


def seed_line(row: Row) -> str:
    """The seed pipeline's payload: the 26 fields of the C-MAPSS line, space-separated."""
    return codecs.encode_line(row)


def _payload_columns(payload: str) -> list[int | float]:
    """Typed column values computed from the payload (as the sinks do on insert)."""
    columns = codecs.row_to_columns(codecs.decode_line(payload))
    return [columns[c] for c in COLUMN_NAMES]


def load_rows_sqlite(
    path: str | Path,
    rows: Iterable[Row],
    table: str = DEFAULT_TABLE,
    *,
    source: str = "cmapss",
    device_prefix: str = "engine",
) -> int:
    """Write C-MAPSS rows into an ``enginehub_events``-shaped table of the SQLite file ``path``.

    Each row becomes one event: ``payload`` is the seed line, the typed columns are parsed from it, the
    identity key is the deterministic message id ``{source}-{unit}-{cycle}`` (so loading twice adds
    nothing). Returns the number of new rows.
    """
    now = dt.datetime.now(dt.UTC).isoformat()
    context = json.dumps({"eventhub": source, "consumer_group": "$Default", "partition_id": "0"})
    cols = ENVELOPE_COLUMNS + COLUMN_NAMES
    sql = (
        f"INSERT OR IGNORE INTO {quote_ident(table)} ({', '.join(quote_ident(c) for c in cols)}) "
        f"VALUES ({', '.join('?' for _ in cols)})"
    )

    def params() -> Iterable[tuple[object, ...]]:
        for seq, row in enumerate(rows):
            payload = seed_line(row)
            message_id = f"{source}-{row.unit}-{row.cycle}"
            meta = {
                "sequence_number": seq,
                "offset": str(seq),
                "enqueued_time": now,
                "device_id": f"{device_prefix}-{row.unit}",
                "message_id": message_id,
            }
            yield (
                f"mid:{message_id}",
                context,
                json.dumps(meta),
                now,
                now,
                payload,
                *_payload_columns(payload),
            )

    conn = sqlite3.connect(Path(path))
    try:
        with conn:
            conn.execute(sqlite_table_ddl(table))
            before = conn.total_changes
            conn.executemany(sql, params())
            return conn.total_changes - before
    finally:
        conn.close()


# -- LSTM-ready windows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """LSTM-ready samples: ``x[i]`` is a (window, n_features) array ending at cycle ``cycles[i]`` of unit
    ``units[i]``; ``y[i]`` its RUL label (NaN when unknown)."""

    units: np.ndarray  # (n,) int64
    cycles: np.ndarray  # (n,) int64, the last cycle of each window
    x: np.ndarray  # (n, window, n_features) float64
    y: np.ndarray  # (n,) float64
    features: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.units)


def rul_labels(frame: pd.DataFrame, cap: float | None = 125) -> np.ndarray:
    """Piecewise-linear RUL of run-to-failure rows: ``min(last cycle of the unit - cycle, cap)``."""
    last = frame.groupby(UNIT)[CYCLE].transform("max").to_numpy()
    rul = (last - frame[CYCLE].to_numpy()).astype("float64")
    return np.minimum(rul, cap) if cap is not None else rul


def make_windows(
    frame: pd.DataFrame,
    features: Sequence[str],
    window: int = 30,
    *,
    labels: np.ndarray | None = None,
    last_only: bool = False,
    pad: bool = True,
) -> Windows:
    """Sliding windows (stride 1) of ``window`` cycles over each unit of ``frame`` (sorted by unit, cycle).

    ``labels`` (one per row, e.g. :func:`rul_labels`) gives each window the label of its last row.
    ``last_only`` keeps only the last window of each unit (the test protocol). A unit shorter than the
    window is padded by repeating its first row when ``pad`` (one window), else skipped.
    """
    if window < 1:
        raise AnalysisError(f"window must be >= 1, got {window}")
    frame = frame.reset_index(drop=True)
    values = frame[list(features)].to_numpy(dtype="float64")
    units_col = frame[UNIT].to_numpy()
    cycles_col = frame[CYCLE].to_numpy()
    lab = np.full(len(frame), np.nan) if labels is None else np.asarray(labels, dtype="float64")
    if len(lab) != len(frame):
        raise AnalysisError(f"{len(lab)} labels for {len(frame)} rows")
    bounds = np.flatnonzero(np.r_[True, units_col[1:] != units_col[:-1], True])
    xs: list[np.ndarray] = []
    idx_end: list[int] = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        block = values[start:stop]
        n = stop - start
        if n < window:
            if not pad:
                continue
            block = np.vstack([np.repeat(block[:1], window - n, axis=0), block])
            ends = [window]
        else:
            ends = [n] if last_only else list(range(window, n + 1))
        view = np.lib.stride_tricks.sliding_window_view(block, window, axis=0)  # (m, F, W)
        for e in ends:
            xs.append(view[e - window].T)
        idx_end.extend(start + min(e, n) - 1 for e in ends)
    ends_arr = np.asarray(idx_end, dtype="int64")
    x = np.stack(xs) if xs else np.empty((0, window, len(features)))
    return Windows(
        units=units_col[ends_arr].astype("int64"),
        cycles=cycles_col[ends_arr].astype("int64"),
        x=x,
        y=lab[ends_arr],
        features=tuple(features),
    )
