"""``$management`` READ of event hub and partition properties (every key the SDKs read)."""

from __future__ import annotations

from typing import Any

from enginehub.harness.amqp.codec import Array, Int, Timestamp
from enginehub.harness.amqp.message import Message
from enginehub.harness.eventhubs.errors import ManagementError
from enginehub.harness.eventhubs.state import EventHubsStore

EVENTHUB_TYPE = "com.microsoft:eventhub"
PARTITION_TYPE = "com.microsoft:partition"


def handle_request(store: EventHubsStore, request: Message, authorized: bool) -> dict[str, Any]:
    """Answer one management request; raise ``ManagementError(status, description)`` on failure."""
    props = request.application_properties or {}
    operation = props.get("operation")
    entity_type = props.get("type")
    name = props.get("name")
    if not authorized:
        raise ManagementError(401, "Unauthorized: no valid token covers this management request.")
    if operation != "READ":
        raise ManagementError(
            405, f"Operation {operation!r} is not supported by the emulator's $management (only READ)."
        )
    if not isinstance(name, str):
        raise ManagementError(
            400, "Management request needs the event hub name in application property 'name'."
        )
    try:
        hub = store.hub(name)
    except KeyError:
        raise ManagementError(
            404, f"The messaging entity '{store.namespace}/{name}' could not be found."
        ) from None
    if entity_type == EVENTHUB_TYPE:
        return {
            "name": hub.name,
            "type": EVENTHUB_TYPE,
            "created_at": Timestamp(hub.created_at_ms),
            "partition_count": Int(len(hub.partition_ids)),
            "partition_ids": Array(hub.partition_ids, code=0xB1),
        }
    if entity_type == PARTITION_TYPE:
        pid = props.get("partition")
        partition = hub.partitions.get(str(pid)) if pid is not None else None
        if partition is None:
            raise ManagementError(404, f"Partition '{pid}' of event hub '{hub.name}' could not be found.")
        empty = partition.last_sequence_number < partition.begin_sequence_number
        return {
            "name": hub.name,
            "type": PARTITION_TYPE,
            "partition": partition.partition_id,
            "begin_sequence_number": partition.begin_sequence_number,
            "last_enqueued_sequence_number": partition.last_sequence_number,
            "last_enqueued_offset": str(partition.last_offset),
            "last_enqueued_time_utc": Timestamp(partition.last_enqueued_time_ms),
            "is_partition_empty": empty,
        }
    raise ManagementError(400, f"Unknown management entity type {entity_type!r}.")
