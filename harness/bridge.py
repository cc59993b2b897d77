"""IoT Hub telemetry -> the built-in Event Hubs-compatible endpoint (the Event Hubs emulator), in-process.

:class:`EventHubsRouter` implements the IoT Hub emulator's ``TelemetryRouter``: each message becomes one
stored AMQP message with the shape a real hub produces (iot-hub-devguide-messages-construct):

- body: one ``data`` section, the MQTT payload;
- properties: message-id, correlation-id, user-id, content-type, content-encoding, absolute-expiry-time, to;
- application-properties: the custom properties (and ``mqtt-retain``, ``iothub-MessageType``);
- message-annotations: iothub-connection-device-id, iothub-connection-auth-method,
  iothub-connection-auth-generation-id, iothub-enqueuedtime (timestamp), iothub-message-source=Telemetry,
  dt-dataschema / dt-subject when given.

The partition is ``hub.partition_for_key(device_id)`` (a stable hash, not byte-identical to Azure's), but
no partition key is stored: the real built-in endpoint shows none. ``route`` must run on the emulators'
event loop thread (both emulators share one loop); it returns once the append has returned (durable).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from enginehub.harness.amqp.codec import Timestamp
from enginehub.harness.eventhubs.message import encode_event
from enginehub.harness.eventhubs.server import EventHubsEmulator
from enginehub.harness.iothub.server import Telemetry

LOG = logging.getLogger(__name__)

_PROPERTY_FIELDS = {
    "message-id": "message_id",
    "correlation-id": "correlation_id",
    "user-id": "user_id",
    "content-type": "content_type",
    "content-encoding": "content_encoding",
    "absolute-expiry-time": "absolute_expiry_time",
    "to": "to",
}


def amqp_sections(telemetry: Telemetry) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(properties by snake_case field, application properties, message annotations) for ``encode_event``."""
    props: dict[str, Any] = {}
    app: dict[str, Any] = dict(telemetry.application_properties)
    for name, value in telemetry.properties.items():
        field = _PROPERTY_FIELDS[name]
        if field == "user_id":
            props[field] = value.encode("utf-8")
        elif field == "absolute_expiry_time":
            try:
                when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=datetime.UTC)
                props[field] = when
            except ValueError:
                LOG.warning(
                    "device %s: $.exp %r is not an ISO time; kept as an application property",
                    telemetry.device_id,
                    value,
                )
                app["$.exp"] = value
        else:
            props[field] = value
    ann: dict[str, Any] = dict(telemetry.annotations)
    ann["iothub-enqueuedtime"] = Timestamp(telemetry.enqueued_time_ms)
    return props, app, ann


class EventHubsRouter:
    """Routes telemetry into one hub of an in-process :class:`EventHubsEmulator` (started first)."""

    def __init__(self, emulator: EventHubsEmulator, hub_name: str) -> None:
        self.emulator = emulator
        self.hub_name = hub_name
        self._hub: Any = None

    def _get_hub(self) -> Any:
        if self._hub is None:
            if self.emulator.store is None:
                raise RuntimeError("start the Event Hubs emulator before routing IoT Hub telemetry into it")
            self._hub = self.emulator.store.hub(self.hub_name)
        return self._hub

    def route_nowait(self, telemetry: Telemetry) -> None:
        """Append synchronously (the store's append is synchronous and durable when it returns)."""
        hub = self._get_hub()
        props, app, ann = amqp_sections(telemetry)
        payload = encode_event(telemetry.body, properties=props, application_properties=app, annotations=ann)
        hub.partitions[hub.partition_for_key(telemetry.device_id)].append([(payload, None)])

    async def route(self, telemetry: Telemetry) -> None:
        self.route_nowait(telemetry)


class LocalIotHub:
    """An IoT Hub emulator and its built-in endpoint (an Event Hubs emulator) on one event loop.

    ``LocalIotHub(hub_name="enginehub-local", partitions=4, host="127.0.0.1", eventhubs_port=0)``;
    ``await start()`` / ``await stop()`` (or ``async with``). ``.iothub`` and ``.eventhubs`` are the two
    emulators; ``eventhub_name`` is the built-in endpoint's hub (named after the IoT Hub, as on Azure).
    """

    def __init__(
        self,
        *,
        hub_name: str = "enginehub-local",
        partitions: int = 4,
        host: str = "127.0.0.1",
        iothub_port: int = 8883,
        eventhubs_host: str = "127.0.0.1",
        eventhubs_port: int = 0,
        eventhubs_http_port: int | None = None,
        data_dir: str | None = None,
        hostname: str | None = None,
    ) -> None:
        from pathlib import Path

        from enginehub.harness.eventhubs.config import EmulatorConfig
        from enginehub.harness.iothub.server import IotHubEmulator

        self.eventhub_name = hub_name
        root = Path(data_dir) if data_dir else None
        self.eventhubs = EventHubsEmulator(
            EmulatorConfig.simple(hubs=[hub_name], partitions=partitions),
            data_dir=root / "eventhubs" if root else None,
            host=eventhubs_host,
            port=eventhubs_port,
            http_port=eventhubs_http_port,
        )
        self.router = EventHubsRouter(self.eventhubs, hub_name)
        self.iothub = IotHubEmulator(
            self.router,
            hostname=hostname or f"{hub_name}.azure-devices.net",
            host=host,
            port=iothub_port,
            data_dir=root / "iothub" if root else None,
        )

    async def start(self) -> LocalIotHub:
        await self.eventhubs.start()
        try:
            await self.iothub.start()
        except BaseException:
            await self.eventhubs.stop()
            raise
        return self

    async def stop(self) -> None:
        await self.iothub.stop()  # devices first: no append after the store closes
        await self.eventhubs.stop()

    async def __aenter__(self) -> LocalIotHub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def iothub_eventhub_connection_string(self) -> str:
        return self.eventhubs.connection_string_for(self.eventhub_name)
