"""The same reads and lag queries against a REAL CrateDB (``CRATEDB_URL``), through sqlalchemy-cratedb.

No CrateDB server can be started on this project's machines (docs/cratedb.md section 3.4): without
``CRATEDB_URL`` these tests skip and say so. ``CRATEDB_URL`` may be ``crate://[user:pw@]host:4200`` or
``http(s)://[user:pw@]host:4200``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("sqlalchemy_cratedb")

from enginehub.datasets import analysis, cmapss  # noqa: E402
from enginehub.datasets.schema import COLUMN_NAMES  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.cratedb]


def crate_url() -> str:
    url = os.environ.get("CRATEDB_URL", "").strip()
    if not url:
        pytest.skip(
            "CRATEDB_URL is not set: no CrateDB server to run the lag queries against "
            "(set CRATEDB_URL=crate://host:4200 to run them)"
        )
    for prefix in ("https://", "http://"):
        if url.startswith(prefix):
            url = "crate://" + url[len(prefix) :] + ("?ssl=true" if prefix == "https://" else "")
    return url


@pytest.fixture
def crate_table(cmapss_dir: Path) -> Iterator[tuple[sa.Engine, str, list]]:
    """A fresh table with the typed columns of enginehub_events holding units 1-2 of train_FD001, with
    every cycle of unit 1 stored twice (an at-least-once redelivery without an identity key)."""
    url = crate_url()
    engine = analysis.make_engine(url)
    table = f"enginehub_analysis_{uuid.uuid4().hex[:12]}"
    rows = [r for r in cmapss.read_rows(cmapss_dir / "train_FD001.txt") if r.unit <= 2]
    cols = ", ".join(
        f"{analysis.quote_ident(c)} {'INTEGER' if c in ('unit #', 'cycle #') else 'DOUBLE PRECISION'}"
        for c in COLUMN_NAMES
    )
    names = [f"p{i}" for i in range(len(COLUMN_NAMES))]
    quoted = ", ".join(analysis.quote_ident(c) for c in COLUMN_NAMES)
    insert = (
        f"INSERT INTO {analysis.quote_ident(table)} ({quoted}) VALUES ({', '.join(':' + n for n in names)})"
    )
    stored = rows + [r for r in rows if r.unit == 1]
    params = [dict(zip(names, (r.unit, r.cycle, *r.settings, *r.sensors), strict=True)) for r in stored]
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {analysis.quote_ident(table)} ({cols}) WITH (number_of_replicas = 0)")
        )
        conn.execute(sa.text(insert), params)
        conn.execute(sa.text(f"REFRESH TABLE {analysis.quote_ident(table)}"))
    try:
        yield engine, table, rows
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {analysis.quote_ident(table)}"))
        engine.dispose()


def test_read_events_from_cratedb(crate_table: tuple[sa.Engine, str, list]) -> None:
    engine, table, rows = crate_table
    unit2 = [r for r in rows if r.unit == 2]
    frame = analysis.read_events(engine, table, units=[2])
    pd.testing.assert_frame_equal(frame, analysis.rows_to_frame(unit2))


def test_cratedb_selfjoin_multiplies_rows_and_lag_does_not(crate_table: tuple[sa.Engine, str, list]) -> None:
    engine, table, rows = crate_table
    n = sum(1 for r in rows if r.unit == 1)
    join = analysis.sensor_lag(engine, 1, table=table, method="selfjoin")
    lag = analysis.sensor_lag(engine, 1, table=table, method="window")
    exact = analysis.sensor_lag(engine, 1, table=table, method="window", dedup=True)
    assert len(join) == 4 * (n - 1)
    assert len(lag) == 2 * n
    assert len(exact) == n
    expected = [r.sensor(4) for r in rows if r.unit == 1]
    assert list(exact["sensor 4"]) == expected
    assert list(exact["sensor 4 (t - 1)"].iloc[1:]) == expected[:-1]
    # unit 2 has no duplicates: both forms agree
    join2 = analysis.sensor_lag(engine, 2, table=table, method="selfjoin")
    lag2 = analysis.sensor_lag(engine, 2, table=table, method="window")
    pd.testing.assert_frame_equal(join2, lag2.iloc[1:].reset_index(drop=True), check_dtype=False)


def test_load_rows_through_the_ingest_crate_sink_and_read_back(cmapss_dir: Path) -> None:
    url = crate_url()
    table = f"enginehub_analysis_{uuid.uuid4().hex[:12]}"
    rows = [r for r in cmapss.read_rows(cmapss_dir / "test_FD001.txt") if r.unit <= 2]
    engine = analysis.make_engine(url)
    try:
        assert analysis.load_rows(url, rows, table) == len(rows)
        assert analysis.load_rows(url, rows, table) == 0  # same message ids: redelivery adds nothing
        pd.testing.assert_frame_equal(analysis.read_events(engine, table), analysis.rows_to_frame(rows))
        lag = analysis.sensor_lag(engine, 1, table=table)
        assert len(lag) == sum(1 for r in rows if r.unit == 1)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {analysis.qualified_table(table, url)}"))
        engine.dispose()
