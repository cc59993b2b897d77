"""The Event Hubs providers and fixtures against the real azure-eventhub SDK (client retries off)."""

from __future__ import annotations

import threading

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


def send(cs: str, bodies: list[str]) -> None:
    with EventHubProducerClient.from_connection_string(cs, retry_total=0) as producer:
        batch = producer.create_batch()
        for body in bodies:
            batch.add(EventData(body))
        producer.send_batch(batch)


def receive_all(cs: str, expected: int, timeout: float = 20.0) -> list[str]:
    got: list[str] = []
    done = threading.Event()

    def on_event(_ctx, event) -> None:  # type: ignore[no-untyped-def]
        if event is not None:
            got.append(event.body_as_str())
        if len(got) >= expected:
            done.set()

    client = EventHubConsumerClient.from_connection_string(cs, "$Default", retry_total=0)
    worker = threading.Thread(
        target=client.receive, kwargs={"on_event": on_event, "starting_position": "-1", "max_wait_time": 0.5},
        daemon=True,
    )  # fmt: skip
    worker.start()
    try:
        wait_until(done.is_set, timeout, lambda: f"{len(got)} of {expected} events: {got[:5]}")
    finally:
        client.close()
        worker.join(10)
    return got


def test_fresh_hubs_are_distinct_and_empty(eventhubs, eventhub) -> None:
    assert eventhub.name != eventhubs.default_hub
    send(eventhub.connection_string, ["a", "b", "c"])
    assert sorted(receive_all(eventhub.connection_string, 3)) == ["a", "b", "c"]
    with EventHubProducerClient.from_connection_string(eventhub.connection_string, retry_total=0) as p:
        assert len(p.get_partition_ids()) == eventhub.partitions


def test_another_test_gets_another_hub(eventhubs, eventhub) -> None:
    with EventHubConsumerClient.from_connection_string(eventhub.connection_string, "$Default") as c:
        props = [c.get_partition_properties(pid) for pid in c.get_partition_ids()]
    assert all(p["is_empty"] for p in props), props


def test_emulator_process_survives_kill_9_with_its_data_dir(eventhubs_process) -> None:
    server = eventhubs_process(partitions=2)
    cs = server.namespace().connection_string_for("eh1")
    first_pid = server.pid
    send(cs, [f"before-{i}" for i in range(5)])
    server.kill()
    assert not server.running
    server.restart()
    assert server.pid != first_pid and server.namespace().connection_string_for("eh1") == cs
    send(cs, ["after"])
    got = receive_all(cs, 6)
    assert sorted(got) == sorted([f"before-{i}" for i in range(5)] + ["after"])


def test_emulator_process_terminates_cleanly(eventhubs_process) -> None:
    server = eventhubs_process(partitions=1)
    assert server.terminate() == 0
