"""Sink access, lag queries and windows against a real SQLite file (the embedded default)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
pytest.importorskip("sqlalchemy")

from enginehub.datasets import analysis, cmapss, labels  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fd001(cmapss_dir: Path) -> cmapss.Subset:
    return cmapss.load_subset("FD001", cmapss_dir)


@pytest.fixture
def small_db(tmp_path: Path, fd001: cmapss.Subset) -> tuple[str, list]:
    rows = [r for r in fd001.train if r.unit <= 3]
    db = tmp_path / "events.db"
    assert analysis.load_rows_sqlite(db, rows) == len(rows)
    return analysis.sqlite_url(db), rows


def test_rows_read_back_with_the_original_column_names(small_db: tuple[str, list]) -> None:
    url, rows = small_db
    frame = analysis.read_events(url)
    assert list(frame.columns) == list(analysis.COLUMN_NAMES)
    assert frame["unit #"].dtype == "int64" and frame["sensor 4"].dtype == "float64"
    pd.testing.assert_frame_equal(frame, analysis.rows_to_frame(rows))
    only = analysis.read_events(url, units=[2], columns=["sensor 4"])
    assert list(only.columns) == ["unit #", "cycle #", "sensor 4"]
    assert set(only["unit #"]) == {2}
    assert len(only) == sum(1 for r in rows if r.unit == 2)
    with pytest.raises(analysis.AnalysisError, match="unknown column"):
        analysis.read_events(url, columns=["sensor4"])


def test_table_has_the_event_envelope_and_payload_is_the_seed_line(small_db: tuple[str, list]) -> None:
    url, rows = small_db
    env = analysis.query_frame(
        url, 'SELECT id, partition_context, event_metadata, ts, payload FROM "enginehub_events"'
    )
    assert env["id"].is_unique
    first = env.iloc[0]
    assert first["payload"] == analysis.seed_line(rows[0])
    assert first["payload"].startswith("1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60")
    assert '"partition_id"' in first["partition_context"] and '"message_id"' in first["event_metadata"]


def test_loading_twice_adds_nothing(tmp_path: Path, small_db: tuple[str, list]) -> None:
    url, rows = small_db
    path = url.split("///", 1)[1]
    assert analysis.load_rows_sqlite(path, rows) == 0
    assert len(analysis.read_events(url)) == len(rows)


def test_missing_database_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(analysis.AnalysisError, match="no such SQLite database"):
        analysis.read_events(analysis.sqlite_url(tmp_path / "absent.db"))


# -- lag: self-join vs LAG() ----------------------------------------------------------------------------


def test_selfjoin_and_lag_agree_without_duplicates(small_db: tuple[str, list]) -> None:
    url, rows = small_db
    n = sum(1 for r in rows if r.unit == 1)
    join = analysis.sensor_lag(url, 1, method="selfjoin")
    lag = analysis.sensor_lag(url, 1, method="window")
    assert len(join) == n - 1  # the first cycle has no partner
    assert len(lag) == n and pd.isna(lag["sensor 4 (t - 1)"].iloc[0])
    pd.testing.assert_frame_equal(join, lag.iloc[1:].reset_index(drop=True), check_dtype=False)
    expected = [r.sensor(4) for r in rows if r.unit == 1]
    assert list(lag["sensor 4"]) == expected
    assert list(lag["sensor 4 (t - 1)"].iloc[1:]) == expected[:-1]


def test_selfjoin_multiplies_rows_under_duplicates_and_lag_does_not(small_db: tuple[str, list]) -> None:
    url, rows = small_db
    path = url.split("///", 1)[1]
    unit1 = [r for r in rows if r.unit == 1]
    n = len(unit1)
    # the same rows delivered again under another identity (a re-send without a message id)
    assert analysis.load_rows_sqlite(path, unit1, source="redelivery") == n
    join = analysis.sensor_lag(url, 1, method="selfjoin")
    lag = analysis.sensor_lag(url, 1, method="window")
    exact = analysis.sensor_lag(url, 1, method="window", dedup=True)
    assert len(join) == 4 * (n - 1)  # 2 copies x 2 copies per cycle pair
    assert len(lag) == 2 * n  # one output row per stored row, no multiplication
    assert len(exact) == n
    expected = [r.sensor(4) for r in unit1]
    assert list(exact["sensor 4"]) == expected
    assert list(exact["sensor 4 (t - 1)"].iloc[1:]) == expected[:-1]
    assert list(exact["cycle #"]) == list(range(1, n + 1))


def test_gap_drops_a_selfjoin_row_but_lag_takes_the_previous_row(small_db: tuple[str, list]) -> None:
    url, _ = small_db
    path = url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.execute('DELETE FROM "enginehub_events" WHERE "unit #" = 1 AND "cycle #" = 10')
    join = analysis.sensor_lag(url, 1, method="selfjoin")
    lag = analysis.sensor_lag(url, 1, method="window")
    assert 11 not in set(join["cycle #"])  # cycle 11 lost its partner
    row11 = lag[lag["cycle #"] == 11].iloc[0]
    row9 = lag[lag["cycle #"] == 9].iloc[0]
    assert row11["sensor 4 (t - 1)"] == row9["sensor 4"]


# -- windows from the database == windows from the files ------------------------------------------------


@pytest.mark.parametrize("subset", ["FD001", "FD004"])
def test_windows_from_db_rows_equal_windows_from_files(tmp_path: Path, cmapss_dir: Path, subset: str) -> None:
    data = cmapss.load_subset(subset, cmapss_dir)
    rows = data.train if subset == "FD001" else data.test  # FD004 test has units shorter than 30 (padding)
    db = tmp_path / "w.db"
    assert analysis.load_rows_sqlite(db, rows, "t") == len(rows)
    from_db = analysis.read_events(analysis.sqlite_url(db), "t")
    features = [analysis.sensor_column(s) for s in labels.DEFAULT_SENSORS]
    # the file path: Row lists straight from the reader, through the labels module alone
    x_file = labels.sensor_matrix(rows, labels.DEFAULT_SENSORS)
    units, cycles = labels.rows_arrays(rows)
    y_file = labels.rul_train(rows)
    for last_only in (False, True):
        a = analysis.make_windows(
            from_db, features, 30, labels=analysis.rul_labels(from_db), last_only=last_only
        )
        make = labels.last_windows if last_only else labels.sliding_windows
        b = make(x_file, units, y_file, cycles, length=30)
        assert a.x.shape == b.x.shape and a.x.shape[1:] == (30, 14)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.units, b.units)
        np.testing.assert_array_equal(a.cycles, b.cycles)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert len(a) == rows[-1].unit  # one last window per unit
    assert a.padded_units == (11 if subset == "FD004" else 0)  # docs/cmapss.md: 11 FD004 test units < 30
    last_of_unit1 = [r for r in rows if r.unit == 1][-1]
    assert a.x[0, -1, 2] == last_of_unit1.sensor(4)  # feature 2 is sensor 4
