"""The throughput scenario into a REAL CrateDB (``throughput --sink-url``): a few seconds of load through the
emulator and one ingest node into a fresh schema, counted and checked for exactly-once there.

Needs a running CrateDB: the plugin's ``cratedb`` fixture (``CRATEDB_URL=http://127.0.0.1:4200``, else
testcontainers where a Docker engine answers); skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util

import pytest
from lt_runner import run_runner

from enginehub.loadtests.__main__ import THROUGHPUT_EXTRA_KEYS, THROUGHPUT_KEYS

# never import locust here: it monkey-patches the whole interpreter (gevent); the runner starts it as a child
pytestmark = [
    pytest.mark.integration,
    pytest.mark.cratedb,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None,
        reason="locust is not installed (pip install -e '.[load]')",
    ),
]


@pytest.mark.timeout(120)
def test_throughput_into_cratedb_is_exactly_once_and_counted_there(cratedb, cratedb_schema, tmp_path):
    url = cratedb.sink_url(cratedb_schema) + "&bulk_size=100"
    out, proc = run_runner(
        ["throughput", "--sink-url", url]
        + ["--duration", "4", "--target-rate", "1000", "--batch-size", "50", "--no-baseline"]
        + ["--ingest-batch-size", "250", "--workdir", str(tmp_path)],
        timeout=110,
    )
    assert tuple(out) == THROUGHPUT_KEYS + THROUGHPUT_EXTRA_KEYS, out
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out["sink"], out["sink_url"]) == ("crate", url), out
    assert out["produced"] == 4000 and out["rows"] == 4000, out
    assert out["lost"] == 0 and out["duplicates"] == 0, out
    # wide bounds for a loaded machine: the offered rate, held over the steady window
    assert 600 <= out["events_per_s_sustained"] <= 1400, (out, proc.stderr[-2000:])
    assert 0 < out["p50_latency_ms"] <= out["p99_latency_ms"] < 10_000, out
    # read back around the runner: one row per produced id, in the schema it was given
    table = f'"{cratedb_schema}"."enginehub_events"'
    cratedb.query(f"REFRESH TABLE {table}")
    rows = cratedb.query(
        f"SELECT count(*), count(DISTINCT event_metadata['message_id']), min(\"unit #\") FROM {table}"
    )
    assert rows[0][0] == rows[0][1] == 4000, rows
    assert rows[0][2] is not None and rows[0][2] >= 1  # the seed lines' generated columns were computed
    # the sink's bulk requests held at most bulk_size rows (its closing log line)
    log = (tmp_path / "ingest-node-0.log").read_text(errors="replace")
    assert "rows per request (bulk_size 100)" in log, log[-2000:]
    per_request = float(log.split("rows per request (bulk_size 100)")[0].rsplit(", ", 1)[1].split()[0])
    assert 0 < per_request <= 100
