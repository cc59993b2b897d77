"""``ingest --lag-interval``: the lag metric from periodic partition properties instead of the SDK's
per-event runtime metric (which the node then does not ask for)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from enginehub.ingest.testing import (
    PARTITIONS,
    consumer_args,
    message_id,
    poll,
    produce,
    row_count,
    seed_line,
)

pytestmark = pytest.mark.integration


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _lags(text: str) -> dict[str, int]:
    return {p: int(v) for p, v in re.findall(r'partition_lag_events\{partition="(\d+)"\} (\d+)', text)}


def test_lag_from_partition_properties(emulator, consumers, tmp_path: Path) -> None:
    n = 400
    produce(emulator.connection_string, [(seed_line(1, i + 1), message_id(1, i + 1)) for i in range(n)])
    db = tmp_path / "ingest.db"
    node = consumers(
        consumer_args(
            emulator, db, "--lag-interval", "0.3", "--metrics-port", "0", "--checkpoint-interval", "0"
        )
    )
    poll(lambda: row_count(db) >= n, 60, lambda: f"{row_count(db)} rows; log:\n{node.tail()}")
    url = re.search(r"metrics on (http://\S+)", node.log.read_text())
    assert url, node.tail()
    # every partition gets a lag (none would without the runtime metric, unless polled), and it is 0
    # once all is written
    want = {str(p): 0 for p in range(PARTITIONS)}
    poll(lambda: _lags(_scrape(url.group(1))) == want, 15, lambda: _scrape(url.group(1))[-800:])
    node.terminate()
    assert node.wait(30) == 0, node.tail()
    assert "reading its properties for the lag failed" not in node.log.read_text()
