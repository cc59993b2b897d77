"""Shared fixtures of the end-to-end suites: source rows from the real C-MAPSS files. (The sink every suite
runs against, SQLite and CrateDB when available, is the plugin's ``sink_url`` fixture.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from enginehub.datasets.cmapss import file_name, read_rows
from enginehub.datasets.schema import Row


@pytest.fixture(scope="session")
def fd001_rows(cmapss_dir: Path) -> list[Row]:
    """All rows of train_FD001.txt (20 631 rows, 100 engines), in file order."""
    return read_rows(cmapss_dir / file_name("train", "FD001"))
