"""The real azure-eventhub SDK (sync clients, pyamqp) against the emulator: the SDK is the oracle."""

from __future__ import annotations

import time

import pytest
from azure.eventhub import EventData, EventHubConsumerClient
from azure.eventhub.exceptions import AuthenticationError, ConnectError, EventDataSendError
from eh_sdk_helpers import Running, poll, producer, receive

pytestmark = pytest.mark.integration


def test_properties_and_partition_properties(eh: Running) -> None:
    with producer(eh.cs) as p:
        props = p.get_eventhub_properties()
        assert props["eventhub_name"] == "eh1"
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        part = p.get_partition_properties("2")
        assert part["id"] == "2" and part["is_empty"] is True
        assert part["last_enqueued_sequence_number"] == -1 and part["last_enqueued_offset"] == "-1"
        p.send_batch([EventData(b"x")], partition_id="2")
        part = p.get_partition_properties("2")
        assert part["is_empty"] is False and part["last_enqueued_sequence_number"] == 0
        assert part["last_enqueued_offset"] == "0"
        assert part["last_enqueued_time_utc"].year >= 2024
    # the SDK opens a connection per operation: all of them are gone once the client closed
    poll(
        lambda: eh.thread.call(lambda: len(eh.emulator.connections)) == 0,
        10,
        "every connection to be released",
    )


def test_batch_single_key_and_properties_round_trip(eh: Running) -> None:
    with producer(eh.cs) as p:
        batch = p.create_batch(partition_id="1")
        for i in range(3):
            ev = EventData(f"event-{i}")
            ev.properties = {"unit": i, "name": "engine", "ratio": 0.5, "flag": True}
            ev.message_id = f"m-{i}"
            ev.content_type = "text/plain"
            ev.correlation_id = "corr"
            batch.add(ev)
        p.send_batch(batch)
        p.send_event(EventData("keyed"), partition_key="unit-7")
        p.send_event(EventData("to-1"), partition_id="1")
        key_partition = None
        for pid in p.get_partition_ids():
            if p.get_partition_properties(pid)["last_enqueued_sequence_number"] >= 0 and pid != "1":
                key_partition = pid
    events = receive(eh.cs, partition_id="1", expect=4)
    assert [e.body_as_str() for e in events[:4]] == ["event-0", "event-1", "event-2", "to-1"]
    assert [e.sequence_number for e in events[:4]] == [0, 1, 2, 3]
    offsets = [int(e.offset) for e in events[:4]]
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(set(offsets)) == 4
    first = events[0]
    assert first.properties == {b"unit": 0, b"name": b"engine", b"ratio": 0.5, b"flag": True}
    assert first.message_id == "m-0" and first.content_type == "text/plain" and first.correlation_id == "corr"
    assert first.enqueued_time is not None and first.partition_key is None
    keyed = receive(eh.cs, partition_id=key_partition or "0", expect=1)
    assert keyed[0].body_as_str() == "keyed" and keyed[0].partition_key == b"unit-7"


def test_partition_key_is_stable(eh: Running) -> None:
    with producer(eh.cs) as p:
        for _ in range(3):
            p.send_event(EventData("same key"), partition_key="engine-42")
        counts = {pid: p.get_partition_properties(pid)["last_enqueued_sequence_number"] for pid in "0123"}
    assert sorted(counts.values()) == [-1, -1, -1, 2], counts


def _seed(cs: str, n: int = 5, partition_id: str = "0") -> list[EventData]:
    """``n`` events, each enqueued in a later millisecond than the one before (the emulator stamps with the
    wall clock in ms; on an idle machine five sync round trips on loopback can fit in one millisecond)."""
    with producer(cs) as p:
        for i in range(n):
            p.send_event(EventData(f"e{i}"), partition_id=partition_id)
            acked = int(time.time() * 1000)  # at or after the event's stamp: the server stamped before acking
            poll(lambda t=acked: int(time.time() * 1000) > t, 1, "the wall clock to pass a millisecond")
    return receive(cs, partition_id=partition_id, expect=n)


def test_start_positions_inclusive_and_exclusive(eh: Running) -> None:
    events = _seed(eh.cs)
    cs = eh.cs
    seqs = lambda evs: [e.sequence_number for e in evs]  # noqa: E731
    assert seqs(receive(cs, starting_position=2, inclusive=False, expect=2)) == [3, 4]
    assert seqs(receive(cs, starting_position=2, inclusive=True, expect=3)) == [2, 3, 4]
    off = events[1].offset
    assert seqs(receive(cs, starting_position=off, inclusive=False, expect=3)) == [2, 3, 4]
    assert seqs(receive(cs, starting_position=off, inclusive=True, expect=4)) == [1, 2, 3, 4]
    when = events[3].enqueued_time
    first = receive(cs, starting_position=when, inclusive=True, expect=1)[0]
    assert first.enqueued_time == when  # the first event enqueued at or after `when`
    assert all(e.enqueued_time < when for e in events[: first.sequence_number])
    start = events[0].enqueued_time
    assert events[4].enqueued_time > start, "seed events all share one millisecond"
    after = receive(cs, starting_position=start, inclusive=False, expect=1)[0]
    assert after.enqueued_time > start
    assert all(e.enqueued_time <= start for e in events[: after.sequence_number])
    assert seqs(receive(cs, starting_position="-1", expect=5)) == [0, 1, 2, 3, 4]


