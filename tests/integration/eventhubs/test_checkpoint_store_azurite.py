"""Two aio EventHubConsumerClients with BlobCheckpointStore on a real Azurite: 4 partitions split 2/2; when
one closes, the other takes all 4 and resumes from the checkpoints (nothing lost, nothing re-read)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore
from eh_sdk_helpers import Running

pytestmark = pytest.mark.integration

PER_PARTITION = 5


async def apoll(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = condition()
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; observed {value!r}")
    return value


class Node:
    def __init__(self, name: str, cs: str, blob_cs: str, container: str) -> None:
        self.name = name
        self.events: list[tuple[str, int]] = []
        self.store = store = BlobCheckpointStore.from_connection_string(blob_cs, container)
        self.client = EventHubConsumerClient.from_connection_string(
            cs,
            consumer_group="$Default",
            checkpoint_store=store,
            load_balancing_interval=1,
            partition_ownership_expiration_interval=6,
            retry_total=0,
        )
        self.task: asyncio.Task[None] | None = None

    async def on_event(self, ctx: Any, event: EventData | None) -> None:
        if event is None:
            return
        self.events.append((ctx.partition_id, event.sequence_number))
        await ctx.update_checkpoint(event)

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.receive(on_event=self.on_event, starting_position="-1"))

    async def close(self) -> None:
        await self.client.close()
        if self.task is not None:
            self.task.cancel()
        await self.store.close()  # the store's aiohttp session


async def produce(cs: str, round_: int) -> set[tuple[str, int]]:
    async with EventHubProducerClient.from_connection_string(cs, retry_total=0) as p:
        for pid in "0123":
            await p.send_batch(
                [EventData(f"r{round_}-p{pid}-{i}") for i in range(PER_PARTITION)], partition_id=pid
            )
    return {(pid, round_ * PER_PARTITION + i) for pid in "0123" for i in range(PER_PARTITION)}


async def test_two_consumers_split_then_one_takes_over(
    eh: Running, azurite: Any, checkpoint_container: str
) -> None:
    cs = eh.cs
    produced = await produce(cs, 0)
    a = Node("a", cs, azurite.connection_string, checkpoint_container)
    b = Node("b", cs, azurite.connection_string, checkpoint_container)
    a.start()
    b.start()
    try:

        def split() -> dict[str, int] | None:
            owners = collections.Counter(v for v in azurite.ownership(checkpoint_container).values() if v)
            return dict(owners) if sorted(owners.values()) == [2, 2] else None

        await apoll(split, 30, "a 2/2 ownership split")
        await apoll(lambda: set(a.events) | set(b.events) >= produced, 30, "every first-round event")
        stable_a, stable_b = len(a.events), len(b.events)
        produced |= await produce(cs, 1)
        await apoll(lambda: set(a.events) | set(b.events) >= produced, 30, "every second-round event")
        second_round = a.events[stable_a:] + b.events[stable_b:]
        assert len(second_round) == len(set(second_round)) == 4 * PER_PARTITION, "re-read while balanced"
        assert {p for p, _ in a.events[stable_a:]}.isdisjoint({p for p, _ in b.events[stable_b:]})

        await b.close()  # graceful: releases its ownership
        before = len(a.events)

        def a_owns_all() -> bool:
            owners = azurite.ownership(checkpoint_container)
            return len(owners) == 4 and len({v for v in owners.values() if v}) == 1 and all(owners.values())

        await apoll(a_owns_all, 30, "the remaining consumer to own all 4 partitions")
        produced |= await produce(cs, 2)
        await apoll(lambda: set(a.events) | set(b.events) >= produced, 30, "every third-round event")
        after = a.events[before:]
        assert sorted(after) == sorted(
            {(p, 2 * PER_PARTITION + i) for p in "0123" for i in range(PER_PARTITION)}
        )
    finally:
        await b.close()
        await a.close()
    assert set(a.events) | set(b.events) == produced  # nothing lost
