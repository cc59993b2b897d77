"""End to end: REAL azure-iot-device -> IoT Hub emulator -> built-in endpoint -> REAL azure-eventhub."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from azure.eventhub.aio import EventHubConsumerClient
from azure.iot.device import Message
from azure.iot.device.aio import IoTHubDeviceClient

from enginehub.harness.bridge import LocalIotHub
from enginehub.harness.iothub.state import AUTH_METHOD_SAS
from enginehub.harness.iothub.testing import free_loopback_ip

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack():
    s = LocalIotHub(host=free_loopback_ip(), partitions=4)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def _receive(cs: str, count: int, timeout: float = 20.0) -> list:
    events: list = []
    done = asyncio.Event()

    async def on_event(ctx, event):
        if event is not None:
            events.append((ctx.partition_id, event))
            if len(events) >= count:
                done.set()

    consumer = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default")
    task = asyncio.create_task(consumer.receive(on_event, starting_position="-1"))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"expected {count} events, received {len(events)}") from None
    finally:
        await consumer.close()
        task.cancel()
    return events


async def test_telemetry_reaches_the_eventhubs_side_with_every_system_property(stack):
    hub = stack.iothub
    client = IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string("eng-0001"), server_verification_cert=hub.ca_pem, connection_retry=False
    )
    await client.connect()
    msg = Message(
        json.dumps({"unit": 1}),
        message_id="eng-0001-1",
        content_type="application/json",
        content_encoding="utf-8",
    )
    msg.correlation_id = "corr-9"
    msg.custom_properties = {"iothub-creation-time-utc": "2024-01-01T00:00:00Z", "a+b": "x y"}
    before_ms = int(time.time() * 1000)
    await client.send_message(msg)
    await client.send_message(Message("plain"))
    await client.shutdown()

    events = await _receive(stack.iothub_eventhub_connection_string, 2)
    (pid1, e1), (pid2, e2) = events
    assert pid1 == pid2 == stack.eventhubs.store.hub(stack.eventhub_name).partition_for_key("eng-0001")
    assert e1.body_as_str() == '{"unit": 1}'
    sp = e1.system_properties
    assert sp[b"message-id"] == b"eng-0001-1"
    assert sp[b"correlation-id"] == b"corr-9"
    assert sp[b"content-type"] == b"application/json"
    assert sp[b"content-encoding"] == b"utf-8"
    assert sp[b"iothub-connection-device-id"] == b"eng-0001"
    assert sp[b"iothub-connection-auth-method"] == AUTH_METHOD_SAS.encode()
    gen = hub.registry.get("eng-0001").generation_id
    assert sp[b"iothub-connection-auth-generation-id"] == gen.encode()
    assert sp[b"iothub-message-source"] == b"Telemetry"
    assert before_ms - 5000 <= sp[b"iothub-enqueuedtime"] <= int(time.time() * 1000) + 5000
    assert isinstance(sp[b"x-opt-sequence-number"], int)
    assert e1.properties == {b"iothub-creation-time-utc": b"2024-01-01T00:00:00Z", b"a+b": b"x y"}
    assert e1.partition_key is None  # the real built-in endpoint shows none
    assert e1.content_type == "application/json"
    assert e1.correlation_id == "corr-9"
    assert e1.message_id == "eng-0001-1"
    assert e2.body_as_str() == "plain"
    assert e2.sequence_number == e1.sequence_number + 1


async def test_devices_spread_over_partitions_and_order_is_kept_per_device(stack):
    hub = stack.iothub
    from enginehub.harness.iothub.rawclient import RawDevice

    devices = []
    for i in range(8):
        key = hub.registry.create(f"eng-{i}").primary_key
        d = RawDevice(hub.host, hub.hostname, f"eng-{i}", key, ssl_context=hub.certs.client_context())
        assert await d.connect() == 0
        devices.append(d)
    for n in range(5):
        await asyncio.gather(
            *(d.publish(f"{d.device_id}:{n}".encode(), {"$.mid": f"{d.device_id}-{n}"}) for d in devices)
        )
    for d in devices:
        await d.close()
    events = await _receive(stack.iothub_eventhub_connection_string, 40)
    per_device: dict[str, list[str]] = {}
    partitions = set()
    for pid, e in events:
        dev = e.system_properties[b"iothub-connection-device-id"].decode()
        per_device.setdefault(dev, []).append(e.body_as_str())
        partitions.add(pid)
    assert all(v == [f"{k}:{n}" for n in range(5)] for k, v in per_device.items())
    assert len(per_device) == 8
    assert len(partitions) > 1
