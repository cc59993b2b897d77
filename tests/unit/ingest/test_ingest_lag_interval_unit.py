"""ConsumerOptions.lag_interval: the lag from periodic partition properties (no I/O: a fake client)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enginehub.ingest.consumer import ConsumerOptions, IngestConsumer
from enginehub.ingest.rules import load_rules
from enginehub.ingest.sinks.memory import MemorySink


class FakeClient:
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def get_partition_properties(self, pid: str) -> dict[str, Any]:
        self.calls.append(pid)
        if pid in self.fail:
            raise ConnectionError("management link down")
        return {"id": pid, "last_enqueued_sequence_number": 100 + int(pid)}


class Ctx:
    partition_id = "0"
    eventhub_name = "eh1"
    consumer_group = "$Default"

    @property
    def last_enqueued_event_properties(self) -> dict[str, Any]:
        raise AssertionError("the runtime metric must not be read with a lag interval")


def _consumer(**opts: Any) -> IngestConsumer:
    return IngestConsumer(lambda **kw: None, None, MemorySink(), load_rules(None), ConsumerOptions(**opts))


async def test_owned_partitions_get_their_lag_from_properties_and_a_failing_one_is_logged_once(
    caplog,
) -> None:
    consumer = _consumer(lag_interval=0.01)
    consumer.client = FakeClient(fail={"1"})
    consumer.metrics.owned.update({"0", "1"})
    await consumer._on_batch(Ctx(), [])  # an empty batch: no runtime metric is read
    task = asyncio.create_task(consumer._poll_lag())
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while consumer.client.calls.count("1") < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert consumer.metrics.partition("0").last_enqueued == 100
    assert consumer.metrics.partition("1").last_enqueued is None
    assert consumer.client.calls.count("1") >= 3
    failures = [r for r in caplog.records if "reading its properties for the lag failed" in r.getMessage()]
    assert len(failures) == 1


def test_lag_interval_validation() -> None:
    with pytest.raises(ValueError, match="lag interval"):
        ConsumerOptions(lag_interval=-1).validate()
    ConsumerOptions(lag_interval=0).validate()
