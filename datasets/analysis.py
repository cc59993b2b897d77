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

:func:`load_rows` writes C-MAPSS rows into a sink through the ingest rules and sinks (the seed payload,
the ``enginehub_events`` table shape), which the RUL CLI uses to "load the files into an embedded SQLite
first". Windows, labels and metrics come from :mod:`enginehub.datasets.labels`.

Needs the ``analysis`` extra (pandas, numpy, sqlalchemy, sqlalchemy-cratedb).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import sqlalchemy as sa

from enginehub.datasets import codecs
from enginehub.datasets import labels as lab
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


# -- loading C-MAPSS rows into a sink through the ingest path --------------------------------------------


def load_rows(
    url: str,
    rows: Iterable[Row],
    table: str = DEFAULT_TABLE,
    *,
    source: str = "cmapss",
    device_prefix: str = "engine",
    batch_size: int = 5000,
) -> int:
    """Write C-MAPSS rows into ``table`` of the sink ``url`` exactly as the ingest consumer would.

    Each row becomes one event whose body is the seed line; the ingest rules (format ``seed``) turn it
    into a row of the ``enginehub_events`` shape and the ingest sink (SQLite or CrateDB) stores it. The
    identity key is the deterministic message id ``{source}-{unit}-{cycle}``, so loading twice adds
    nothing, while another ``source`` stores the same readings again (a redelivery without identity).
    Returns the number of new rows. On CrateDB the table is refreshed before returning.
    """
    from enginehub.ingest.model import EventRecord
    from enginehub.ingest.rules import Rule, RuleSet, route_batch
    from enginehub.ingest.sinks import open_sink

    ruleset = RuleSet(rules=(Rule(table=table, format="seed", name="cmapss-files"),))
    now = dt.datetime.now(dt.UTC)
    sink = open_sink(url)
    sink.open(ruleset.tables())
    inserted = 0
    try:
        batch: list[EventRecord] = []
        for seq, row in enumerate(rows):
            batch.append(
                EventRecord(
                    eventhub=source,
                    consumer_group="$Default",
                    partition_id="0",
                    sequence_number=seq,
                    offset=str(seq),
                    enqueued_time=now,
                    body=codecs.encode_line(row).encode("ascii"),
                    message_id=f"{source}-{row.unit}-{row.cycle}",
                    device_id=f"{device_prefix}-{row.unit}",
                )
            )
            if len(batch) >= batch_size:
                inserted += _write(sink, route_batch(batch, ruleset))
                batch = []
        if batch:
            inserted += _write(sink, route_batch(batch, ruleset))
    finally:
        sink.close()
    if urlsplit(url).scheme.lower().startswith("crate"):
        with make_engine(url).begin() as conn:
            conn.execute(sa.text(f"REFRESH TABLE {qualified_table(table, url)}"))
    return inserted


def _write(sink: Any, routed: Any) -> int:
    if routed.dead_letters:
        raise AnalysisError(f"{len(routed.dead_letters)} rows did not parse: {routed.dead_letters[0].reason}")
    result = sink.write(routed.rows)
    if result.failures:
        raise AnalysisError(f"the sink refused {len(result.failures)} rows: {result.failures[0].reason}")
    return int(result.inserted)


def load_rows_sqlite(path: str | Path, rows: Iterable[Row], table: str = DEFAULT_TABLE, **kwargs: Any) -> int:
    """:func:`load_rows` into the SQLite file ``path`` (created when missing)."""
    return load_rows(sqlite_url(Path(path).absolute()), rows, table, **kwargs)


def seed_line(row: Row) -> str:
    """The seed pipeline's payload: the 26 fields of the C-MAPSS line, space-separated."""
    return codecs.encode_line(row)


# -- LSTM-ready windows ----------------------------------------------------------------------------------


#: LSTM-ready samples (enginehub.datasets.lab.Windows): x (n, window, features), y, units, cycles, mask.
Windows = lab.Windows


def rul_labels(frame: pd.DataFrame, cap: int | None = lab.DEFAULT_CAP) -> np.ndarray:
    """Piecewise-linear RUL of run-to-failure rows: ``min(last cycle of the unit - cycle, cap)``, as
    :func:`enginehub.datasets.labels.rul_train` computes it for file rows (float64 here)."""
    last = frame.groupby(UNIT)[CYCLE].transform("max").to_numpy()
    rul = (last - frame[CYCLE].to_numpy()).astype("float64")
    return np.minimum(rul, cap) if cap is not None else rul


def make_windows(
    frame: pd.DataFrame,
    features: Sequence[str],
    window: int = lab.DEFAULT_WINDOW,
    *,
    labels: np.ndarray | None = None,
    last_only: bool = False,
    pad: str = "repeat",
) -> lab.Windows:
    """Windows of ``window`` cycles over each unit of ``frame`` (rows sorted by unit, cycle), built by
    :mod:`enginehub.datasets.labels` from the DB columns ``features``.

    Stride 1 over every unit, or only the last window of each unit with ``last_only`` (the test
    protocol). ``labels`` (one per row, e.g. :func:`rul_labels`) labels each window with its last row.
    A unit shorter than the window gives one window padded by repeating its first row (``pad="zero"``:
    zeros; ``"skip"``: none).
    """
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise AnalysisError(f"frame lacks columns {missing}")
    x = frame[list(features)].to_numpy(dtype="float64")
    units = frame[UNIT].to_numpy(dtype="int64")
    cycles = frame[CYCLE].to_numpy(dtype="int64")
    if labels is not None and len(labels) != len(frame):
        raise AnalysisError(f"{len(labels)} labels for {len(frame)} rows")
    try:
        if last_only:
            return lab.last_windows(x, units, labels, cycles, length=window, pad=pad)  # type: ignore[arg-type]
        return lab.sliding_windows(x, units, labels, cycles, length=window, pad=pad)  # type: ignore[arg-type]
    except ValueError as exc:
        raise AnalysisError(str(exc)) from exc
