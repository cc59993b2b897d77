"""The self-host row count reads the consumer's SQLite file (read-only), per run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from enginehub.simulator.selfhost import count_rows

pytestmark = pytest.mark.integration


def test_count_rows_per_run_and_before_the_table_exists(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    assert count_rows(db) == 0  # no file yet
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE other (x)")
    con.commit()
    assert count_rows(db) == 0  # no table yet
    con.execute('CREATE TABLE enginehub_events (id TEXT PRIMARY KEY, "unit #" INTEGER)')
    ids = [
        "mid:abc-1-1",
        "mid:abc-1-2",
        "mid:abc-12-7",
        "mid:abcd-1-1",
        "mid:ab-1-1",
        "mid:xyz-1-1",
        "p:0:17",
    ]
    con.executemany("INSERT INTO enginehub_events (id) VALUES (?)", [(i,) for i in ids])
    con.commit()
    con.close()
    assert count_rows(db) == 7
    assert count_rows(db, run_id="abc") == 3
    assert count_rows(db, run_id="xyz") == 1
    assert count_rows(db, run_id="nope") == 0
