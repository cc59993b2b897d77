"""Ingest throughput: our consumer into SQLite vs a bare SDK receive-and-discard loop vs a naive
one-INSERT-per-event consumer (what the 2018 ingest rule did), same emulator, same partitions, same run.

    .venv/bin/python benchmarks/ingest_throughput.py [--events 60000] [--naive-events 2000] [--partitions 4]

The emulator runs in its own process (so it does not share the GIL with the consumer under test); the
events are produced once, before any measurement, and every variant reads all of them from the start of
each partition in its own consumer group. Targets: consumer >= 0.85 x bare SDK, >= 10 x naive.

Two naive consumers, both one INSERT and one commit per event: "naive" opens the database the way the
simplest code does (``sqlite3.connect``: SQLite's default rollback journal, synchronous=FULL), the
target's reference; "naive-wal" gets the WAL journal our sink uses, so that the ratio to it shows what
batching alone is worth. Our consumer runs as the ``ingest`` CLI does: rules and writes in its sink worker
process (``--no-sink-worker``: in the receiving process).
Prints one line per variant and the ratios, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import multiprocessing
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from azure.eventhub.aio import EventHubConsumerClient

from enginehub.harness.testing.processes import cpu_seconds
from enginehub.ingest.checkpoint_file import FileCheckpointStore
from enginehub.ingest.consumer import ConsumerOptions, IngestConsumer, to_record, tune_gc
from enginehub.ingest.eventloop import DEFAULT_LOOP, EVENT_LOOPS
from enginehub.ingest.eventloop import resolve as resolve_loop
from enginehub.ingest.eventloop import run as run_on_loop
from enginehub.ingest.rules import load_rules, route
from enginehub.ingest.sinks.sqlite import SqliteSink, insert_sql, row_params, table_ddl
from enginehub.ingest.testing import message_id, produce, seed_line
from enginehub.ingest.worker import WorkerSpec

LOG = logging.getLogger(__name__)
HUB = "eh1"
NAMES = ("bare", "ingest", "naive", "naive-wal")
BATCH, PREFETCH = 500, 1000
SYNCHRONOUS = "full"
SINK_WORKER = True  # as the `ingest` CLI (--sink-worker, its default)
WRITE_LINGER: float | None = None  # None: the default of the mode (as the CLI)
EVENT_LOOP = DEFAULT_LOOP  # as the `ingest` CLI (--event-loop); every variant runs on it (set in main)


def _run_emulator(partitions: int, out: Any, stop: Any, groups: tuple[str, ...] = NAMES) -> None:
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EventHubsEmulator

    async def main() -> None:
        cfg = EmulatorConfig.simple(hubs=[HUB], partitions=partitions, consumer_groups=groups)
        async with EventHubsEmulator(cfg, port=0, http_port=None) as emu:
            out.put(emu.connection_string)
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


WORKER_CPU: list[float] = []  # sink worker CPU-us per event, incl. its start-up


def _client(cs: str, group: str, **kw: Any) -> EventHubConsumerClient:
    return EventHubConsumerClient.from_connection_string(cs, group, eventhub_name=HUB, **kw)


async def _until(done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("variant did not finish in time")
        await asyncio.sleep(0.01)


async def bare_sdk(cs: str, n: int, timeout: float, group: str = "bare") -> tuple[float, float, float]:
    """receive_batch, count, discard: the ceiling for any consumer built on the SDK."""
    count = 0
    first: list[tuple[float, float]] = []  # (wall, process CPU) when the first event arrived

    async def on_batch(ctx: Any, events: list[Any]) -> None:
        nonlocal count
        if events and not first:
            first.append((time.perf_counter(), time.process_time()))
        count += len(events)

    client = _client(cs, group)
    start = time.perf_counter()
    task = asyncio.create_task(
        client.receive_batch(
            on_batch, max_batch_size=BATCH, max_wait_time=0.5, starting_position="-1", prefetch=PREFETCH
        )
    )
    await _until(lambda: count >= n, timeout)
    end, cpu_end = time.perf_counter(), time.process_time()
    await client.close()
    task.cancel()
    return end - start, end - first[0][0], cpu_end - first[0][1]


async def our_consumer(
    cs: str, n: int, workdir: Path, timeout: float, group: str = "ingest"
) -> tuple[float, float, float]:
    sink: Any
    if SYNCHRONOUS == "memory":  # diagnosis only: the consumer without a database
        from enginehub.ingest.sinks.memory import MemorySink

        sink = MemorySink()
    else:
        sink = SqliteSink(workdir / f"{group}.db", synchronous=SYNCHRONOUS)
    store = FileCheckpointStore(workdir / f"{group}.ckpt")
    factory = functools.partial(_client, cs, group)
    opts = ConsumerOptions(consumer_group=group, batch_size=BATCH, prefetch=PREFETCH, track_lag=False)
    if WRITE_LINGER is not None:
        opts.write_linger = WRITE_LINGER
    worker = None
    if SINK_WORKER and SYNCHRONOUS != "memory":
        worker = WorkerSpec(
            sink_factory=functools.partial(SqliteSink, workdir / f"{group}.db", synchronous=SYNCHRONOUS),
            rules_factory=functools.partial(load_rules, None),
            write_linger=WorkerSpec.write_linger if WRITE_LINGER is None else WRITE_LINGER,
            log_level=logging.WARNING,
            event_loop=EVENT_LOOP,
        )
    consumer = IngestConsumer(factory, store, sink, load_rules(None), opts, worker=worker)
    first: list[tuple[float, float]] = []  # (wall, process CPU) when the first event arrived
    handler = consumer._on_batch

    async def timed(ctx: Any, events: list[Any]) -> None:
        if events and not first:
            first.append((time.perf_counter(), time.process_time()))
        await handler(ctx, events)

    consumer._on_batch = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    await _until(lambda: consumer.metrics.rows_written >= n, timeout)
    end, cpu_end = time.perf_counter(), time.process_time()
    if consumer.worker is not None and consumer.worker.process is not None:
        WORKER_CPU.append((cpu_seconds(consumer.worker.process.pid) or 0.0) / n * 1e6)
    consumer.request_stop()
    await task
    if SYNCHRONOUS == "memory":
        rows = sink.count("enginehub_events")
    else:
        with sqlite3.connect(workdir / f"{group}.db") as conn:
            rows = conn.execute("SELECT count(*) FROM enginehub_events").fetchone()[0]
    if rows != n:
        raise AssertionError(f"consumer wrote {rows} rows, expected {n}")
    return end - start, end - first[0][0], cpu_end - first[0][1]


async def naive(
    cs: str, n: int, workdir: Path, timeout: float, group: str = "naive", wal: bool = False
) -> tuple[float, float, float]:
    """One INSERT (and commit) per event, as the original ingest rule did; no batching. ``wal``: with
    the WAL journal (as our sink), else SQLite's defaults (rollback journal)."""
    path = workdir / f"{group}.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # SQLite's default, made explicit
    conn.execute(table_ddl("enginehub_events"))
    sql = insert_sql("enginehub_events")
    rules = load_rules(None)
    count = 0
    now = "1970-01-01T00:00:00+00:00"
    first: list[tuple[float, float]] = []  # (wall, process CPU) when the first event arrived

    async def on_event(ctx: Any, event: Any) -> None:
        nonlocal count
        if event is None:
            return
        if not first:
            first.append((time.perf_counter(), time.process_time()))
        for row in route(to_record(event, HUB, group, ctx.partition_id), rules).rows:
            conn.execute(sql, row_params(row, now))
        count += 1

    client = _client(cs, group)
    start = time.perf_counter()
    task = asyncio.create_task(client.receive(on_event, starting_position="-1", prefetch=PREFETCH))
    await _until(lambda: count >= n, timeout)
    end, cpu_end = time.perf_counter(), time.process_time()
    await client.close()
    task.cancel()
    conn.close()
    return end - start, end - first[0][0], cpu_end - first[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=60000,
        help="events per measured loop (60,000: ~3 s each, so the consumer's partition claims, one per "
        "load-balancing cycle, and other start-up effects weigh little; 20,000 gave 0.78-0.96 per round)",
    )
    parser.add_argument("--naive-events", type=int, default=2000, help="the naive consumer is slow: fewer")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--batch-size", type=int, default=BATCH, help="max events per batch (both loops)")
    parser.add_argument("--prefetch", type=int, default=PREFETCH, help="per-partition prefetch (all loops)")
    parser.add_argument(
        "--write-linger", type=float, default=None, help="min s between two writes (default: the CLI's)"
    )
    parser.add_argument("--synchronous", default=SYNCHRONOUS, help="SQLite synchronous: full | normal")
    parser.add_argument(
        "--no-sink-worker", action="store_true", help="rules and sink in the receiving process (threads)"
    )
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's GC thresholds (all loops)")
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=DEFAULT_LOOP,
        help="every variant's event loop and the sink worker's (ingest --event-loop; default %(default)s)",
    )
    args = parser.parse_args()
    globals().update(
        BATCH=args.batch_size,
        PREFETCH=args.prefetch,
        SYNCHRONOUS=args.synchronous,
        SINK_WORKER=not args.no_sink_worker,
        WRITE_LINGER=args.write_linger,
        EVENT_LOOP=args.event_loop,
    )
    logging.basicConfig(level=logging.WARNING)
    if not args.default_gc:
        tune_gc()  # what the `ingest` CLI does; process-wide, so every variant runs with it

    groups = tuple(f"{v}{i}" for i in range(args.repeat) for v in NAMES)
    ctx = multiprocessing.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    emu = ctx.Process(target=_run_emulator, args=(args.partitions, out, stop, groups), daemon=True)
    emu.start()
    names = NAMES
    rates: dict[str, list[float]] = {k: [] for k in names}
    startup: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    cpu_us: dict[str, list[float]] = {k: [] for k in names}
    steady_us: dict[str, list[float]] = {k: [] for k in names}
    try:
        cs = out.get(timeout=60)
        items = [
            (seed_line(1 + i % 100, 1 + i // 100), message_id(1 + i % 100, 1 + i // 100))
            for i in range(args.events)
        ]
        t0 = time.perf_counter()
        produce(cs, items, batch=500)
        took = time.perf_counter() - t0
        loop = resolve_loop(args.event_loop)
        print(f"produced {args.events} events into {args.partitions} partitions in {took:.1f} s; loop {loop}")
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            work = Path(tmp)
            for i in range(args.repeat):  # interleaved, so machine noise hits every variant alike
                for name in names:
                    group = f"{name}{i}"
                    if name == "bare":
                        n, coro = args.events, bare_sdk(cs, args.events, args.timeout, group)
                    elif name == "ingest":
                        n, coro = args.events, our_consumer(cs, args.events, work, args.timeout, group)
                    else:
                        wal = name == "naive-wal"
                        n = args.naive_events
                        coro = naive(cs, n, work, args.timeout, group, wal=wal)
                    c0 = time.process_time()
                    total, steady, steady_cpu = run_on_loop(coro, args.event_loop)
                    cpu_s = time.process_time() - c0
                    steady_us[name].append(steady_cpu / n * 1e6)
                    cpu[name].append(cpu_s / total)
                    cpu_us[name].append(cpu_s / n * 1e6)
                    rates[name].append(n / steady)
                    startup[name].append(total - steady)
                round_rates = ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items())
                ratio = rates["ingest"][-1] / rates["bare"][-1]
                print(f"round {i + 1}: {round_rates}, consumer/bare {ratio:.2f}")
    finally:
        stop.set()
        emu.join(15)
        if emu.is_alive():
            emu.terminate()
    # throughput = events / (last event done - first event received); start-up (connect, claim) shown apart
    med = {k: statistics.median(v) for k, v in rates.items()}
    labels = {
        "bare": "bare SDK receive-and-discard",
        "ingest": "ingest consumer -> SQLite   ",
        "naive": "naive 1 INSERT per event    ",
        "naive-wal": "same, with the WAL journal  ",
    }
    for k, label in labels.items():
        up, load, us = statistics.median(startup[k]), statistics.median(cpu[k]), statistics.median(cpu_us[k])
        st = statistics.median(steady_us[k])
        print(
            f"{label} : {med[k]:8.0f} events/s (median; start-up {up:.2f} s; "
            f"consumer-process CPU {load:.0%}, {us:.0f} CPU-us/event incl. start-up, {st:.0f} after it)"
        )
    if WORKER_CPU:
        us = statistics.median(WORKER_CPU)
        print(f"sink worker process          : {us:.0f} CPU-us/event incl. its start-up")
    print(f"ratio consumer / bare SDK    : {med['ingest'] / med['bare']:.2f} (target >= 0.85)")
    print(f"ratio consumer / naive       : {med['ingest'] / med['naive']:.1f} (target >= 10)")
    print(f"ratio consumer / naive (WAL) : {med['ingest'] / med['naive-wal']:.1f} (batching alone)")
    print(
        json.dumps(
            {
                "events": args.events,
                "partitions": args.partitions,
                "repeat": args.repeat,
                "bare_sdk_events_per_s": round(med["bare"]),
                "consumer_events_per_s": round(med["ingest"]),
                "naive_events_per_s": round(med["naive"]),
                "ratio_vs_bare": round(med["ingest"] / med["bare"], 3),
                "ratio_vs_naive": round(med["ingest"] / med["naive"], 2),
                "naive_wal_events_per_s": round(med["naive-wal"]),
                "ratio_vs_naive_wal": round(med["ingest"] / med["naive-wal"], 2),
                "cpu_us_per_event": {k: round(statistics.median(v)) for k, v in cpu_us.items()},
                "steady_cpu_us_per_event": {k: round(statistics.median(v)) for k, v in steady_us.items()},
                "sink_worker_cpu_us_per_event": round(statistics.median(WORKER_CPU)) if WORKER_CPU else None,
            }
        )
    )


if __name__ == "__main__":
    main()
