"""Smokes of the benchmark runner (the public contract): a few seconds of each scenario, real processes.

Each runs ``python -m enginehub.loadtests ... --json`` as a child process: the emulator, ingest nodes and
Locust headless are its children; the last stdout line must be the JSON object with the contract keys first
(throughput adds ``offered_events_per_s``, ``baseline_ratio``, ``event_loop``, the live baseline's two
keys and ``cpu_placement`` after them).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys

import pytest
from lt_runner import run_runner

from enginehub.ingest.eventloop import resolve as resolve_loop
from enginehub.loadtests.__main__ import (
    BULKY,
    FAILOVER_KEYS,
    THROUGHPUT_EXTRA_KEYS,
    THROUGHPUT_KEYS,
    tidy_workdir,
)
from enginehub.loadtests.placement import available_cpus, plan

# never import locust here: it monkey-patches the whole interpreter (gevent); the runner starts it as a child
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None,
        reason="locust is not installed (pip install -e '.[load]')",
    ),
]


@pytest.mark.timeout(120)
def test_throughput_smoke(tmp_path):
    out, proc = run_runner(
        [
            "throughput",
            "--duration",
            "4",
            "--target-rate",
            "1000",
            "--consumer-nodes",
            "2",
            "--batch-size",
            "50",
            "--baseline-seconds",
            "5",
            "--min-rate",
            "1000000",
            "--workdir",
            str(tmp_path),
        ],
        timeout=110,
    )
    assert tuple(out) == THROUGHPUT_KEYS + THROUGHPUT_EXTRA_KEYS, out
    # every figure is there, and the (deliberately impossible) rate threshold sets Locust's exit code
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "threshold failed: sustained" in proc.stderr
    assert "threshold failed: lost" not in proc.stderr
    assert out["produced"] == 4000 and out["rows"] == 4000, out
    assert out["lost"] == 0 and out["duplicates"] == 0, out
    # the offered rate as held over the steady window (not a peak); wide bounds for a loaded CI machine
    assert 600 <= out["events_per_s_sustained"] <= 1400, (out, proc.stderr[-2000:])
    assert 0 < out["p50_latency_ms"] <= out["p99_latency_ms"] < 10_000
    assert (out["consumer_nodes"], out["partitions"], out["sink"]) == (2, 4, "sqlite")
    assert out["sdk_receive_baseline_events_per_s"] > 0
    assert out["offered_events_per_s"] == 1000
    ratio = out["events_per_s_sustained"] / out["sdk_receive_baseline_events_per_s"]
    assert out["baseline_ratio"] == pytest.approx(ratio, abs=0.001)
    # an explicit --target-rate: no ratio threshold unless asked for (the offered rate may be the limit)
    assert "threshold failed: sustained / SDK receive baseline" not in proc.stderr
    assert (tmp_path / "locust.log").read_text().count("eh.raw send_batch") >= 1
    # how busy each CPU was in the steady window, on stderr with the other details
    details = json.loads(re.search(r"details: (\{.*\})", proc.stderr)[1])
    busy = details["cpu_busy"]
    assert set(busy) >= {str(c) for c in available_cpus()} and all(0 <= v <= 1 for v in busy.values()), busy
    # two nodes get a CPU each only where a CPU is left over for the emulator and the load generator
    expected = plan(available_cpus(), 2)
    assert out["cpu_placement"] == (expected.describe() if expected else None)


@pytest.mark.timeout(120)
def test_throughput_auto_measures_the_baseline_first_and_offers_a_fraction_of_it(tmp_path):
    out, proc = run_runner(
        # a light load for CI: 5 % of the baseline; the default (0.9) is the benchmark's
        ["throughput", "--duration", "4", "--baseline-events", "8000", "--auto-fraction", "0.05"]
        + ["--batch-size", "50", "--min-baseline-ratio", "0.5", "--workdir", str(tmp_path)],
        timeout=110,
    )
    assert tuple(out) == THROUGHPUT_KEYS + THROUGHPUT_EXTRA_KEYS, out
    baseline = out["sdk_receive_baseline_events_per_s"]
    before, after = (
        out["sdk_receive_baseline_before_events_per_s"],
        out["sdk_receive_baseline_after_events_per_s"],
    )
    assert before > 0 and after > 0, out
    # the rate offered, and the ratio judged, come from the baseline before the load; the second, read after
    # the load with the node stopped, on the same backlog, is reported with the drift between the two
    assert out["offered_events_per_s"] == pytest.approx(before * 0.05, abs=0.1)
    assert baseline == before
    assert out["baseline_drift"] == pytest.approx(after / before, abs=0.001)
    assert "baseline backlog: 8000 events written" in proc.stderr
    logged = [ast.literal_eval(r) for r in re.findall(r"baseline process: (\{.*\})", proc.stderr)]
    # before: the backlog alone; after: it again (the load's events follow it, so the last batch may run on)
    assert len(logged) == 2 and logged[0]["events"] == 8000 <= logged[1]["events"], logged
    assert (tmp_path / "baseline-0.log").exists() and (tmp_path / "baseline-after-0.log").exists()
    assert out["consumer_nodes"] == 1  # the throughput default
    # the nodes and the bare SDK processes ran on the same loop, and the JSON says which
    assert out["event_loop"] == resolve_loop("asyncio") == "asyncio"  # the default
    assert "--event-loop asyncio" in proc.stderr  # the node's command line, as logged
    # the baseline read its own backlog, written before the nodes started; the nodes start after it, so the
    # sink holds exactly the load's events
    assert out["rows"] == out["produced"] > 0 and out["lost"] == 0 and out["duplicates"] == 0, out
    with sqlite3.connect(tmp_path / "sink.db") as db:
        assert db.execute("SELECT count(*) FROM enginehub_events").fetchone()[0] == out["produced"]
    # the ratio is ~0.05 by construction: below the 0.5 asked for, so the run fails and says why
    assert out["baseline_ratio"] < 0.5
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "threshold failed: sustained / SDK receive baseline" in proc.stderr
    # one node on a machine with a CPU to spare: the node and the bare SDK process that stood in for it on
    # the same CPU of their own, the sink worker (and everything else) on the rest
    placement = plan(available_cpus(), 1)
    if placement is None:
        assert out["cpu_placement"] is None and "no CPU placement" in proc.stderr
    else:
        own, rest = sorted(placement.node(0)), sorted(placement.others)
        assert out["cpu_placement"] == {"nodes": [own], "others": rest}
        assert re.search(rf"bare SDK process 0 \(pid \d+\) on CPUs {re.escape(str(own))}", proc.stderr)
        assert re.search(rf"ingest-node-0 \(pid \d+\) on CPUs {re.escape(str(own))}", proc.stderr)
        assert re.search(rf"sink worker \(pid \d+\) on CPUs {re.escape(str(rest))}", proc.stderr)


@pytest.mark.timeout(120)
def test_throughput_live_baseline_offers_the_same_load_to_bare_sdk_processes(tmp_path):
    out, proc = run_runner(
        ["throughput", "--duration", "4", "--target-rate", "1000", "--batch-size", "50", "--no-baseline"]
        + ["--live-baseline", "--min-live-baseline-ratio", "100", "--workdir", str(tmp_path)],
        timeout=110,
    )
    assert tuple(out) == THROUGHPUT_KEYS + THROUGHPUT_EXTRA_KEYS, out
    assert out["rows"] == out["produced"] == 4000 and out["lost"] == 0, out
    live = out["sdk_live_receive_events_per_s"]
    # the bare SDK read the second load (the same 1,000 events/s) as it came: about the offered rate
    assert 600 <= live <= 1400, (out, proc.stderr[-3000:])
    assert out["live_baseline_ratio"] == pytest.approx(out["events_per_s_sustained"] / live, abs=0.001)
    # from @latest: none of the first load's 4,000 events read again (the last batches of the second may
    # still be on their way when the processes are stopped: only the steady window counts)
    found = re.search(
        r"live baseline: [0-9.]+ events/s in the steady window; (\d+) produced, (\d+) received", proc.stderr
    )
    assert found, proc.stderr[-3000:]
    produced, received = int(found[1]), int(found[2])
    assert produced == 4000 and 0.8 * produced <= received <= produced, found[0]
    assert (tmp_path / "locust-live-baseline.log").read_text().count("eh.raw send_batch") >= 1
    assert json.loads((tmp_path / "locust-live-baseline-report.json").read_text())["produced"] == 4000
    # the (impossible) threshold asked for fails the run and says why; no backlog baseline, no ratio
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "threshold failed: sustained / live SDK receive baseline" in proc.stderr
    assert out["sdk_receive_baseline_events_per_s"] is None and out["baseline_ratio"] is None


@pytest.mark.parametrize("passed", [True, False])
def test_the_runners_temp_dir_goes_after_a_pass_and_only_its_bulk_after_a_failure(tmp_path, passed):
    work = tmp_path / "enginehub-throughput-x"
    (work / "eventhubs-data" / "eh1").mkdir(parents=True)
    (work / "eventhubs-data" / "eh1" / "0.log").write_bytes(b"x" * 1000)
    (work / "checkpoints").mkdir()
    for name in ("sink.db", "sink.db-wal", "locust.log", "ingest-node-0.log", "locust-report.json"):
        (work / name).write_text(name)
    tidy_workdir(work, passed)
    if passed:
        assert not work.exists()
    else:
        left = {p.name for p in work.iterdir()}
        assert left == {"checkpoints", "locust.log", "ingest-node-0.log", "locust-report.json"}, left
        assert not left & set(BULKY)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no-baseline"], "cannot go with --no-baseline"),
        (["--eventhub-connection-string", "Endpoint=sb://127.0.0.1/;"], "give a --target-rate"),
        (["--target-rate", "fast"], "a number) or auto"),
        (["--target-rate", "0"], "must be > 0"),
        (["--min-live-baseline-ratio", "0.9"], "needs --live-baseline"),
        (["--target-rate", "1000", "--no-baseline", "--min-baseline-ratio", "0"], "needs the baseline"),
    ],
)
def test_throughput_refuses_what_it_cannot_do(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "enginehub.loadtests", "throughput", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.timeout(150)
def test_failover_smoke(tmp_path):
    out, proc = run_runner(
        [
            "failover",
            "--duration",
            "14",
            "--target-rate",
            "500",
            "--consumer-nodes",
            "3",
            "--crash-at",
            "2",
            "--graceful-at",
            "10",
            "--batch-size",
            "50",
            # limits with headroom for a loaded CI machine; the targets (10 s / 3 s) are the benchmark's
            "--max-crash-takeover",
            "15",
            "--max-graceful-takeover",
            "6",
            "--workdir",
            str(tmp_path),
        ],
        timeout=140,
    )
    assert tuple(out) == FAILOVER_KEYS, out
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0 < out["crash_takeover_s"] <= 15
    assert 0 < out["graceful_takeover_s"] <= 6
    assert out["produced"] == out["rows"] == 7000
    assert out["lost"] == 0 and out["duplicates"] == 0


@pytest.mark.timeout(120)
def test_device_fleet_smoke(tmp_path):
    out, proc = run_runner(
        # a function smoke on a shared CI machine: the rate threshold is loose here (the benchmark holds it)
        ["devices", "--devices", "10", "--target-rate", "200", "--duration", "3", "--min-rate", "50"]
        + ["--workdir", str(tmp_path)],
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out["devices"], out["acked"], out["failed"]) == (10, 600, 0)
    assert out["rows"] == 600 and out["lost"] == 0 and out["duplicates"] == 0
    assert 0 <= out["puback_p50_ms"] <= out["puback_p99_ms"] < 10_000  # ms, rounded by Locust
    assert 0 < out["p50_latency_ms"] <= out["p99_latency_ms"]
