"""IoT Hub device load clients: the real device SDK (``azure-iot-device``), and a raw MQTT publisher.

Both are synchronous so they run in Locust's gevent greenlets and in plain threads alike, and both report
one request per telemetry message, ``d2c.send qos1`` (never the per-device topic), through the injected
request event.

:class:`RawMqttDevice` speaks MQTT 3.1.1 over TLS with our codec (``enginehub.harness.iothub.codec``, the
same the emulator and its asyncio ``rawclient`` use, here on a blocking socket because asyncio does not
belong on gevent threads): CONNECT with a SAS token, PUBLISH QoS 1 to ``devices/<id>/messages/events/``
with the property bag (``$.mid`` = message id), wait for the PUBACK. ``send_many`` pipelines a window of
messages and waits for all their PUBACKs (for high rates from few greenlets). About 20 µs of client CPU
per message, against ~1 ms for the SDK, which is why the fleet scenario uses it by default.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from enginehub.harness.iothub import auth, codec, topics
from enginehub.loadtests.clients import NoOpEvent, RequestEvent, measure

LOG = logging.getLogger(__name__)

API_VERSION = "2019-10-01"


class MqttError(Exception):
    """The hub refused the connection (CONNACK code) or closed it."""


def tls_context(ca_cert: str | None) -> ssl.SSLContext:
    """A client context trusting ``ca_cert`` (the emulator's CA), like ``server_verification_cert``."""
    ctx = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class RawMqttDevice:
    """``RawMqttDevice(gateway_host, hostname, device_id, key, ca_cert=...)``: ``connect()``,
    ``send(payload, message_id)``, ``send_many([(payload, message_id), ...])``, ``close()``."""

    def __init__(
        self,
        gateway_host: str,
        hostname: str,
        device_id: str,
        key: str,
        *,
        ca_cert: str | None = None,
        port: int = 8883,
        timeout: float = 10.0,
        request_event: RequestEvent | None = None,
        name: str = "d2c.send qos1",
    ) -> None:
        self.gateway_host = gateway_host
        self.hostname = hostname
        self.device_id = device_id
        self.key = key
        self.port = port
        self.timeout = timeout
        self.ssl_context = tls_context(ca_cert)
        self.event = request_event or NoOpEvent()
        self.name = name
        self.sock: ssl.SSLSocket | None = None
        self._buf = b""
        self._next_pid = 0
        self.sent = 0

    def connect(self) -> RawMqttDevice:
        with measure(self.event, "mqtt", "d2c.connect"):
            raw = socket.create_connection((self.gateway_host, self.port), timeout=self.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self.ssl_context.wrap_socket(raw, server_hostname=self.hostname)
            token = auth.generate_sas_token(f"{self.hostname}/devices/{self.device_id}", self.key)
            username = f"{self.hostname}/{self.device_id}/?api-version={API_VERSION}"
            self.sock.sendall(codec.encode(codec.Connect(self.device_id, username, token.encode(), 60)))
            ack = self._read(time.monotonic() + self.timeout)
            if not isinstance(ack, codec.Connack) or ack.return_code != 0:
                self.close()
                raise MqttError(f"CONNECT refused for {self.device_id}: {ack!r}")
        return self

    def _read(self, deadline: float) -> Any:
        assert self.sock is not None
        while True:
            decoded = codec.decode(self._buf)
            if decoded is not None:
                packet, used = decoded
                self._buf = self._buf[used:]
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.device_id}: no answer from the hub within {self.timeout} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.device_id}: no answer from the hub within {self.timeout} s"
                ) from None
            if not data:
                raise MqttError(f"{self.device_id}: the hub closed the connection")
            self._buf += data

    def _pid(self) -> int:
        self._next_pid = self._next_pid % 0xFFFF + 1
        return self._next_pid

    def _publish(self, payload: bytes, message_id: str | None) -> int:
        assert self.sock is not None
        pid = self._pid()
        props = {"$.mid": message_id} if message_id else {}
        topic = topics.telemetry_topic(self.device_id, props)
        self.sock.sendall(codec.encode(codec.Publish(topic, payload, 1, pid)))
        return pid

    def _await_acks(self, pids: set[int]) -> None:
        deadline = time.monotonic() + self.timeout
        while pids:
            packet = self._read(deadline)
            if isinstance(packet, codec.Puback):
                pids.discard(packet.packet_id)

    def send(self, payload: bytes, message_id: str | None = None) -> None:
        """One QoS 1 message; returns when its PUBACK arrived (the hub stored it)."""
        with measure(self.event, "mqtt", self.name) as m:
            m.response_length = len(payload)
            if self.sock is None:
                self.connect()
            self._await_acks({self._publish(payload, message_id)})
        self.sent += 1

    def send_many(self, messages: Sequence[tuple[bytes, str | None]]) -> None:
        """Pipeline ``messages`` and wait for every PUBACK; reported as one request per message."""
        with measure(self.event, "mqtt", self.name + " window") as m:
            m.response_length = len(messages)
            if self.sock is None:
                self.connect()
            self._await_acks({self._publish(p, mid) for p, mid in messages})
        self.sent += len(messages)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(codec.encode(codec.Disconnect()))
            except OSError:
                pass
            try:
                self.sock.close()
            finally:
                self.sock = None


class SdkDevice:
    """``azure-iot-device``'s synchronous ``IoTHubDeviceClient``: one QoS 1 ``send_message`` per request."""

    def __init__(
        self,
        gateway_host: str,
        hostname: str,
        device_id: str,
        key: str,
        *,
        ca_cert: str | None = None,
        request_event: RequestEvent | None = None,
        name: str = "d2c.send qos1",
    ) -> None:
        from azure.iot.device import IoTHubDeviceClient

        self.event = request_event or NoOpEvent()
        self.name = name
        cs = f"HostName={hostname};DeviceId={device_id};SharedAccessKey={key};GatewayHostName={gateway_host}"
        cert = open(ca_cert).read() if ca_cert else None  # noqa: SIM115 - small file, read once
        self.client = IoTHubDeviceClient.create_from_connection_string(
            cs, server_verification_cert=cert, connection_retry=False
        )
        self.sent = 0

    def connect(self) -> SdkDevice:
        with measure(self.event, "mqtt", "d2c.connect"):
            self.client.connect()
        return self

    def send(self, payload: bytes, message_id: str | None = None) -> None:
        from azure.iot.device import Message

        with measure(self.event, "mqtt", self.name) as m:
            m.response_length = len(payload)
            msg = Message(payload)
            if message_id:
                msg.message_id = message_id
            self.client.send_message(msg)
        self.sent += 1

    def close(self) -> None:
        self.client.shutdown()


def device_key(group_key: str, device_id: str) -> str:
    """The DPS group-enrollment key the emulator accepts for ``device_id``."""
    return auth.derive_device_key(group_key, device_id)
