"""The device load clients against the IoT Hub emulator of ``harness up`` (a child process, TLS on :8883)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.eventhub import EventHubConsumerClient

from enginehub.loadtests.clients import RecordingEvent
from enginehub.loadtests.clients.mqtt_device import MqttError, RawMqttDevice, SdkDevice, device_key
from enginehub.loadtests.stack import HarnessUp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    up = HarnessUp(tmp_path_factory.mktemp("stack"), partitions=2)
    try:
        info = up.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield info
    finally:
        up.stop()


def device(stack: dict[str, Any], device_id: str, cls: Any = RawMqttDevice, **kw: Any) -> Any:
    key = kw.pop("key", None) or device_key(stack["device_group_key"], device_id)
    return cls(
        stack["iothub_gateway_host"], stack["iothub_hostname"], device_id, key, ca_cert=stack["ca_cert"], **kw
    )


def total_events(stack: dict[str, Any]) -> int:
    client = EventHubConsumerClient.from_connection_string(
        stack["iothub_eventhub_connection_string"], "$Default"
    )
    try:
        props = [client.get_partition_properties(p) for p in client.get_partition_ids()]
    finally:
        client.close()
    return sum(p["last_enqueued_sequence_number"] + 1 for p in props)


def test_raw_and_sdk_devices_send_and_every_ack_means_stored(stack):
    before = total_events(stack)
    rec = RecordingEvent()
    raw = device(stack, "lt-raw-1", request_event=rec).connect()
    try:
        for i in range(20):
            raw.send(b"1 1 0.1", f"raw-{i}")
        raw.send_many([(b"1 2 0.1", f"win-{i}") for i in range(50)])
    finally:
        raw.close()
    sdk = device(stack, "lt-sdk-1", SdkDevice, request_event=rec).connect()
    try:
        for i in range(3):
            sdk.send(b"1 3 0.1", f"sdk-{i}")
    finally:
        sdk.close()
    assert total_events(stack) - before == 73
    names = [f["name"] for f in rec.fired]
    assert names.count("d2c.connect") == 2
    assert names.count("d2c.send qos1") == 23 and names.count("d2c.send qos1 window") == 1
    assert not rec.failures()


def test_raw_device_with_a_wrong_key_is_refused(stack):
    rec = RecordingEvent()
    bad = device(
        stack, "lt-raw-2", key=device_key(stack["device_group_key"], "someone-else"), request_event=rec
    )
    with pytest.raises(MqttError, match="refused"):
        bad.connect()
    assert rec.failures() and rec.failures()[0]["name"] == "d2c.connect"
