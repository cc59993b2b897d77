"""The ``iothub`` fixture: a device connection string from its factory works with the real azure-iot-device
client, and the message arrives on the hub's built-in Event Hubs endpoint for the real azure-eventhub."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from azure.eventhub import EventHubConsumerClient
from azure.iot.device import IoTHubDeviceClient, Message

from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


def test_device_factory_and_built_in_endpoint(iothub) -> None:
    device_id = iothub.new_device_id("fixture")
    cs = iothub.device_connection_string(device_id)
    pem = Path(iothub.ca_cert).read_text() if iothub.ca_cert else None
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=pem, connection_retry=False
    )
    try:
        client.connect()
        msg = Message("hello")
        msg.message_id = f"{device_id}-1"
        client.send_message(msg)
    finally:
        client.shutdown()

    got: list[tuple[str, object]] = []

    def on_event(_ctx, event) -> None:  # type: ignore[no-untyped-def]
        if event is not None and event.message_id in (f"{device_id}-1", f"{device_id}-1".encode()):
            got.append((event.body_as_str(), event.system_properties.get(b"iothub-connection-device-id")))

    consumer = EventHubConsumerClient.from_connection_string(iothub.eventhub_connection_string, "$Default")
    kwargs = {"on_event": on_event, "starting_position": "-1", "max_wait_time": 0.5}
    worker = threading.Thread(target=consumer.receive, kwargs=kwargs, daemon=True)
    worker.start()
    try:
        wait_until(
            lambda: got, 30, lambda: f"no event with message id {device_id}-1 on {iothub.eventhub_name}"
        )
    finally:
        consumer.close()
        worker.join(10)
    assert got[0][0] == "hello" and got[0][1] in (device_id, device_id.encode())