def test_latest_only_sees_new_events(eh: Running) -> None:
    _seed(eh.cs, n=2)

    def send_after_attach() -> None:
        poll(lambda: eh.receivers() == 1, 10, "the consumer link to attach")
        with producer(eh.cs) as p:
            p.send_event(EventData("new"), partition_id="0")

    got = receive(eh.cs, starting_position="@latest", expect=1, on_started=send_after_attach)
    assert [e.body_as_str() for e in got] == ["new"] and got[0].sequence_number == 2


def test_bad_key_raises_authentication_error_fast(eh: Running) -> None:
    bad = eh.cs.replace("SharedAccessKey=", "SharedAccessKey=wrong")
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError), producer(bad) as p:
        p.get_eventhub_properties()
    assert time.monotonic() - t0 < 5


def test_oversize_send_raises_event_data_send_error(eh: Running) -> None:
    with producer(eh.cs) as p, pytest.raises(EventDataSendError, match="exceeds the limit"):
        p.send_event(EventData(b"x" * (1024 * 1024 + 10)))
    with producer(eh.cs) as p:  # the server is fine afterwards
        p.send_event(EventData(b"y" * 200_000), partition_id="3")  # multi-frame at 64 KiB frames
    got = receive(eh.cs, partition_id="3", expect=1)
    assert got[0].body_as_str() == "y" * 200_000


def test_unknown_hub_raises_promptly(eh: Running) -> None:
    cs = eh.emulator.connection_string_for("nope")
    t0 = time.monotonic()
    with pytest.raises(ConnectError), producer(cs) as p:
        p.get_eventhub_properties()
    assert time.monotonic() - t0 < 5


def test_unknown_consumer_group_is_reported(eh: Running) -> None:
    errors: list[Exception] = []
    client = EventHubConsumerClient.from_connection_string(eh.cs, consumer_group="nope", retry_total=0)
    import threading

    worker = threading.Thread(
        target=client.receive,
        kwargs=dict(on_event=lambda c, e: None, on_error=lambda c, e: errors.append(e), partition_id="0"),
        daemon=True,
    )
    worker.start()
    try:
        poll(lambda: errors, 15, "an error for the unknown consumer group")
    finally:
        client.close()
        worker.join(15)
    assert "could not be found" in str(errors[0]) or "not-found" in str(errors[0]).lower()


def test_epoch_steal_closes_the_old_receiver_with_ownership_lost(eh: Running) -> None:
    import threading

    from azure.eventhub import CloseReason

    reasons: list[object] = []
    errors: list[Exception] = []
    first = EventHubConsumerClient.from_connection_string(eh.cs, consumer_group="$Default", retry_total=0)
    worker = threading.Thread(
        target=first.receive,
        kwargs=dict(
            on_event=lambda c, e: None,
            on_error=lambda c, e: errors.append(e),
            on_partition_close=lambda c, r: reasons.append(r),
            partition_id="0",
            owner_level=1,
        ),
        daemon=True,
    )
    worker.start()
    try:
        poll(lambda: eh.receivers() == 1, 10, "the first epoch receiver")

        def second_started() -> None:
            poll(lambda: reasons, 15, "the first receiver to be closed")

        with producer(eh.cs) as p:
            p.send_event(EventData("after steal"), partition_id="0")
        receive(eh.cs, expect=1, owner_level=1, on_started=second_started)
    finally:
        first.close()
        worker.join(15)
    assert CloseReason.OWNERSHIP_LOST in reasons, (reasons, errors)
    assert any("stolen" in str(e) for e in errors), errors


def test_retention_moves_the_beginning_sequence_number() -> None:
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator

    config = EmulatorConfig.simple(hubs=["eh1"], partitions=1, retention_seconds=1)
    with EmulatorThread(EventHubsEmulator(config, port=0, http_port=None)) as emulator:
        cs = emulator.connection_string_for("eh1")
        with producer(cs) as p:
            p.send_batch([EventData("old-1"), EventData("old-2")])
            poll(
                lambda: p.get_partition_properties("0")["beginning_sequence_number"] == 2,
                15,
                "retention to trim the two old events",
            )
            p.send_event(EventData("fresh"))
        got = receive(cs, starting_position="-1", expect=1)
        assert got[0].body_as_str() == "fresh" and got[0].sequence_number == 2
