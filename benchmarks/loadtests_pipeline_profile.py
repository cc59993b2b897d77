"""Where the time goes in the load-test pipeline: CPU per event of each component, one at a time.

    python benchmarks/loadtests_pipeline_profile.py --events 200000 [--py-spy PATH]

1. the emulator (child process, persisting like ``harness up``) is preloaded with ``--events`` events by the
   raw producer (batches of 250, one producer per partition): producer and emulator CPU µs/event;
2. one bare SDK receive-and-discard process reads them all: its rate and CPU µs/event, and the emulator's
   delivery CPU µs/event;
3. one ``ingest`` node (SQLite sink, file checkpoints) reads them all: rate, CPU µs/event of the node and
   of the emulator; with ``--py-spy`` the node is sampled and the top functions (self time, and inclusive
   time in the stages: SDK receive, to_record, rules, sink write, checkpoint) are printed.

Each stage runs alone, so figures are CPU per event, not shares of a contended machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enginehub.ingest.testing import seed_line
from enginehub.loadtests.clients.eventhub import RawProducer, encode_event
from enginehub.loadtests.stack import IngestSettings, start_emulator, start_node, stop_node

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rows(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM enginehub_events").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def preload(cs: str, hub: str, partitions: int, events: int, batch: int = 250) -> tuple[float, float]:
    bodies = [seed_line(1 + i % 100, 1 + i // 100).encode() for i in range(512)]
    per_partition = events // partitions
    t0, c0 = time.perf_counter(), time.process_time()
    for p in range(partitions):
        with RawProducer(cs, hub, str(p)) as producer:
            for first in range(0, per_partition, batch):
                producer.send_batch(
                    [encode_event(bodies[k % 512], f"prof-p{p}-{k}") for k in range(first, first + batch)]
                )
    return time.perf_counter() - t0, time.process_time() - c0


def _function(frame: str) -> str:
    """'name (file.py:123)' -> 'name (file.py)': aggregate by function, not by line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarize_raw(path: Path, top: int = 25) -> None:
    """py-spy ``--format raw`` (collapsed stacks 'a;b;c count'): self and inclusive sample shares."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_function(f) for f in stack.split(";")]
        self_counts[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    print(f"\npy-spy: {total} samples; top self time:")
    for frame, n in self_counts.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("inclusive, enginehub and SDK entry points:")
    keys = [f for f in incl if any(k in f for k in ("enginehub", "_on_batch", "receive", "sqlite", "decode"))]
    for frame in sorted(keys, key=lambda f: -incl[f])[:top]:
        print(f"  {100 * incl[frame] / total:5.1f}%  {frame}")


def stage_costs(cs: str, workdir: Path, count: int = 20000, batch: int = 500) -> dict[str, float]:
    """In-process CPU µs/event of each ingest stage on real SDK ``EventData`` objects."""
    import asyncio
    import threading

    from azure.eventhub import EventHubConsumerClient

    from enginehub.ingest.checkpoint_file import FileCheckpointStore
    from enginehub.ingest.consumer import to_record
    from enginehub.ingest.rules import RuleSet, route_batch
    from enginehub.ingest.sinks.sqlite import SqliteSink

    got: list = []
    done = threading.Event()
    client = EventHubConsumerClient.from_connection_string(cs, "baseline", eventhub_name="eh1")

    def on_batch(_ctx, events):
        got.extend(events)
        if len(got) >= count:
            done.set()

    kw = {"on_event_batch": on_batch, "partition_id": "0", "starting_position": "-1", "max_batch_size": 500}
    worker = threading.Thread(target=client.receive_batch, kwargs=kw, daemon=True)
    worker.start()
    done.wait(120)
    client.close()
    worker.join(10)
    events = got[:count]
    n = len(events)
    out: dict[str, float] = {}

    def timed(name: str, fn) -> object:
        t0 = time.process_time()
        result = fn()
        out[name] = round((time.process_time() - t0) / n * 1e6, 1)
        return result

    records = timed("stage_to_record_us", lambda: [to_record(e, "eh1", "$Default", "0") for e in events])
    rules = RuleSet()
    batches = [records[i : i + batch] for i in range(0, n, batch)]
    routed = timed("stage_rules_us", lambda: [route_batch(b, rules) for b in batches])
    sink = SqliteSink(workdir / "stages.db")
    sink.open(rules.tables())
    timed("stage_sqlite_write_us", lambda: [sink.write(r.rows) for r in routed])
    sink2 = SqliteSink(workdir / "stages-normal.db", synchronous="normal")
    sink2.open(rules.tables())
    timed("stage_sqlite_write_sync_normal_us", lambda: [sink2.write(r.rows) for r in routed])
    store = FileCheckpointStore(workdir / "stage-ckpt")
    cp = {"fully_qualified_namespace": "ns", "eventhub_name": "eh1", "consumer_group": "$default",
          "partition_id": "0", "offset": "1", "sequence_number": 1}  # fmt: skip

    async def checkpoints() -> None:
        for _ in batches:
            await store.update_checkpoint(cp)

    timed("stage_checkpoint_us", lambda: asyncio.run(checkpoints()))
    t0 = time.perf_counter()
    asyncio.run(checkpoints())
    out["stage_checkpoint_wall_ms_per_batch"] = round((time.perf_counter() - t0) / len(batches) * 1e3, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--py-spy", default="", help="path of a py-spy binary to sample the ingest node")
    ap.add_argument("--workdir", default="")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="enginehub-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n = args.events - args.events % (args.partitions * 250)
    emulator = start_emulator(workdir, "eh1", args.partitions, ("baseline",))
    epid = emulator.pid
    assert epid is not None
    cs = emulator.connection_string
    out: dict[str, float] = {"events": n}
    try:
        e0 = cpu_seconds(epid)
        wall, producer_cpu = preload(cs, "eh1", args.partitions, n)
        out["produce_events_per_s"] = round(n / wall)
        out["producer_cpu_us_per_event"] = round(producer_cpu / n * 1e6, 1)
        out["emulator_append_cpu_us_per_event"] = round((cpu_seconds(epid) - e0) / n * 1e6, 1)

        for suffix, flags in (("", []), ("_track_last_enqueued", ["--track-last-enqueued"])):
            e0 = cpu_seconds(epid)
            argv = [sys.executable, "-m", "enginehub.loadtests", "baseline-receive"]
            argv += ["--eventhub-connection-string", cs, *flags]
            argv += ["--partitions", ",".join(str(p) for p in range(args.partitions))]
            argv += ["--max-events", str(n), "--seconds", "300"]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            result = json.loads(proc.stdout.read().strip().splitlines()[-1])  # type: ignore[union-attr]
            out[f"sdk_receive_events_per_s{suffix}"] = result["events_per_s"]
            out[f"sdk_receive_cpu_us_per_event{suffix}"] = result["cpu_us_per_event"]  # steady, no startup
            out[f"emulator_deliver_cpu_us_per_event_sdk{suffix}"] = round(
                (cpu_seconds(epid) - e0) / n * 1e6, 1
            )

        db = workdir / "sink.db"
        e0 = cpu_seconds(epid)
        node = start_node(
            workdir, "prof-node", cs, "eh1", f"sqlite:///{db}", workdir / "ckpt", IngestSettings()
        )
        spy = None
        if args.py_spy:
            spy_out = workdir / "ingest.pyspy.txt"
            spy = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--gil",
                    "-p",
                    str(node.pid),
                    "-f",
                    "raw",
                    "-o",
                    str(spy_out),
                    "-r",
                    "200",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        t0 = time.monotonic()
        first = None
        deadline = t0 + 600
        while time.monotonic() < deadline:
            have = rows(db)
            if have and first is None:
                first = time.monotonic()
                c_first = cpu_seconds(node.pid)
                e_first = cpu_seconds(epid)
                have_first = have
            if have >= n:
                break
            time.sleep(0.2)
        t1 = time.monotonic()
        node_cpu = cpu_seconds(node.pid) - c_first
        emu_cpu = cpu_seconds(epid) - e_first
        counted = n - have_first
        out["ingest_node_events_per_s"] = round(counted / (t1 - first))  # type: ignore[operator]
        out["ingest_node_cpu_us_per_event"] = round(node_cpu / counted * 1e6, 1)
        out["emulator_deliver_cpu_us_per_event_ingest"] = round(emu_cpu / counted * 1e6, 1)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        stop_node(node, 30)
        out.update(stage_costs(cs, workdir))
    finally:
        emulator.stop()
    print(json.dumps(out))
    if args.py_spy and (workdir / "ingest.pyspy.txt").exists():
        summarize_raw(workdir / "ingest.pyspy.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
