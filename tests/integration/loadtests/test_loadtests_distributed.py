"""Locust's distributed mode driving the throughput scenario: ``throughput --locust-workers 2`` runs a
master and two worker processes on loopback; the workers produce, the master merges their produced-id
logs and analyses the rows as one run."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from lt_runner import run_runner

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_throughput_with_two_locust_workers(tmp_path):
    out, proc = run_runner(
        [
            "throughput",
            "--duration",
            "4",
            "--target-rate",
            "1000",
            "--batch-size",
            "50",
            "--no-baseline",
            "--locust-workers",
            "2",
            "--workdir",
            str(tmp_path),
        ],
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the master's analysis covers what both workers produced
    assert out["produced"] == 4000 and out["rows"] == 4000, out
    assert out["lost"] == 0 and out["duplicates"] == 0, out
    assert 600 <= out["events_per_s_sustained"] <= 1400, (out, proc.stderr[-2000:])
    details = json.loads(re.search(r"details: (\{.*\})", proc.stderr).group(1))
    assert details["locust_workers"] == 2, details
    assert len(details["locust_worker_cpu_s"]) == 2 and all(c > 0 for c in details["locust_worker_cpu_s"])
    assert details["unexpected_rows"] == 0, details
    assert details["request_stats"]["eh.raw send_batch"]["requests"] == 80, details  # 4000 / 50
    # producer i of worker w is the run's producer i * 2 + w: the four partitions, 1,000 rows each
    with sqlite3.connect(tmp_path / "sink.db") as db:
        rows = db.execute(
            "select json_extract(partition_context, '$.partition_id'), count(*) from enginehub_events "
            "group by 1 order by 1"
        ).fetchall()
    assert rows == [("0", 1000), ("1", 1000), ("2", 1000), ("3", 1000)]
    for i in range(2):
        log = (tmp_path / f"locust-worker-{i}.log").read_text()
        assert "'role': 'worker'" in log and "'produced': 2000" in log, log[-2000:]
