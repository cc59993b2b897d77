"""The raw and SDK producers against the in-process emulator, read back with the real SDK consumer."""

from __future__ import annotations

import threading
import time

import pytest
from azure.eventhub import EventHubConsumerClient

from enginehub.loadtests.clients import NoOpEvent, RecordingEvent, measure
from enginehub.loadtests.clients.eventhub import (
    AmqpError,
    RawProducer,
    SdkProducer,
    encode_event,
    parse_connection_string,
)

pytestmark = pytest.mark.integration


def read_partition(cs: str, partition: str, want: int, timeout: float = 20.0) -> list:
    """Receive from the start of one partition until ``want`` events arrived (bounded)."""
    got: list = []
    done = threading.Event()
    client = EventHubConsumerClient.from_connection_string(cs, "cg1")

    def on_batch(_ctx, events):
        got.extend(events)
        if len(got) >= want:
            done.set()

    worker = threading.Thread(
        target=client.receive_batch,
        kwargs={
            "on_event_batch": on_batch,
            "partition_id": partition,
            "starting_position": "-1",
            "max_wait_time": 0.2,
        },
        daemon=True,
    )
    worker.start()
    done.wait(timeout)
    client.close()
    worker.join(10)
    assert len(got) >= want, f"received {len(got)} of {want} events within {timeout} s"
    return got


def test_raw_producer_batches_arrive_in_order_with_ids_bodies_and_properties(emulator):
    cs = emulator.connection_string_for("eh1")
    rec = RecordingEvent()
    with RawProducer(cs, partition_id="1", request_event=rec) as producer:
        for b in range(3):
            producer.send_batch(
                [encode_event(f"body {b}-{i}".encode(), f"id-{b}-{i}", {"n": i}) for i in range(100)]
            )
        # a batch bigger than one 64 KiB frame is split into several transfer frames
        big = [encode_event(b"x" * 1000, f"big-{i}") for i in range(200)]
        producer.send_batch(big)
    events = read_partition(cs, "1", 500)
    assert [e.message_id for e in events[:3]] == ["id-0-0", "id-0-1", "id-0-2"]
    assert events[150].body_as_str() == "body 1-50"
    assert events[150].properties == {b"n": 50}
    assert events[-1].message_id == "big-199" and len(events[-1].body_as_str()) == 1000
    assert [e.sequence_number for e in events] == list(range(500))
    assert len(rec.fired) == 4 and not rec.failures()
    assert [f["response_length"] for f in rec.fired] == [100, 100, 100, 200]
    assert {f["name"] for f in rec.fired} == {"eh.raw send_batch"}


def test_raw_producer_to_the_hub_round_robins_batches(emulator):
    cs = emulator.connection_string_for("eh1")
    with RawProducer(cs) as producer:
        for b in range(4):
            producer.send_batch([encode_event(b"x", f"rr-{b}-{i}") for i in range(10)])
    counts = {p: read_partition(cs, p, 20) for p in ("0", "1")}
    assert {p: len(v) for p, v in counts.items()} == {"0": 20, "1": 20}


def test_raw_producer_reports_refusals(emulator):
    cs = emulator.connection_string_for("eh1")
    rec = RecordingEvent()
    wrong_key = cs.replace("SharedAccessKey=", "SharedAccessKey=x")
    with pytest.raises(AmqpError, match="401"):
        RawProducer(wrong_key, timeout=5).open()
    with pytest.raises(AmqpError, match="not-found"):
        RawProducer(cs, "nohub", timeout=5).open()
    with pytest.raises(AmqpError, match="not-found"):
        RawProducer(cs, partition_id="7", timeout=5).open()
    with RawProducer(cs, partition_id="0", request_event=rec, timeout=5) as producer:
        with pytest.raises(AmqpError, match="message-size-exceeded"):
            producer.send_batch([encode_event(b"y" * 600_000, f"huge-{i}") for i in range(2)])
        assert rec.failures() and rec.failures()[0]["response_length"] == 2
        producer.send_batch([encode_event(b"ok", "after-refusal")])  # the link survives a rejected batch
    assert read_partition(cs, "0", 1)[0].message_id == "after-refusal"


def test_raw_producer_times_out_against_a_silent_peer():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        cs = f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=eh1"
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            RawProducer(cs, timeout=0.5).open()
        assert time.monotonic() - t0 < 5
    finally:
        server.close()


def test_sdk_producer_sends_batches_with_message_ids(emulator):
    cs = emulator.connection_string_for("eh1")
    rec = RecordingEvent()
    producer = SdkProducer(cs, partition_id="0", request_event=rec)
    try:
        producer.send_batch([b"a", b"b", b"c"], ["m-1", "m-2", "m-3"])
    finally:
        producer.close()
    events = read_partition(cs, "0", 3)
    assert [(e.message_id, e.body_as_str()) for e in events] == [("m-1", "a"), ("m-2", "b"), ("m-3", "c")]
    assert rec.fired[0]["name"] == "eh.sdk send_batch" and rec.fired[0]["response_length"] == 3


def test_measure_reports_success_and_failure_once():
    rec = RecordingEvent()
    with measure(rec, "amqp", "x") as m:
        m.response_length = 5
    with pytest.raises(ValueError), measure(rec, "amqp", "x"):
        raise ValueError("boom")
    assert [f["exception"] is None for f in rec.fired] == [True, False]
    assert rec.fired[0]["response_length"] == 5 and rec.fired[0]["response_time"] >= 0
    with measure(NoOpEvent(), "amqp", "x"):
        pass


def test_parse_connection_string():
    info = parse_connection_string(
        "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=p;SharedAccessKey=k=;UseDevelopmentEmulator=true",
        "eh1",
    )
    assert (info.host, info.port, info.policy, info.key, info.eventhub, info.emulator) == (
        "127.0.0.1",
        5673,
        "p",
        "k=",
        "eh1",
        True,
    )
    with pytest.raises(ValueError, match="EntityPath"):
        parse_connection_string("Endpoint=sb://h;SharedAccessKeyName=p;SharedAccessKey=k")


def test_raw_producer_reconnects_after_the_emulator_restarts(eventhubs_process):
    server = eventhubs_process(partitions=2)
    cs = server.connection_string + ";EntityPath=eh1"
    rec = RecordingEvent()
    producer = RawProducer(cs, partition_id="0", request_event=rec, timeout=5)
    try:
        producer.send_batch([encode_event(b"a", "before")])
        server.kill()
        with pytest.raises((OSError, AmqpError)):
            producer.send_batch([encode_event(b"b", "while-down")])
        server.restart()
        producer.send_batch([encode_event(b"c", "after")])  # a fresh connection, same producer object
    finally:
        producer.close()
    assert [f["exception"] is None for f in rec.fired] == [True, False, True]
    client = EventHubConsumerClient.from_connection_string(cs, "$Default")
    try:
        props = client.get_partition_properties("0")
    finally:
        client.close()
    assert props["last_enqueued_sequence_number"] == 1  # 'before' and 'after'; nothing from the failed send
