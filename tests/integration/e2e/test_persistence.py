"""Persistence: the Event Hubs emulator runs as a child process with a data dir; it is killed with SIGKILL
mid-stream and restarted on the same port. The producer reconnects and re-sends its unacknowledged batch,
the two ingest processes resume from their Azurite checkpoints: nothing is lost, no row is duplicated, and
the hub holds every event once (plus at most the re-sent batches, which the row identity absorbs)."""

from __future__ import annotations

import collections
import threading
import time
import uuid

import pytest
from azure.eventhub import EventHubConsumerClient

from enginehub.harness.testing.produce import StreamProducer, compare_table, expected_rows, message_id
from enginehub.harness.testing.sinks import count_rows, read_rows
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration

ROWS = 1600
RATE = 150.0
PARTITIONS = 4


def hub_message_ids(cs: str, expected: int, group: str, timeout: float = 60.0) -> collections.Counter[str]:
    """Read the hub from the start with a plain SDK consumer until ``expected`` distinct message ids came."""
    seen: collections.Counter[str] = collections.Counter()
    done = threading.Event()
    lock = threading.Lock()

    def on_event(_ctx, event) -> None:  # type: ignore[no-untyped-def]
        if event is None:
            return
        with lock:
            seen[event.message_id.decode() if isinstance(event.message_id, bytes) else event.message_id] += 1
            if len(seen) >= expected:
                done.set()

    client = EventHubConsumerClient.from_connection_string(cs, group, retry_total=0)
    worker = threading.Thread(
        target=client.receive, kwargs={"on_event": on_event, "starting_position": "-1", "max_wait_time": 0.5},
        daemon=True,
    )  # fmt: skip
    worker.start()
    try:
        wait_until(
            done.is_set, timeout, lambda: f"{sum(seen.values())} events read, {len(seen)} distinct ids"
        )
    finally:
        client.close()
        worker.join(10)
    return seen


def test_kill_9_eventhubs_mid_stream_consumers_resume_no_loss_no_duplicates(
    eventhubs_process, azurite, checkpoint_container, ingest_node, fd001_rows, sink_url: str
) -> None:
    rows = fd001_rows[3000 : 3000 + ROWS]
    run_id = f"ps{uuid.uuid4().hex[:6]}"
    sink = sink_url
    server = eventhubs_process(partitions=PARTITIONS, consumer_groups=("verify",))
    cs = server.namespace().connection_string_for("eh1")
    nodes = [
        ingest_node(
            name=f"node-{i}",
            eventhub_connection_string=cs,
            sink=sink,
            checkpoint_store=azurite.connection_string,
            checkpoint_container=checkpoint_container,
        )
        for i in range(2)
    ]
    producer = StreamProducer(cs, rows, run_id, rate=RATE, outage_timeout=60).start()

    def observed() -> str:
        logs = "\n".join(
            f"--- {n.name} ({'up' if n.running else n.returncode}):\n{n.log_tail(8)}" for n in nodes
        )
        return (
            f"rows {count_rows(sink)}/{ROWS}, producer {producer.describe()}, emulator "
            f"{'up' if server.running else 'down'} (starts {server.starts})\n{logs}\n"
            f"--- emulator:\n{server.log_tail(8)}"
        )

    wait_until(lambda: count_rows(sink) >= ROWS // 4, 90, observed, interval=0.2)
    acked_before, rows_before = producer.acked, count_rows(sink)
    assert not producer.done and acked_before < ROWS, f"the stream ended before the kill: {observed()}"
    server.kill()
    t0 = time.monotonic()
    assert not server.running
    # stay down until the producer has seen a send fail (so a batch is re-sent with the same ids)
    wait_until(lambda: producer.errors, 20, observed, interval=0.05)
    server.restart()
    down = time.monotonic() - t0
    print(f"emulator down {down:.2f} s; at the kill: {acked_before} acked, {rows_before} rows")

    producer.join(120)
    wait_until(lambda: count_rows(sink) >= ROWS, 90, observed, interval=0.2)
    problems = compare_table(read_rows(sink), expected_rows(rows, run_id))
    assert not problems, f"{problems}\n{observed()}"
    assert all(n.running for n in nodes), f"an ingest node died instead of resuming:\n{observed()}"
    assert producer.resent_batches >= 1, producer.describe()

    # the hub itself: every acked event survived the SIGKILL, and copies only come from re-sent batches
    seen = hub_message_ids(cs, ROWS, "verify")  # its own consumer group: the nodes hold $Default
    ids = {message_id(run_id, r) for r in rows}
    assert ids <= set(seen), f"{len(ids - set(seen))} events missing from the hub after the restart"
    copies = sum(seen.values()) - len(seen)
    print(
        f"hub: {sum(seen.values())} events, {copies} extra copies, {producer.resent_batches} re-sent batches"
    )
    assert copies <= producer.resent_batches * producer.batch, (copies, producer.describe())
