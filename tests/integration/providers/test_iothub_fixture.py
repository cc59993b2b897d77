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


def partition_properties(cs: str) -> dict[str, dict]:
    """Each partition's properties (last enqueued sequence number, ...) as the built-in endpoint says."""
    with EventHubConsumerClient.from_connection_string(cs, "$Default", retry_total=0) as client:
        return {p: client.get_partition_properties(p) for p in client.get_partition_ids()}


def test_device_factory_and_built_in_endpoint(iothub) -> None:
    # The hub is session-scoped: earlier tests (e2e fleets) may have left hundreds of events on a partition.
    # Read only what comes after them: the sync consumer, not in batch mode and with max_wait_time, hands
    # over at most one buffered event per max_wait_time per partition, so an event queued behind ~400 older
    # ones would take minutes to reach on_event.
    before = partition_properties(iothub.eventhub_connection_string)
    start = {p: props["last_enqueued_sequence_number"] for p, props in before.items()}

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
    seen: dict[str, int] = {}  # events handed to on_event, per partition
    errors: list[str] = []

    def on_event(ctx, event) -> None:  # type: ignore[no-untyped-def]
        if event is None:
            return
        seen[ctx.partition_id] = seen.get(ctx.partition_id, 0) + 1
        if event.message_id in (f"{device_id}-1", f"{device_id}-1".encode()):
            got.append((event.body_as_str(), event.system_properties.get(b"iothub-connection-device-id")))

    def on_error(ctx, error) -> None:  # type: ignore[no-untyped-def]
        errors.append(f"partition {getattr(ctx, 'partition_id', None)}: {error!r}")

    def observed() -> str:
        try:
            after: object = {
                p: {k: props[k] for k in ("last_enqueued_sequence_number", "is_empty")}
                for p, props in partition_properties(iothub.eventhub_connection_string).items()
            }
        except Exception as exc:  # describing, not checking
            after = repr(exc)
        return (
            f"no event with message id {device_id}-1 on {iothub.eventhub_name}; started after sequence "
            f"numbers {start}; partitions now {after}; events handed over per partition {seen}; "
            f"consumer errors {errors}"
        )

    consumer = EventHubConsumerClient.from_connection_string(iothub.eventhub_connection_string, "$Default")
    kwargs = {
        "on_event": on_event,
        "on_error": on_error,
        "starting_position": start,
        "starting_position_inclusive": False,
        "max_wait_time": 0.5,
    }
    worker = threading.Thread(target=consumer.receive, kwargs=kwargs, daemon=True)
    worker.start()
    try:
        wait_until(lambda: got, 30, observed)
    finally:
        consumer.close()
        worker.join(10)
    assert got[0][0] == "hello" and got[0][1] in (device_id, device_id.encode())
