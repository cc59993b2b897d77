"""CPU per event of the sink worker's work, the one-pass routing against the general path, in one run.

    python benchmarks/ingest_worker_cpu.py [--events 100000] [--batch 500] [--rounds 3] [--sink sqlite|memory]

The events are what the throughput scenario sends (``loadtests/loadrun.py``: a C-MAPSS line per event, a
text message id, the service's annotations), packed the way the receiving process packs them
(``ingest.worker.pack_events``). Each round times, on this process's CPU clock, for the same batches:

- ``general``: ``unpack_events`` + ``route_batch`` (the worker before the one-pass routing),
- ``one_pass``: ``route_packed`` (what the worker runs now),

then writes the rows through the same :class:`~enginehub.ingest.writer.ConfirmingWriter` and sink the
worker uses (``--sink sqlite``: a fresh SQLite file per round and path; ``memory``: no database). It
prints µs per event of each stage and the ratio one_pass / general, per round and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from enginehub.ingest.metrics import Metrics
from enginehub.ingest.rules import RuleSet, route_batch
from enginehub.ingest.sinks.base import open_sink
from enginehub.ingest.testing import seed_line
from enginehub.ingest.worker import route_packed, unpack_events
from enginehub.ingest.writer import ConfirmingWriter

WHERE = ("bench", "$Default", "0")


def packed_batches(events: int, batch: int) -> list[list[tuple[object, ...]]]:
    stamp = int(time.time() * 1000)
    items = [
        (
            {
                b"x-opt-sequence-number": i,
                b"x-opt-offset": str(i * 96).encode(),
                b"x-opt-enqueued-time": stamp + i,
            },
            (f"run-0-{i}",) + (None,) * 12,
            None,
            seed_line(1 + i % 100, 1 + i // 100).encode(),
        )
        for i in range(events)
    ]
    return [items[k : k + batch] for k in range(0, events, batch)]


async def one_round(batches, rules: RuleSet, sink_url: str, path: str) -> dict[str, float]:
    sink = open_sink(sink_url)
    sink.open(rules.tables())

    async def no_sleep(_: float) -> None:
        return None

    writer = ConfirmingWriter(sink, Metrics(), sleep=no_sleep)
    route = write = 0.0
    n = 0
    for items in batches:
        a = time.process_time()
        if path == "general":
            records, dead = unpack_events(items, *WHERE)
            routed = route_batch(records, rules)
        else:
            routed, dead = route_packed(items, *WHERE, rules)
        b = time.process_time()
        if not await writer.write(routed.rows, routed.dead_letters + dead, give_up=lambda: False):
            raise SystemExit("a write was not confirmed")
        write += time.process_time() - b
        route += b - a
        n += len(items)
    sink.close()
    return {"route_us": route / n * 1e6, "write_us": write / n * 1e6, "total_us": (route + write) / n * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    batches = packed_batches(args.events, args.batch)
    rules = RuleSet()
    results: dict[str, list[dict[str, float]]] = {"general": [], "one_pass": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for path in ("general", "one_pass") if r % 2 == 0 else ("one_pass", "general"):
                url = f"sqlite:///{Path(tmp) / f'{path}-{r}.db'}" if args.sink == "sqlite" else "memory://"
                res = asyncio.run(one_round(batches, rules, url, path))
                results[path].append(res)
                print(
                    f"round {r} {path:8s} " + " ".join(f"{k} {v:.2f}" for k, v in res.items()),
                    file=sys.stderr,
                )
    summary: dict[str, object] = {
        "events": args.events,
        "batch": args.batch,
        "rounds": args.rounds,
        "sink": args.sink,
    }
    for path, rows in results.items():
        for key in ("route_us", "write_us", "total_us"):
            summary[f"{path}_{key}"] = round(statistics.median(r[key] for r in rows), 2)
    summary["one_pass_over_general_route"] = round(
        summary["one_pass_route_us"] / summary["general_route_us"], 3
    )  # type: ignore[operator]
    summary["one_pass_over_general_total"] = round(
        summary["one_pass_total_us"] / summary["general_total_us"], 3
    )  # type: ignore[operator]
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
