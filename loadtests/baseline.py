"""The SDK receive baseline: bare ``EventHubConsumerClient`` (aio) receive-and-discard, no sink, no rules.

``python -m enginehub.loadtests baseline-receive --partitions 0,2 ...`` is one process; the runner starts as
many as there are ingest nodes, each on its share of the partitions, against the same emulator and a
backlog there (the events the load run left, or with ``--target-rate auto`` a backlog written first by
:func:`prefill`), so the figure is what the SDK alone can read on this machine. Each process prints one
JSON line: events received and seconds from its first event to its last (or the time limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

LOG = logging.getLogger(__name__)


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
) -> dict[str, Any]:
    from azure.eventhub.aio import EventHubConsumerClient

    client = EventHubConsumerClient.from_connection_string(
        connection_string, consumer_group, eventhub_name=eventhub
    )
    count = 0
    first: float | None = None
    last = 0.0
    cpu_first = cpu_last = 0.0
    first_batch = 0
    done = asyncio.Event()

    async def on_batch(ctx: Any, events: list[Any]) -> None:
        nonlocal count, first, last, cpu_first, cpu_last, first_batch
        if not events:
            return
        now = time.monotonic()
        if first is None:
            first, cpu_first, first_batch = now, time.process_time(), len(events)
        count += len(events)
        last, cpu_last = now, time.process_time()
        if count >= max_events:
            done.set()

    async with client:
        tasks = [
            asyncio.create_task(
                client.receive_batch(
                    on_event_batch=on_batch,
                    partition_id=p,
                    starting_position="-1",
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
    return {
        "events": count,
        "seconds": round(elapsed, 3),
        "events_per_s": round(count / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_us_per_event": round((cpu_last - cpu_first) / after_first * 1e6, 1) if after_first > 0 else None,
    }


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
        ),
        args.event_loop,  # the nodes' loop: uvloop reads the same stream for 10-15 % less CPU
    )
    print(json.dumps(result), flush=True)  # noqa: T201 - read by the runner
    return 0
