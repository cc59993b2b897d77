"""Shared fixtures of the end-to-end suites: source rows from the real C-MAPSS files, and the sink every
suite runs against: SQLite always, CrateDB too when one is available (``cratedb`` marker; skipped with
the reason otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginehub.datasets.cmapss import file_name, read_rows
from enginehub.datasets.schema import Row


@pytest.fixture(scope="session")
def fd001_rows(cmapss_dir: Path) -> list[Row]:
    """All rows of train_FD001.txt (20 631 rows, 100 engines), in file order."""
    return read_rows(cmapss_dir / file_name("train", "FD001"))


@pytest.fixture(params=["sqlite", pytest.param("cratedb", marks=pytest.mark.cratedb)])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``sqlite:///<tmp>/events.db``, or ``crate://...?schema=<fresh schema>`` on the session's CrateDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    server = request.getfixturevalue("cratedb")
    return server.sink_url(request.getfixturevalue("cratedb_schema"))
