"""Event Hubs emulator storage benchmark: append/read throughput and resident memory.

Runs the partition logs alone (no AMQP server) with a realistic event size, then reopens the data dir
in a fresh process to report what 1,000,000 stored events cost in RSS (index only, payloads on disk)
and how long recovery (the open-time scan) takes. Prints a table and, with --json, one JSON line.

    .venv/bin/python benchmarks/eventhubs_storage.py                  # 1,000,000 events, file + memory
    .venv/bin/python benchmarks/eventhubs_storage.py --events 100000 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_config(partitions: int, segment_mib: int) -> EmulatorConfig:
    return EmulatorConfig.simple(partitions=partitions, policies={"p": "k"}, segment_bytes=segment_mib << 20)


def run_appends(store: EventHubsStore, events: int, batch: int, payload_size: int) -> float:
    hub = store.hub("eh1")
    payloads = [os.urandom(payload_size) for _ in range(64)]
    n = 0
    b = 0
    t0 = time.perf_counter()
    while n < events:
        size = min(batch, events - n)
        items = [(payloads[(n + i) & 63], None) for i in range(size)]
        hub.partitions[hub.partition_ids[b % len(hub.partition_ids)]].append(items)
        n += size
        b += 1
    return time.perf_counter() - t0


def run_reads(store: EventHubsStore, max_count: int) -> tuple[float, int]:
    hub = store.hub("eh1")
    total = 0
    t0 = time.perf_counter()
    for pid in hub.partition_ids:
        p = hub.partitions[pid]
        seq = p.begin_sequence_number
        while True:
            page = p.read(seq, max_count)
            if not page:
                break
            total += len(page)
            seq = page[-1].sequence_number + 1
    return time.perf_counter() - t0, total


def run_tail(store: EventHubsStore, events: int, batch: int, payload_size: int) -> float:
    """Live streaming: each append is read back at once by a consumer tailing the partition."""
    p = store.hub("eh1").partitions["0"]
    payload = os.urandom(payload_size)
    seq = p.last_sequence_number + 1
    n = 0
    t0 = time.perf_counter()
    while n < events:
        p.append([(payload, None)] * batch)
        while True:
            page = p.read(seq, 300)
            if not page:
                break
            seq = page[-1].sequence_number + 1
        n += batch
    return time.perf_counter() - t0


def reopen_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: open the data dir, report RSS and recovery time as JSON."""
    gc.collect()
    rss0 = rss_mib()
    t0 = time.perf_counter()
    store = EventHubsStore(make_config(args.partitions, args.segment_mib), data_dir=Path(args.data_dir))
    open_s = time.perf_counter() - t0
    stored = sum(
        p.last_sequence_number - p.begin_sequence_number + 1 for p in store.hub("eh1").partitions.values()
    )
    gc.collect()
    rss1 = rss_mib()
    read_s, read_n = run_reads(store, args.read_count)
    rss2 = rss_mib()
    store.close()
    print(  # noqa: T201
        json.dumps(
            {
                "stored": stored,
                "open_s": open_s,
                "rss_before_open_mib": rss0,
                "rss_after_open_mib": rss1,
                "rss_after_full_read_mib": rss2,
                "cold_read_s": read_s,
                "cold_read_events": read_n,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to store (default 1,000,000)")
    parser.add_argument("--payload", type=int, default=200, help="payload bytes per event (default 200)")
    parser.add_argument("--batch", type=int, default=100, help="events per append (default 100)")
    parser.add_argument("--read-count", type=int, default=300, help="max_count per read (SDK prefetch, 300)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--segment-mib", type=int, default=64)
    parser.add_argument("--data-dir", help="where to write (default: a temp dir, deleted afterwards)")
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory backend run")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--reopen-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reopen_child:
        reopen_child(args)
        return 0

    results: dict[str, object] = {
        "events": args.events,
        "payload_bytes": args.payload,
        "batch": args.batch,
        "partitions": args.partitions,
        "python": sys.version.split()[0],
    }
    tmp = None
    data_dir = Path(args.data_dir) if args.data_dir else Path(tmp := tempfile.mkdtemp(prefix="eh-bench-"))
    try:
        rss0 = rss_mib()
        store = EventHubsStore(make_config(args.partitions, args.segment_mib), data_dir=data_dir)
        append_s = run_appends(store, args.events, args.batch, args.payload)
        gc.collect()
        rss_after_append = rss_mib()
        read_s, read_n = run_reads(store, args.read_count)
        store.close()
        disk = sum(f.stat().st_size for f in data_dir.rglob("*.log"))
        results.update(
            file_append_events_per_s=args.events / append_s,
            file_append_us_per_event=append_s / args.events * 1e6,
            file_read_events_per_s=read_n / read_s,
            file_read_us_per_event=read_s / read_n * 1e6,
            file_rss_growth_after_append_mib=rss_after_append - rss0,
            disk_bytes=disk,
        )
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--reopen-child",
                "--data-dir",
                str(data_dir),
                "--partitions",
                str(args.partitions),
                "--segment-mib",
                str(args.segment_mib),
                "--read-count",
                str(args.read_count),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        reopen = json.loads(child.stdout.strip().splitlines()[-1])
        index_mib = reopen["rss_after_open_mib"] - reopen["rss_before_open_mib"]
        results.update(
            reopen_stored_events=reopen["stored"],
            reopen_open_s=reopen["open_s"],
            reopen_rss_mib=reopen["rss_after_open_mib"],
            reopen_rss_growth_mib=index_mib,
            reopen_bytes_per_event=index_mib * 1024 * 1024 / max(1, reopen["stored"]),
            reopen_rss_after_full_read_mib=reopen["rss_after_full_read_mib"],
            cold_read_events_per_s=reopen["cold_read_events"] / reopen["cold_read_s"],
        )
        store = EventHubsStore(make_config(args.partitions, args.segment_mib), data_dir=data_dir)
        tail_n = min(args.events, 100_000)
        results["file_tail_append_plus_read_us_per_event"] = (
            run_tail(store, tail_n, args.batch, args.payload) / tail_n * 1e6
        )
        store.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    if not args.no_memory:
        store = EventHubsStore(make_config(args.partitions, args.segment_mib))
        append_s = run_appends(store, args.events, args.batch, args.payload)
        read_s, read_n = run_reads(store, args.read_count)
        results.update(
            memory_append_us_per_event=append_s / args.events * 1e6,
            memory_read_us_per_event=read_s / read_n * 1e6,
        )
        store.close()

    width = max(len(k) for k in results)
    for key, value in results.items():
        text = (
            f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"{key:<{width}}  {text}")  # noqa: T201
    if args.json:
        print(json.dumps(results))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
