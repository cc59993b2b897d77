"""The SDK receive baseline: bare ``EventHubConsumerClient`` (aio) receive-and-discard, no sink, no rules.

``python -m enginehub.loadtests baseline-receive --partitions 0,2 ...`` is one process; the runner starts as
many as there are ingest nodes, each on its share of the partitions, against the same emulator and a
backlog there (the events the load run left, or with ``--target-rate auto`` a backlog written first by
:func:`prefill`), so the figure is what the SDK alone can read on this machine. Each process prints one
JSON line: events received and seconds from its first event to its last (or the time limit).

With ``--live`` (the runner's ``--live-baseline``) a process reads from ``@latest`` instead, prints
``{"ready": ...}`` once its partitions are open, counts what it receives in wall-clock buckets of
:data:`BUCKET_S` and stops on SIGTERM (or the time limit): the runner then offers the pipeline run's load a
second time, to these processes in place of the ingest nodes, and :func:`events_in_window` gives what the
bare SDK read in the same steady window (:func:`live_rate`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

LOG = logging.getLogger(__name__)

#: width of the receive-time buckets of a ``--live`` process (s): the window's edges fall inside one
BUCKET_S = 0.1


def events_in_window(buckets: Mapping[int, int], t0: float, t1: float, width: float = BUCKET_S) -> float:
    """Events received between wall-clock ``t0`` and ``t1``, from counts per bucket ``k`` (the events
    received in ``[k * width, (k + 1) * width)``); a bucket cut by an edge counts for the part inside."""
    total = 0.0
    for k, n in buckets.items():
        lo, hi = k * width, (k + 1) * width
        inside = min(hi, t1) - max(lo, t0)
        if inside > 0:
            total += n * inside / width
    return total


def live_rate(results: Iterable[Mapping[str, Any]], window: tuple[float, float]) -> float | None:
    """Events/s that the ``--live`` processes (their JSON results) read in ``window`` together, as the
    load run's sustained rate counts rows that became visible in it."""
    t0, t1 = window
    if not t1 > t0:
        return None
    total = 0.0
    for r in results:
        width = float(r.get("bucket_s", BUCKET_S))
        total += events_in_window({int(k): int(n) for k, n in r["buckets"].items()}, t0, t1, width)
    return round(total / (t1 - t0), 1)


def prefill(
    connection_string: str, eventhub: str, partitions: int, per_partition: int, prefix: str, batch: int = 250
) -> int:
    """``per_partition`` events into each partition (the load run's bodies, ids ``{prefix}-{p}-{k}``), sent
    with the raw producer the load run uses; every batch is accepted or this raises. Returns the count."""
    from enginehub.loadtests.clients.eventhub import RawProducer, encode_event
    from enginehub.loadtests.loadrun import bodies

    texts = bodies()
    sent = 0
    for p in range(partitions):
        with RawProducer(connection_string, eventhub, str(p)) as producer:
            for first in range(0, per_partition, batch):
                ks = range(first, min(first + batch, per_partition))
                producer.send_batch([encode_event(texts[k % len(texts)], f"{prefix}-{p}-{k}") for k in ks])
                sent += len(ks)
    return sent


async def receive_and_discard(
    connection_string: str,
    eventhub: str,
    consumer_group: str,
    partitions: list[str],
    max_events: int,
    seconds: float,
    batch_size: int = 500,
    prefetch: int = 2000,
    track_last_enqueued: bool = False,
    live: bool = False,
    client_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Receive and discard until ``max_events`` or ``seconds``. ``live``: from ``@latest``, until SIGTERM
    or ``seconds``, printing a ready line first and counting events per wall-clock bucket.
    ``client_kwargs``: more keyword arguments for the client (e.g. ``uamqp_transport``, see
    benchmarks/sdk_receive_transport.py)."""
    from azure.eventhub.aio import EventHubConsumerClient

    client = EventHubConsumerClient.from_connection_string(
        connection_string, consumer_group, eventhub_name=eventhub, **(client_kwargs or {})
    )
    count = 0
    first: float | None = None
    last = 0.0
    cpu_first = cpu_last = 0.0
    first_batch = 0
    done = asyncio.Event()
    buckets: Counter[int] = Counter()
    opened: set[str] = set()
    if live:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)

    async def on_init(ctx: Any) -> None:
        opened.add(ctx.partition_id)
        if len(opened) == len(partitions):
            print(json.dumps({"ready": sorted(opened)}), flush=True)  # noqa: T201 - read by the runner

    async def on_batch(ctx: Any, events: list[Any]) -> None:
        nonlocal count, first, last, cpu_first, cpu_last, first_batch
        if not events:
            return
        if live:
            buckets[math.floor(time.time() / BUCKET_S)] += len(events)
        now = time.monotonic()
        if first is None:
            first, cpu_first, first_batch = now, time.process_time(), len(events)
        count += len(events)
        last, cpu_last = now, time.process_time()
        if count >= max_events and not live:
            done.set()

    async with client:
        tasks = [
            asyncio.create_task(
                client.receive_batch(
                    on_event_batch=on_batch,
                    partition_id=p,
                    starting_position="@latest" if live else "-1",
                    on_partition_initialize=on_init if live else None,
                    max_batch_size=batch_size,
                    max_wait_time=0.5,
                    prefetch=prefetch,
                    track_last_enqueued_event_properties=track_last_enqueued,
                )
            )
            for p in partitions
        ]
        try:
            await asyncio.wait_for(done.wait(), seconds)
        except TimeoutError:
            pass
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = (last - first) if first is not None else 0.0
    after_first = count - first_batch  # events received between the first and the last callback
    result: dict[str, Any] = {
        "events": count,
        "seconds": round(elapsed, 3),
        "events_per_s": round(count / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_us_per_event": round((cpu_last - cpu_first) / after_first * 1e6, 1) if after_first > 0 else None,
    }
    if live:
        result["bucket_s"] = BUCKET_S
        result["buckets"] = {str(k): n for k, n in sorted(buckets.items())}
    return result


def main(args: Any) -> int:
    from enginehub.ingest.consumer import tune_gc
    from enginehub.ingest.eventloop import run

    logging.getLogger("azure").setLevel(logging.WARNING)
    tune_gc()  # as the ingest nodes (and every variant of benchmarks/ingest_throughput.py): 2-3 us/event less
    result = run(
        receive_and_discard(
            args.eventhub_connection_string,
            args.eventhub,
            args.consumer_group,
            [p for p in args.partitions.split(",") if p],
            args.max_events,
            args.seconds,
            args.batch_size,
            args.prefetch,
            args.track_last_enqueued,
            args.live,
        ),
        args.event_loop,  # the nodes' loop: uvloop reads the same stream for 10-15 % less CPU
    )
    print(json.dumps(result), flush=True)  # noqa: T201 - read by the runner
    return 0
