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
import struct
from typing import Any

from enginehub.harness.amqp.codec import Timestamp, encode_binary, encode_string, encode_symbol
from enginehub.harness.eventhubs.message import FORMAT_VERSION, encode_event
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


def encode_telemetry(telemetry: Telemetry) -> bytes:
    """The stored payload of ``telemetry``: the same bytes as ``encode_event`` over ``amqp_sections``.

    The usual shape (string properties other than user-id and absolute-expiry-time, string or absent
    application-property values, string annotations plus the enqueued time) is written directly, with the
    per-device annotation entries cached; anything else takes the general path. Equality with the general
    path is tested in ``tests/unit/iothub/test_iothub_bridge_encode.py``.
    """
    entries = []
    for k, v in telemetry.annotations.items():
        if type(v) is str:
            e = _ANN_CACHE.get((k, v))
            if e is None:
                e = encode_symbol(k) + encode_string(v)
                if len(_ANN_CACHE) >= _ANN_CACHE_MAX:
                    _ANN_CACHE.clear()
                _ANN_CACHE[(k, v)] = e
        elif k == "iothub-enqueuedtime" and type(v) is int:
            e = _ENQUEUED_TIME + _q(v)
        else:
            return _encode_general(telemetry)
        entries.append(e)
    tail = []
    props = telemetry.properties
    if props:
        fields = [b"\x40"] * 13
        for name, v in props.items():
            slot = _PROPERTY_SLOTS.get(name)
            if slot is None or type(v) is not str:
                return _encode_general(telemetry)
            fields[slot] = encode_symbol(v) if slot >= 6 else encode_string(v)
        body = b"".join(fields)
        n = len(body) + 1
        if n < 256:
            tail.append(b"\x00\x53\x73\xc0" + bytes((n, 13)) + body)
        else:
            tail.append(b"\x00\x53\x73\xd0" + _II(n + 3, 13) + body)
    app = telemetry.application_properties
    if app:
        parts = []
        for k, av in app.items():
            if type(k) is not str:
                return _encode_general(telemetry)
            parts.append(encode_string(k))
            if av is None:
                parts.append(b"\x40")
            elif type(av) is str:
                parts.append(encode_string(av))
            else:
                return _encode_general(telemetry)
        body = b"".join(parts)
        count = len(parts)
        if len(body) + 1 < 256 and count < 256:
            tail.append(b"\x00\x53\x74\xc1" + bytes((len(body) + 1, count)) + body)
        else:
            tail.append(b"\x00\x53\x74\xd1" + _II(len(body) + 4, count) + body)
    tail.append(b"\x00\x53\x75" + encode_binary(telemetry.body))
    ann = b"".join(entries)
    return _HDR(FORMAT_VERSION, 0, len(ann), 2 * len(entries)) + ann + b"".join(tail)


def _encode_general(telemetry: Telemetry) -> bytes:
    props, app, ann = amqp_sections(telemetry)
    return encode_event(telemetry.body, properties=props, application_properties=app, annotations=ann)


# properties-section slots (amqp:properties:list) of the string fields; 6 and 7 are symbols
_PROPERTY_SLOTS = {"message-id": 0, "to": 2, "correlation-id": 5, "content-type": 6, "content-encoding": 7}
_ENQUEUED_TIME = encode_symbol("iothub-enqueuedtime") + b"\x83"
_ANN_CACHE: dict[tuple[str, str], bytes] = {}  # (annotation, value) -> encoded entry; per-device values
_ANN_CACHE_MAX = 8192
_q = struct.Struct(">q").pack
_II = struct.Struct(">II").pack
_HDR = struct.Struct(">BIII").pack


class EventHubsRouter:
    """Routes telemetry into one hub of an in-process :class:`EventHubsEmulator` (started first)."""

    def __init__(self, emulator: EventHubsEmulator, hub_name: str) -> None:
        self.emulator = emulator
        self.hub_name = hub_name
        self._hub: Any = None
        self._partition_of: dict[str, Any] = {}  # device id -> Partition (bounded)

    def _get_hub(self) -> Any:
        if self._hub is None:
            if self.emulator.store is None:
                raise RuntimeError("start the Event Hubs emulator before routing IoT Hub telemetry into it")
            self._hub = self.emulator.store.hub(self.hub_name)
        return self._hub

    def route_nowait(self, telemetry: Telemetry) -> None:
        """Append synchronously (the store's append is synchronous and durable when it returns)."""
        partition = self._partition_of.get(telemetry.device_id)
        if partition is None:
            hub = self._get_hub()
            partition = hub.partitions[hub.partition_for_key(telemetry.device_id)]
            if len(self._partition_of) >= 65536:
                self._partition_of.clear()
            self._partition_of[telemetry.device_id] = partition
        partition.append([(encode_telemetry(telemetry), None)])

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
        self.failed_component: str | None = None
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
        """Bind the Event Hubs emulator, then the IoT Hub (MQTT, then its service API). When a bind fails,
        ``failed_component`` names which one ("eventhubs", "iothub" or "iothub_service") and the OSError
        propagates unchanged; whatever had started is stopped again."""
        self.failed_component = "eventhubs"
        await self.eventhubs.start()
        self.failed_component = "iothub"
        try:
            await self.iothub.start()
        except BaseException:
            if getattr(self.iothub, "_server", None) is not None:
                self.failed_component = "iothub_service"  # MQTT bound; the service API did not
            await self.eventhubs.stop()
            raise
        self.failed_component = None
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
