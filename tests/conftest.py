"""Shared test configuration. Fixtures live in the enginehub pytest plugin (harness/testing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CMAPSS_DIR = Path(os.environ.get("ENGINEHUB_CMAPSS_DIR", REPO.parent / "shared" / "datasets" / "cmapss"))
CMAPSS_DIR = CMAPSS_DIR.resolve()
if os.environ.get("ENGINEHUB_CMAPSS_DIR"):
    # absolute for the whole session: tests start notebooks and CLIs in other working directories, where a
    # relative ENGINEHUB_CMAPSS_DIR=../shared/datasets/cmapss would point nowhere
    os.environ["ENGINEHUB_CMAPSS_DIR"] = str(CMAPSS_DIR)


@pytest.fixture(scope="session")
def cmapss_dir() -> Path:
    """The verified NASA C-MAPSS files (../shared/datasets/cmapss); skip clearly when absent."""
    if not (CMAPSS_DIR / "train_FD001.txt").is_file():
        pytest.skip(f"C-MAPSS files not found in {CMAPSS_DIR} (set ENGINEHUB_CMAPSS_DIR)")
    return CMAPSS_DIR
