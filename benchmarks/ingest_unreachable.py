"""An ingest node while Event Hubs refuses connections: its CPU with the endpoint down, and the time from
the emulator starting again (same port, persisted) to every event sent after it being a row.

Run twice in the same run: ``--reconnect-cap 0`` (azure-eventhub 5.15's own retry: the baseline) and the
node's backoff (default cap 2 s). Prints one line per mode and the CPU ratio; ``--json`` for JSON lines.

    .venv/bin/python benchmarks/ingest_unreachable.py [--window 10] [--events 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator
from enginehub.harness.testing.processes import cpu_seconds
from enginehub.ingest.testing import (
    EVENTHUB,
    PARTITIONS,
    ConsumerProcess,
    consumer_args,
    message_id,
    poll,
    produce,
    row_count,
    seed_line,
)


def _events(start: int, n: int) -> list[tuple[str, str]]:
    return [
        (seed_line(1 + i % 10, 1 + i // 10), message_id(1 + i % 10, 1 + i // 10))
        for i in range(start, start + n)
    ]


def measure(cap: float, window: float, n: int, work: Path) -> dict[str, float | int]:
    cfg = EmulatorConfig.simple(hubs=[EVENTHUB], partitions=PARTITIONS)
    data = work / "eventhubs"
    first = EmulatorThread(EventHubsEmulator(cfg, port=0, http_port=None, data_dir=data))
    emu = first.start()
    port = emu.port
    db = work / "ingest.db"
    args = consumer_args(emu, db, "--checkpoint-dir", str(work / "ckpt"), "--batch-wait", "0.2")
    node = ConsumerProcess([*args, "--silence-warning", "2", "--reconnect-cap", str(cap)], work / "node.log")
    second = None
    try:
        poll(lambda: node.tail(200).count("claimed by") == PARTITIONS, 60, node.tail)
        produce(emu.connection_string, _events(0, n))
        poll(lambda: row_count(db) == n, 60, lambda: f"rows {row_count(db)}\n{node.tail()}")
        first.stop()
        poll(lambda: node.tail(400).count("nothing from Event Hubs") == PARTITIONS, 30, node.tail)
        pid = node.proc.pid
        before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)  # the measurement window
        cpu = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
        second = EmulatorThread(EventHubsEmulator(cfg, port=port, http_port=None, data_dir=data))
        emu = second.start()
        back = time.monotonic()
        produce(emu.connection_string, _events(n, n))
        poll(lambda: row_count(db) == 2 * n, 60, lambda: f"rows {row_count(db)}\n{node.tail()}")
        resume = time.monotonic() - back
        rows = row_count(db)
        node.terminate()
        node.wait(30)
        return {
            "reconnect_cap_s": cap,
            "cpu_core_fraction_down": round(cpu, 4),
            "resume_s": round(resume, 2),
            "rows": rows,
            "sent": 2 * n,
            "window_s": window,
        }
    finally:
        if node.proc.poll() is None:
            node.kill9()
            node.wait(10)
        if second is not None:
            second.stop()
        first.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--window", type=float, default=10.0, help="seconds of CPU measurement with the endpoint down"
    )
    ap.add_argument(
        "--events", type=int, default=200, help="events sent before the outage and again after it"
    )
    ap.add_argument("--cap", type=float, default=2.0, help="the node's backoff cap under test")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    for cap in (0.0, a.cap):
        with tempfile.TemporaryDirectory(prefix="enginehub-unreachable-") as tmp:
            results.append(measure(cap, a.window, a.events, Path(tmp)))
    base, ours = results
    for r in results:
        if a.json:
            print(json.dumps(r))
        else:
            mode = (
                "SDK retry (baseline)"
                if not r["reconnect_cap_s"]
                else f"node backoff, cap {r['reconnect_cap_s']} s"
            )
            print(
                f"{mode:28} CPU with Event Hubs down {r['cpu_core_fraction_down']:7.1%} of a core; "
                f"restart -> {r['rows']} rows of {r['sent']} sent after {r['resume_s']:.2f} s"
            )
    ratio = base["cpu_core_fraction_down"] / max(ours["cpu_core_fraction_down"], 1e-4)
    print(
        json.dumps({"cpu_ratio_baseline_over_backoff": round(ratio, 1)})
        if a.json
        else f"CPU while down: baseline / backoff = {ratio:.0f} x"
    )


if __name__ == "__main__":
    main()
