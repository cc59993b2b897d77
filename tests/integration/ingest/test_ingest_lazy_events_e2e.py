"""``ingest`` with its received events built lazily (the default) stores exactly what ``--no-lazy-events``
(the SDK's own ``EventData``) stores: the same rows, metadata and dead letters, through the real SDK on both
sides and the sink worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubProducerClient

from enginehub.ingest.testing import (
    EVENTHUB,
    consumer_args,
    message_id,
    poll,
    row_count,
    seed_line,
    sqlite_query,
)

pytestmark = pytest.mark.integration

N = 300


def _produce(connection_string: str) -> None:
    """Events with every section a user sets: ids, content types, correlation ids, application properties,
    partition keys, and one body that is not a seed line (a dead letter)."""
    with EventHubProducerClient.from_connection_string(connection_string, eventhub_name=EVENTHUB) as producer:
        for key in (None, "engine-7"):
            batch = producer.create_batch(partition_key=key)
            for i in range(N // 2):
                k = i + (N // 2 if key else 0)
                event = EventData(b"{not json" if k == 17 else seed_line(1 + k % 5, 1 + k // 5).encode())
                event.message_id = message_id(1 + k % 5, 1 + k // 5)
                if k % 3 == 0:
                    event.content_type = "text/plain"
                    event.correlation_id = f"corr-{k}"
                event.properties = {"k": k, "site": "lab", "flag": k % 2 == 0}
                batch.add(event)
            producer.send_batch(batch)


def _stored(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    rows = sqlite_query(
        db, "SELECT id, partition_context, event_metadata, ts, payload FROM enginehub_events ORDER BY id"
    )
    dead = sqlite_query(
        db,
        'SELECT target_table, id, eventhub, consumer_group, partition_id, sequence_number, "offset", '
        "enqueued_time, reason, raw FROM enginehub_dead_letters ORDER BY id",
    )
    return rows, dead


def test_lazy_events_store_what_the_sdks_events_store(emulator, consumers, tmp_path: Path) -> None:
    _produce(emulator.connection_string)
    stored = {}
    # one node after the other: both would open epoch receivers on the same partitions
    for name, flags in (("lazy", []), ("eager", ["--no-lazy-events"])):
        db = tmp_path / f"{name}.db"
        node = consumers(consumer_args(emulator, db, "--checkpoint-interval", "0", *flags), name=name)
        poll(
            lambda: row_count(db) == N - 1 and row_count(db, "enginehub_dead_letters") == 1,  # noqa: B023
            60,
            lambda: f"{row_count(db)} rows; log:\n{node.tail()}",  # noqa: B023
        )
        node.terminate()
        assert node.wait(30) == 0, node.tail()
        stored[name] = _stored(db)
        assert ("the SDK's wrapper built on first use" in node.log.read_text()) is (name == "lazy")
    rows, dead = stored["lazy"]
    assert len(rows) == N - 1 and len(dead) == 1
    assert any('"corr-3"' in r[2] for r in rows)  # the metadata carries what was set
    assert stored["lazy"] == stored["eager"]
