"""The IoT Hub device endpoint: an asyncio MQTT 3.1.1 server over TLS, and the ``IotHubEmulator`` lifecycle.

Telemetry is handed to an injected :class:`TelemetryRouter`; the PUBACK is written only after
``route()`` returns (the append is durable), so delivery is at-least-once as on the real hub.

Supported: CONNECT with SAS (registry primary/secondary keys, group-key derived keys, ``iothubowner`` /
``device`` policy tokens), one connection per device id (a new one closes the old), keepalive enforced at
1.5x, telemetry PUBLISH QoS 0/1 with property bags, twin GET / reported PATCH, desired-property pushes,
SUBSCRIBE to the IoT Hub filters (granted QoS <= 1, at most 5 per device), a Will on the telemetry topic,
token expiry enforcement, fault injection (:class:`~enginehub.harness.iothub.state.Faults`).

Not supported (LIMITATIONS): modules (client id ``device/module`` gets CONNACK 2), X.509 device auth,
MQTT over WebSockets (port 443), message routing to endpoints other than the built-in one. Direct methods
and the service REST API are served (``service.py``, ``invoke_method``); cloud-to-device messages arrive
over AMQPS on ``host:5671`` (``amqps.py``), wait in :class:`~enginehub.harness.iothub.state.C2DQueues` and
are published at the granted QoS on ``devices/{id}/messages/devicebound/{bag}`` once the device is
connected and subscribed; a QoS 1 delivery completes on its PUBACK (at-least-once, as on the real hub).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from enginehub.harness.iothub import auth, codec, topics
from enginehub.harness.iothub.certs import ServerCerts, load_or_mint
from enginehub.harness.iothub.errors import (
    CODEC_ERRORS,
    BadUsernameOrPassword,
    ConnectRefused,
    DeviceNotOnline,
    GatewayTimeout,
    IdentifierRejected,
    NotAuthorized,
    ProtocolViolation,
    ServerUnavailable,
    TopicError,
    UnacceptableProtocolVersion,
    UnsupportedTopicError,
)
from enginehub.harness.iothub.state import (
    AUTH_METHOD_SAS,
    MAX_MESSAGE_BYTES,
    C2DMessage,
    C2DQueues,
    Device,
    DeviceMetrics,
    Faults,
    HubMetrics,
    Registry,
    TokenBucket,
)
from enginehub.harness.iothub.tls import TlsServer, start_tls_server

LOG = logging.getLogger(__name__)

DEFAULT_HOSTNAME = "enginehub-local.azure-devices.net"
IOTHUB_PORT = 8883  # fixed by azure-iot-device
MAX_SUBSCRIPTIONS = 5
MAX_IDLE_S = 1767.0  # IoT Hub: idle timeout 1.5 x keepalive, at most 1767 s
MAX_PACKET_SIZE = codec.DEFAULT_MAX_PACKET_SIZE


@dataclass(slots=True)
class Telemetry:
    """One device-to-cloud message as the built-in endpoint must present it."""

    device_id: str
    body: bytes
    properties: dict[str, str]  # AMQP properties section: message-id, correlation-id, content-type, ...
    application_properties: dict[str, str | None]
    annotations: dict[str, Any]  # iothub-* stamps (message annotations); iothub-enqueuedtime is int ms
    enqueued_time_ms: int
    dup: bool = False
    module_id: str | None = None


class TelemetryRouter(Protocol):
    """Where telemetry goes; ``route`` returns only once the message is durably appended.

    A router may also offer a synchronous ``route_nowait(telemetry)`` with the same contract; the hub
    then uses it on its hot path (no task switch per message) and ``route`` for the rest.
    """

    async def route(self, telemetry: Telemetry) -> None: ...


class MemoryRouter:
    """In-memory router for tests and for running the hub alone."""

    def __init__(self) -> None:
        self.messages: list[Telemetry] = []
        self._changed = asyncio.Event()
        self.fail_with: Exception | None = None

    def route_nowait(self, telemetry: Telemetry) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(telemetry)
        self._changed.set()

    async def route(self, telemetry: Telemetry) -> None:
        self.route_nowait(telemetry)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Telemetry]:
        async def _wait() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"expected {count} messages, got {len(self.messages)}") from None
        return self.messages


class LifecycleState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class _Session:
    subscriptions: dict[str, int] = field(default_factory=dict)


class IotHubEmulator:
    """One local IoT Hub: the TLS MQTT device endpoint bound to ``host:port`` (port 8883 for the SDK).

    Use several instances on 127.0.0.2, 127.0.0.3, ... side by side; devices reach each through
    ``GatewayHostName=<host>`` while ``HostName`` stays the logical ``hostname``.
    """

    def __init__(
        self,
        router: TelemetryRouter,
        *,
        hostname: str = DEFAULT_HOSTNAME,
        host: str = "127.0.0.1",
        port: int = IOTHUB_PORT,
        registry: Registry | None = None,
        certs: ServerCerts | None = None,
        data_dir: str | Path | None = None,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        strict: bool = True,
        connect_timeout: float = 30.0,
        service_port: int | None = 0,
        amqp_port: int | None = 5671,
    ) -> None:
        self.router = router
        self.hostname = hostname
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if registry is None and self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            registry = Registry.load_or_create(self.data_dir / "iothub-registry.json", hostname)
            self._registry_path = self.data_dir / "iothub-registry.json"
            registry.on_change = self._schedule_save
        self.registry = registry or Registry(hostname)
        self.faults = faults or Faults()
        self.metrics = HubMetrics()
        self.clock = clock
        self.strict = strict
        self.connect_timeout = connect_timeout
        self.certs = certs
        self.state = LifecycleState.NEW
        self.ready = asyncio.Event()
        self._server: TlsServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._conns: set[_Connection] = set()
        self._by_device: dict[str, _Connection] = {}
        self._sessions: dict[str, _Session] = {}
        self._bucket: TokenBucket | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._route_nowait: Callable[[Telemetry], None] | None = getattr(router, "route_nowait", None)
        self.service_port = service_port  # HTTPS service API (None: not served)
        self.service: Any = None  # the running ServiceServer
        self._methods: dict[str, tuple[str, asyncio.Future[tuple[int, Any]]]] = {}
        self._method_seq = 0
        self.c2d = C2DQueues(lambda: self.metrics)
        self.amqp_port = amqp_port  # AMQPS service endpoint for C2D (None: not served or not bound)
        self._amqps: TlsServer | None = None
        self._amqp_conns: set[Any] = set()

    # --- registry persistence (debounced: a connect storm of new group devices saves once) -----------

    _registry_path: Path | None = None

    def _schedule_save(self) -> None:
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save_now()
            return
        self._save_handle = loop.call_later(0.5, self._save_now)

    def _save_now(self) -> None:
        self._save_handle = None
        if self._registry_path is not None:
            try:
                self.registry.save(self._registry_path)
            except OSError as exc:
                LOG.error("cannot save the device registry to %s: %s", self._registry_path, exc)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> IotHubEmulator:
        if self.state is not LifecycleState.NEW:
            raise RuntimeError(f"cannot start an emulator in state {self.state.value}")
        self.state = LifecycleState.STARTING
        if self.certs is None or self.certs.cert_path is None:
            if self.data_dir is not None:
                cert_dir = self.data_dir / "iothub-certs"
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="enginehub-iothub-")
                cert_dir = Path(self._tmp.name)
            if self.certs is not None:
                self.certs = self.certs.write(cert_dir)
            else:
                self.certs = await asyncio.to_thread(
                    load_or_mint, cert_dir, [self.hostname, "localhost"], sorted({self.host, "127.0.0.1"})
                )
        ctx = self.certs.server_context()
        try:
            self._server = await start_tls_server(
                asyncio.get_running_loop(),
                lambda: _Connection(self),
                self.host,
                self.port,
                ctx,
                backlog=4096,
                handshake_timeout=15,
            )
        except OSError:
            self.state = LifecycleState.STOPPED
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        if self.service_port is not None:
            from enginehub.harness.iothub.service import ServiceServer

            try:
                self.service = await ServiceServer(self, self.host, self.service_port).start()
            except OSError:
                self._server.close()
                self.state = LifecycleState.STOPPED
                raise
            self.service_port = self.service.port
        if self.amqp_port is not None:
            await self._start_amqps(ctx)
        self.state = LifecycleState.RUNNING
        self.ready.set()
        LOG.info("IoT Hub %s listening on %s:%d (TLS)", self.hostname, self.host, self.port)
        return self

    async def _start_amqps(self, ctx: Any) -> None:
        from enginehub.harness.amqp.connection import AMQPConnection
        from enginehub.harness.iothub.amqps import CONTAINER_ID, SASL_MECHANISMS, ServiceAmqpHandler

        assert self.amqp_port is not None
        try:
            self._amqps = await start_tls_server(
                asyncio.get_running_loop(),
                lambda: AMQPConnection(
                    ServiceAmqpHandler(self), container_id=CONTAINER_ID, sasl_mechanisms=SASL_MECHANISMS
                ),
                self.host,
                self.amqp_port,
                ctx,
                backlog=256,
            )
        except OSError as exc:  # C2D off, the rest of the hub still serves
            LOG.warning(
                "cloud-to-device endpoint not started: cannot listen on %s:%d (%s); "
                "send_c2d_message will fail to connect",
                self.host,
                self.amqp_port,
                exc,
            )
            self.amqp_port = None
            return
        self.amqp_port = self._amqps.sockets[0].getsockname()[1]
        LOG.info("IoT Hub cloud-to-device endpoint on amqps://%s:%d", self.host, self.amqp_port)

    async def wait_is_up(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def stop(self) -> None:
        if self.state in (LifecycleState.STOPPING, LifecycleState.STOPPED):
            return
        self.state = LifecycleState.STOPPING
        if self._server is not None:
            self._server.close()
        if self.service is not None:
            await self.service.stop()
        if self._amqps is not None:
            self._amqps.close()
        for amqp_conn in list(self._amqp_conns):
            amqp_conn.close(None, None)
        for _, fut in self._methods.values():
            if not fut.done():
                fut.set_exception(GatewayTimeout("hub stopping"))
        conns = list(self._conns)
        for conn in conns:
            conn.close("hub stopping", abort=True)
        tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
        tasks += [t for t in self._background if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for _ in range(3):  # let connection_lost callbacks run
            await asyncio.sleep(0)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                LOG.warning("IoT Hub server did not close within 5 s")
        if self._amqps is not None:
            try:
                await asyncio.wait_for(self._amqps.wait_closed(), 5)
            except TimeoutError:
                LOG.warning("IoT Hub AMQPS endpoint did not close within 5 s")
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_now()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.state = LifecycleState.STOPPED
        LOG.info("IoT Hub %s stopped", self.hostname)

    async def __aenter__(self) -> IotHubEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- information -----------------------------------------------------------------------------

    @property
    def gateway_host(self) -> str:
        return self.host

    @property
    def ca_pem(self) -> str:
        if self.certs is None:
            raise RuntimeError("start() the emulator first")
        return self.certs.ca_pem.decode("ascii")

    @property
    def ca_cert_path(self) -> Path:
        if self.certs is None or self.certs.ca_path is None:
            raise RuntimeError("start() the emulator first")
        return self.certs.ca_path

    @property
    def connection_string(self) -> str:
        """Service-side owner connection string."""
        key = self.registry.policies["iothubowner"]
        return f"HostName={self.hostname};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"

    def device_connection_string(self, device_id: str, *, create: bool = True) -> str:
        """A device connection string (with ``GatewayHostName``); registers the device if needed."""
        dev = self.registry.devices.get(device_id)
        if dev is None or dev.primary_key is None:
            if not create:
                key = self.registry.derived_key(device_id)
                return auth.device_connection_string(self.hostname, device_id, key, self.gateway_host)
            dev = self.registry.create(device_id)
        assert dev.primary_key is not None
        return auth.device_connection_string(self.hostname, device_id, dev.primary_key, self.gateway_host)

    def connected_devices(self) -> list[str]:
        return sorted(self._by_device)

    @property
    def service_hostname(self) -> str:
        """``host:port`` of the HTTPS service API (the ``HostName`` the service SDK dials)."""
        if self.service is None:
            raise RuntimeError("the service API is not running (service_port=None or not started)")
        return f"{self.host}:{self.service_port}"

    @property
    def service_connection_string(self) -> str:
        """Owner connection string for ``azure-iot-hub`` (``HostName=<host>:<service port>``).

        The SDK builds ``https://<HostName>`` from it, so it reaches this emulator without name
        resolution; trust ``ca_cert`` with ``REQUESTS_CA_BUNDLE``.
        """
        key = self.registry.policies["iothubowner"]
        return f"HostName={self.service_hostname};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"

    def service_hostnames(self) -> list[str]:
        """The names a service SAS token may be issued for (``sr``)."""
        names = [self.hostname]
        if self.service is not None:
            names += [self.service_hostname, self.host]
        return names

    # --- control ---------------------------------------------------------------------------------

    def disconnect_all(self) -> int:
        """Close every device connection at once (restart storm); returns how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.close("disconnect all (fault)", abort=True)
        return len(conns)

    def disconnect(self, device_id: str) -> bool:
        conn = self._by_device.get(device_id)
        if conn is None:
            return False
        conn.close("disconnected by the admin API", abort=True)
        return True

    def push_desired(self, device_id: str, patch: dict[str, Any]) -> int:
        """Apply a desired-properties patch to the twin and push it to the device if connected."""
        dev = self.registry.get(device_id)
        version = dev.twin.patch_desired(patch)
        if self.registry.on_change is not None:
            self.registry.on_change()
        conn = self._by_device.get(device_id)
        if conn is not None:
            body = json.dumps({**patch, "$version": version}, separators=(",", ":")).encode()
            conn.send_to_device(topics.twin_desired_topic(version), body)
        return version

    def send_c2d(self, msg: C2DMessage) -> None:
        """Queue a cloud-to-device message (DeviceNotFound, QueueDepthExceeded) and deliver what can be."""
        self.registry.get(msg.device_id)
        self.c2d.enqueue(msg)
        LOG.debug("C2D message %s queued for %s", msg.properties.get("$.mid"), msg.device_id)
        self.deliver_c2d(msg.device_id)

    def deliver_c2d(self, device_id: str) -> int:
        """Publish the device's queued messages if it is connected and subscribed; returns how many."""
        conn = self._by_device.get(device_id)
        if conn is None or conn.c2d_qos() is None:
            return 0
        msgs = self.c2d.take(device_id, self.clock())
        for msg in msgs:
            conn.send_c2d(msg)
        return len(msgs)

    def delete_device(self, device_id: str) -> None:
        """Delete the identity, drop its C2D queue and disconnect it."""
        self.registry.delete(device_id)
        dropped = self.c2d.purge(device_id)
        if dropped:
            LOG.info("device %s deleted with %d cloud-to-device messages queued", device_id, dropped)
        self.disconnect(device_id)

    def method_subscribed(self, device_id: str) -> bool:
        conn = self._by_device.get(device_id)
        return (
            conn is not None
            and conn.session is not None
            and any(topics.topic_matches(f, "$iothub/methods/POST/x/") for f in conn.session.subscriptions)
        )

    async def invoke_method(
        self,
        device_id: str,
        method_name: str,
        payload: Any,
        response_timeout_s: float = 30.0,
        connect_timeout_s: float = 0.0,
    ) -> tuple[int, Any]:
        """Call a direct method on a connected device; (status the device answered, its JSON payload).

        Raises DeviceNotFound (404), DeviceNotOnline (404: not connected or not subscribed to methods
        within ``connect_timeout_s``) or GatewayTimeout (504: no answer within ``response_timeout_s``).
        """
        self.registry.get(device_id)
        if not self.method_subscribed(device_id) and connect_timeout_s > 0:
            deadline = asyncio.get_running_loop().time() + connect_timeout_s
            while not self.method_subscribed(device_id) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        conn = self._by_device.get(device_id)
        if conn is None or not self.method_subscribed(device_id):
            raise DeviceNotOnline(f"device {device_id!r} is not online (connected and subscribed to methods)")
        self._method_seq += 1
        rid = format(self._method_seq, "x")
        fut: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._methods[rid] = (device_id, fut)
        self.metrics.method_calls += 1
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            conn.send_to_device(topics.method_request_topic(method_name, rid), body)
            try:
                return await asyncio.wait_for(fut, response_timeout_s)
            except TimeoutError:
                self.metrics.method_timeouts += 1
                raise GatewayTimeout(
                    f"device {device_id!r} did not answer {method_name!r} within {response_timeout_s:g} s"
                ) from None
        finally:
            self._methods.pop(rid, None)

    def _method_response(self, device_id: str, status: int, rid: str, payload: bytes) -> None:
        entry = self._methods.get(rid)
        if entry is None or entry[0] != device_id:
            LOG.info("device %s answered method request %r that is not pending (late?)", device_id, rid)
            return
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            value = payload.decode("utf-8", errors="replace")
        if not entry[1].done():
            entry[1].set_result((status, value))

    def reset(self) -> None:
        """Reset faults and metrics (registry kept)."""
        self.faults.reset()
        self.metrics = HubMetrics()
        self._bucket = None

    # --- internals used by connections ----------------------------------------------------------

    def _throttle_delay(self) -> float:
        rate = self.faults.throttle_per_s
        if not rate:
            self._bucket = None
            return 0.0
        if self._bucket is None or self._bucket.rate != rate:
            self._bucket = TokenBucket(rate, burst=1.0)
        return self._bucket.reserve()

    def _register(self, conn: _Connection) -> None:
        old = self._by_device.get(conn.device_id)
        if old is not None and old is not conn:
            self.metrics.takeovers += 1
            self.metrics.device(conn.device_id).takeovers += 1
            LOG.info("device %s connected again: closing the older connection", conn.device_id)
            old.close("ConnectionForcefullyClosedOnNewConnection", abort=True)
        self._by_device[conn.device_id] = conn

    def _unregister(self, conn: _Connection) -> None:
        if conn.device_id and self._by_device.get(conn.device_id) is conn:
            del self._by_device[conn.device_id]
            if conn.device is not None:
                conn.device.connection_state = "Disconnected"
                conn.device.connection_state_updated_time = self.clock()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Connection(asyncio.Protocol):
    """One device connection: a sans-IO read loop in ``data_received`` (packets handled synchronously;
    an async step such as a throttle wait, a PUBACK delay or a router that suspends pauses processing of
    this connection's later packets until it completes, so per-device order is kept)."""

    def __init__(self, hub: IotHubEmulator) -> None:
        self.hub = hub
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.buf = bytearray()
        self.busy = False
        self.paused = False
        self.task: asyncio.Task[Any] | None = None
        self.device_id = ""
        self.device: Device | None = None
        self.token: auth.SasToken | None = None
        self.model_id: str | None = None
        self.session: _Session | None = None
        self.closed = False
        self.clean_disconnect = False
        self.will: codec.Connect | None = None
        self.last_rx = 0.0
        self._timers: list[asyncio.TimerHandle] = []
        self._keepalive_s = 0.0
        self._annotations: dict[str, Any] = {}
        self._telemetry_prefix = "\0"  # "devices/{id}/messages/events" once connected
        self._metrics_of: HubMetrics | None = None
        self._dm: DeviceMetrics | None = None
        self._c2d_filter = "\0"
        self._c2d_inflight: dict[int, C2DMessage] = {}
        self._next_pid = 0

    # --- transport callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        hub = self.hub
        hub._conns.add(self)
        hub.metrics.connections = len(hub._conns)
        self._timers.append(self.loop.call_later(hub.connect_timeout, self._connect_timeout))

    def connection_lost(self, exc: Exception | None) -> None:
        hub = self.hub
        was_closed = self.closed
        self._mark_closed()
        hub._conns.discard(self)
        hub._unregister(self)
        hub.metrics.connections = len(hub._conns)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if not was_closed:
            LOG.debug("connection of %s (%s) lost: %s", self.device_id or "?", self.peer, exc)
        if (
            self.device is not None
            and not self.clean_disconnect
            and self.will is not None
            and hub.state is LifecycleState.RUNNING
        ):
            hub._spawn(self._send_will())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > 2 * MAX_PACKET_SIZE and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def _connect_timeout(self) -> None:
        if self.device is None and not self.closed:
            LOG.info("no CONNECT from %s within %.0f s: closing", self.peer, self.hub.connect_timeout)
            self.close("connect timeout", abort=True)

    # --- I/O -------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def send_to_device(self, topic: str, payload: bytes) -> bool:
        """QoS 0 server->device PUBLISH, only if the device subscribed to a matching filter."""
        if self.session is None or not any(
            topics.topic_matches(f, topic) for f in self.session.subscriptions
        ):
            LOG.warning("device %s is not subscribed to %s; message not delivered", self.device_id, topic)
            return False
        self._write(codec.encode(codec.Publish(topic, payload)))
        return True

    def c2d_qos(self) -> int | None:
        """The QoS granted on this device's C2D filter, None when not subscribed."""
        return self.session.subscriptions.get(self._c2d_filter) if self.session is not None else None

    def send_c2d(self, msg: C2DMessage) -> None:
        """Publish one C2D message at the granted QoS; QoS 1 completes on the PUBACK, QoS 0 at once."""
        qos = self.c2d_qos() or 0
        topic = topics.c2d_topic(self.device_id, {**msg.application_properties, **msg.properties})
        if qos == 0 or self.closed:
            if not self.closed:
                self._write(codec.encode(codec.Publish(topic, msg.body)))
                self.hub.c2d.complete(msg)
            else:
                self.hub.c2d.abandon(msg)
            return
        pid = self._next_pid
        for _ in range(65535):
            pid = pid % 65535 + 1
            if pid not in self._c2d_inflight:
                break
        self._next_pid = pid
        self._c2d_inflight[pid] = msg
        self._write(codec.encode(codec.Publish(topic, msg.body, 1, pid, dup=msg.delivery_count > 1)))

    def _mark_closed(self) -> None:
        self.closed = True
        for msg in self._c2d_inflight.values():
            self.hub.c2d.abandon(msg)  # redelivered (DUP) on the next connection
        self._c2d_inflight.clear()
        for t in self._timers:
            t.cancel()
        self._timers.clear()

    def close(self, reason: str, *, abort: bool = False) -> None:
        if self.closed:
            return
        self._mark_closed()
        LOG.debug("closing connection of %s (%s): %s", self.device_id or "?", self.peer, reason)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # flushes what was written (e.g. a refusing CONNACK) first

    # --- packet loop -----------------------------------------------------------------------------

    def _process(self) -> None:
        buf = self.buf
        pos = 0
        hub = self.hub
        try:
            while not self.closed and not self.busy:
                header = codec.parse_fixed_header(buf[pos : pos + 5], MAX_PACKET_SIZE)
                if header is None:
                    break
                first, length, hlen = header
                end = pos + hlen + length
                if len(buf) < end:
                    break
                pkt = codec.decode_body(first, bytes(buf[pos + hlen : end]))
                pos = end
                self._dispatch(pkt)
        except CODEC_ERRORS as exc:
            hub.metrics.protocol_errors += 1
            LOG.info("malformed packet from %s (%s): %s; closing", self.device_id or "?", self.peer, exc)
            self.close("malformed packet", abort=True)
        except (ProtocolViolation, TopicError) as exc:
            hub.metrics.protocol_errors += 1
            LOG.warning("device %s broke a hub rule: %s; closing", self.device_id or self.peer, exc)
            self.close("protocol violation", abort=True)
        except Exception:  # a bug: never take the server down
            LOG.exception("connection handler failed for %s (%s)", self.device_id, self.peer)
            self.close("internal error", abort=True)
        if self.closed:
            self.buf.clear()
            return
        del buf[:pos]
        if self.paused and not self.busy and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _dispatch(self, pkt: codec.Packet) -> None:
        self.last_rx = self.loop.time()
        if self.device is None:
            if not isinstance(pkt, codec.Connect):
                raise ProtocolViolation(f"first packet is {type(pkt).__name__}, not CONNECT")
            try:
                self._on_connect(pkt)
            except ConnectRefused as exc:
                LOG.info(
                    "CONNECT refused for %r from %s: CONNACK %d (%s)", pkt.client_id, self.peer, exc.code, exc
                )
                self._write(codec.encode(codec.Connack(exc.code)))
                self.close("connect refused")
            return
        if isinstance(pkt, codec.Publish):
            self._on_publish(pkt)
        elif isinstance(pkt, codec.Pingreq):
            self._write(codec.PINGRESP_BYTES)
        elif isinstance(pkt, codec.Subscribe):
            self._on_subscribe(pkt)
        elif isinstance(pkt, codec.Unsubscribe):
            assert self.session is not None
            for f in pkt.topics:
                self.session.subscriptions.pop(f, None)
            self._write(codec.encode(codec.Unsuback(pkt.packet_id)))
        elif isinstance(pkt, codec.Puback):
            msg = self._c2d_inflight.pop(pkt.packet_id, None)  # only C2D goes out at QoS 1
            if msg is not None:
                self.hub.c2d.complete(msg)
        elif isinstance(pkt, codec.Disconnect):
            self.clean_disconnect = True
            self.close("client DISCONNECT")
        else:
            raise ProtocolViolation(f"unexpected {type(pkt).__name__} from a device")

    def _go_async(self, coro: Any) -> None:
        """Run an async step; later packets of this connection wait until it is done."""
        self.busy = True
        self.task = self.loop.create_task(coro)
        self.task.add_done_callback(self._async_done)

    def _async_done(self, task: asyncio.Task[Any]) -> None:
        self.task = None
        self.busy = False
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            LOG.error("async step failed for %s: %s", self.device_id, exc)
            self.close("internal error", abort=True)
        if not self.closed:
            self._process()

    def _on_connect(self, pkt: codec.Connect) -> None:
        hub = self.hub
        faults = hub.faults
        if faults.refuse_connect is not None:
            code = faults.refuse_connect
            if faults.refuse_connect_count is not None:
                faults.refuse_connect_count -= 1
                if faults.refuse_connect_count <= 0:
                    faults.refuse_connect = faults.refuse_connect_count = None
            hub.metrics.refused_connects += 1
            raise ConnectRefused("refused by fault injection", code)
        if hub.state is not LifecycleState.RUNNING:
            raise ServerUnavailable("hub stopping")
        if pkt.protocol_level != 4:
            raise UnacceptableProtocolVersion(
                f"MQTT protocol level {pkt.protocol_level}; IoT Hub speaks 3.1.1 (4)"
            )
        if pkt.username is None or pkt.password is None:
            raise BadUsernameOrPassword("username and SAS password are required")
        try:
            username = topics.parse_username(pkt.username)
        except TopicError as exc:
            raise BadUsernameOrPassword(str(exc)) from None
        if "/" in pkt.client_id:
            raise IdentifierRejected(
                f"module identities are not supported by the emulator ({pkt.client_id!r})"
            )
        if username.client_id != pkt.client_id:
            raise BadUsernameOrPassword(
                f"username device {username.client_id!r} != client id {pkt.client_id!r}"
            )
        if username.hostname.lower() != hub.hostname.lower():
            raise NotAuthorized(f"username hub {username.hostname!r} is not {hub.hostname!r}")
        try:
            password = pkt.password.decode("utf-8")
        except UnicodeDecodeError:
            raise BadUsernameOrPassword("password is not UTF-8") from None
        now = hub.clock()
        metrics = hub.metrics.device(pkt.client_id)
        try:
            device, token = hub.registry.authenticate(pkt.client_id, password, now)
        except NotAuthorized:
            hub.metrics.auth_failures += 1
            metrics.auth_failures += 1
            raise
        self.device_id = pkt.client_id
        self._telemetry_prefix = f"devices/{self.device_id}/messages/events"
        self._c2d_filter = f"devices/{self.device_id}/messages/devicebound/#"
        self.device = device
        self.token = token
        self.model_id = username.model_id
        if pkt.will_topic is not None:
            self.will = pkt
        hub._register(self)
        if pkt.clean_session:
            hub._sessions.pop(self.device_id, None)
        session_present = self.device_id in hub._sessions
        self.session = hub._sessions.setdefault(self.device_id, _Session())
        device.connection_state = "Connected"
        device.connection_state_updated_time = now
        device.last_activity_time = now
        hub.metrics.connects += 1
        metrics.connects += 1
        self._write(codec.encode(codec.Connack(0, session_present)))
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        if pkt.keepalive:
            self._keepalive_s = min(1.5 * pkt.keepalive, MAX_IDLE_S)  # the hub caps it at 1767 s
            self._timers.append(loop.call_later(self._keepalive_s, self._check_keepalive))
        self._timers.append(loop.call_later(max(0.0, token.se - now), self._token_expired))
        if session_present:
            hub.deliver_c2d(self.device_id)  # a kept session keeps its C2D subscription

    def _check_keepalive(self) -> None:
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_rx
        if idle >= self._keepalive_s:
            self.hub.metrics.keepalive_closes += 1
            LOG.info("device %s silent for %.1f s (1.5 x keepalive): closing", self.device_id, idle)
            self.close("keepalive timeout", abort=True)
        else:
            self._timers.append(loop.call_later(self._keepalive_s - idle, self._check_keepalive))

    def _token_expired(self) -> None:
        if self.closed:
            return
        if not self.hub.faults.enforce_token_expiry:
            # re-check later in case enforcement is switched on
            self._timers.append(asyncio.get_running_loop().call_later(1.0, self._token_expired))
            return
        self.hub.metrics.expired_closes += 1
        LOG.info("SAS token of device %s expired: closing", self.device_id)
        self.close("token expired", abort=True)

    def _on_subscribe(self, pkt: codec.Subscribe) -> None:
        assert self.session is not None
        LOG.debug("device %s SUBSCRIBE %s", self.device_id, pkt.topics)
        subs = self.session.subscriptions
        codes = []
        for filt, qos in pkt.topics:
            if topics.allowed_subscription(filt, self.device_id) and (
                filt in subs or len(subs) < MAX_SUBSCRIPTIONS
            ):
                granted = min(qos, 1)
                subs[filt] = granted
                codes.append(granted)
            else:
                LOG.warning("device %s: subscription to %r refused", self.device_id, filt)
                codes.append(codec.SUBACK_FAILURE)
        self._write(codec.encode(codec.Suback(pkt.packet_id, tuple(codes))))
        if self._c2d_filter in subs:
            self.hub.deliver_c2d(self.device_id)

    def _on_publish(self, pkt: codec.Publish) -> None:
        if pkt.qos == 2:
            raise ProtocolViolation("QoS 2 PUBLISH (IoT Hub closes the connection)")
        topic = pkt.topic
        if topic.startswith("devices/"):
            self._on_telemetry(pkt)
        elif topic.startswith("$iothub/twin/"):
            self._on_twin(pkt)
        elif topic.startswith(topics.METHOD_RESPONSE_PREFIX):
            status, rid = topics.parse_method_response(topic)
            if pkt.packet_id is not None:
                self._write(codec.encode_puback(pkt.packet_id))
            self.hub._method_response(self.device_id, status, rid, pkt.payload)
        else:
            try:
                topics.parse_twin_request(topic)  # raises the precise error
            except UnsupportedTopicError:
                if self.hub.strict:
                    raise
                LOG.warning(
                    "device %s published to unsupported %r; acknowledged and dropped", self.device_id, topic
                )
                if pkt.packet_id is not None:
                    self._write(codec.encode_puback(pkt.packet_id))

    def _build_telemetry(
        self, pkt: codec.Publish, tt: topics.TelemetryTopic, extra_app: dict[str, str] | None = None
    ) -> Telemetry:
        split = topics.split_properties(tt.properties)
        app = split.application
        if pkt.retain:
            app["mqtt-retain"] = "true"
        if extra_app:
            app.update(extra_app)
        size = len(pkt.payload)
        for v in split.system.values():
            size += len(v)
        for k, av in app.items():
            size += len(k) + (len(av) if av else 0)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolViolation(f"message of {size} bytes exceeds the hub's {MAX_MESSAGE_BYTES}")
        assert self.device is not None
        now_ms = int(self.hub.clock() * 1000)
        if not self._annotations:
            self._annotations = {
                "iothub-connection-device-id": self.device_id,
                "iothub-connection-auth-method": AUTH_METHOD_SAS,
                "iothub-connection-auth-generation-id": self.device.generation_id,
                "iothub-enqueuedtime": 0,
                "iothub-message-source": "Telemetry",
            }
            if self.model_id:
                self._annotations["dt-dataschema"] = self.model_id
        ann = self._annotations.copy()
        ann["iothub-enqueuedtime"] = now_ms
        if split.annotations:
            ann.update(split.annotations)
        return Telemetry(self.device_id, pkt.payload, split.system, app, ann, now_ms, pkt.dup)

    def _on_telemetry(self, pkt: codec.Publish) -> None:
        hub = self.hub
        topic = pkt.topic
        prefix = self._telemetry_prefix
        n = len(prefix)
        if topic.startswith(prefix) and (len(topic) == n or topic[n] == "/"):
            # this device's own topic (device ids hold no "/"): only the property bag left to parse
            tt = topics.TelemetryTopic(self.device_id, None, topics.parse_property_bag(topic[n + 1 :]))
        else:
            tt = topics.parse_telemetry_topic(topic)
            if tt.device_id != self.device_id or tt.module_id is not None:
                raise ProtocolViolation(f"publish to {topic[:100]!r} by device {self.device_id!r}")
        telemetry = self._build_telemetry(pkt, tt)
        delay = hub._throttle_delay()
        route_nowait = hub._route_nowait
        if delay > 0 or hub.faults.puback_delay_s or route_nowait is None:
            self._go_async(self._telemetry_async(pkt, telemetry, delay))
            return
        started = time.perf_counter()
        try:
            route_nowait(telemetry)
        except Exception as exc:
            self._route_failed(exc)
            return
        if self._after_append(pkt, telemetry):
            self._write(codec.encode_puback(pkt.packet_id))  # type: ignore[arg-type]
            self._device_metrics().puback_latency_s_total += time.perf_counter() - started

    def _device_metrics(self) -> DeviceMetrics:
        """This device's metrics entry, kept per connection (looked up again after ``hub.reset()``)."""
        m = self.hub.metrics
        if self._metrics_of is not m:
            self._metrics_of = m
            self._dm = m.device(self.device_id)
        return self._dm  # type: ignore[return-value]

    async def _telemetry_async(self, pkt: codec.Publish, telemetry: Telemetry, delay: float) -> None:
        hub = self.hub
        if delay > 0:
            hub.metrics.throttled += 1
            await asyncio.sleep(delay)
            if self.closed:
                return  # not appended, not acknowledged: the device re-sends
        started = time.perf_counter()
        try:
            await hub.router.route(telemetry)
        except Exception as exc:
            self._route_failed(exc)
            return
        if not self._after_append(pkt, telemetry):
            return
        if hub.faults.puback_delay_s:
            await asyncio.sleep(hub.faults.puback_delay_s)
        self._write(codec.encode_puback(pkt.packet_id))  # type: ignore[arg-type]
        self._device_metrics().puback_latency_s_total += time.perf_counter() - started

    def _route_failed(self, exc: Exception) -> None:
        # nothing is lost: no PUBACK, so the device re-sends after reconnecting
        LOG.error(
            "routing telemetry of %s failed (%s: %s); closing without PUBACK",
            self.device_id,
            type(exc).__name__,
            exc,
        )
        self.close("route failed", abort=True)

    def _after_append(self, pkt: codec.Publish, telemetry: Telemetry) -> bool:
        """Count the appended message and apply the PUBACK faults; True if the PUBACK is to be sent."""
        hub = self.hub
        m = hub.metrics
        dm = self._device_metrics()
        m.messages += 1
        dm.messages += 1
        n = len(pkt.payload)
        m.bytes += n
        dm.bytes += n
        if pkt.dup:
            m.dup += 1
            dm.dup += 1
        if self.device is not None:
            self.device.last_activity_time = telemetry.enqueued_time_ms / 1000
        faults = hub.faults
        if faults.close_after_publishes is not None:
            faults.close_after_publishes -= 1
            if faults.close_after_publishes <= 0:
                faults.close_after_publishes = None
                m.fault_closes += 1
                LOG.info("fault: closing %s after the append, before the PUBACK", self.device_id)
                self.close("close after N publishes (fault)", abort=True)
                return False
        if pkt.packet_id is None:
            return False
        if faults.drop_pubacks > 0:
            faults.drop_pubacks -= 1
            m.dropped_pubacks += 1
            return False
        return True

    def _on_twin(self, pkt: codec.Publish) -> None:
        req = topics.parse_twin_request(pkt.topic)
        assert self.device is not None
        self.hub.metrics.twin_requests += 1
        if pkt.packet_id is not None:
            self._write(codec.encode_puback(pkt.packet_id))
        twin = self.device.twin
        if req.kind == "GET":
            body = json.dumps(twin.document(), separators=(",", ":")).encode()
            self.send_to_device(topics.twin_response_topic(200, req.rid), body)
            return
        try:
            patch = json.loads(pkt.payload or b"null")
        except ValueError:
            patch = None
        if not isinstance(patch, dict):
            LOG.warning("device %s: reported patch is not a JSON object", self.device_id)
            self.send_to_device(topics.twin_response_topic(400, req.rid), b"")
            return
        version = twin.patch_reported(patch)
        if self.hub.registry.on_change is not None:
            self.hub.registry.on_change()
        self.send_to_device(topics.twin_response_topic(204, req.rid, version), b"")

    async def _send_will(self) -> None:
        will = self.will
        assert will is not None and will.will_topic is not None
        try:
            tt = topics.parse_telemetry_topic(will.will_topic)
            if tt.device_id != self.device_id:
                return
            pkt = codec.Publish(will.will_topic, will.will_message or b"", will.will_qos, None)
            telemetry = self._build_telemetry(pkt, tt, {"iothub-MessageType": "Will"})
            await self.hub.router.route(telemetry)
        except (TopicError, ProtocolViolation) as exc:
            LOG.info("will of %s not forwarded: %s", self.device_id, exc)
        except Exception as exc:
            LOG.error("routing the will of %s failed: %s", self.device_id, exc)
