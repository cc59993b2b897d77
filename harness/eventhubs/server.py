"""The Event Hubs emulator lifecycle: ``EventHubsEmulator`` (asyncio) and ``EmulatorThread`` (sync callers).

``EventHubsEmulator(config, data_dir=None, host="127.0.0.1", port=5672, http_port=5300)``: ``await start()``
binds the AMQP port (0 = a free port) and the health port (GET /health, 0 = free port, None = off), sets
``ready``; ``await stop()`` closes listeners and connections and the store. ``connection_string`` is the
namespace-level connection string with ``UseDevelopmentEmulator=true``; ``connection_string_for(hub)``
adds ``EntityPath``.

AMQPS (optional): with ``tls=ServerCerts`` (``enginehub.harness.iothub.certs``, written to a directory)
the same namespace is also served over TLS on ``tls_port`` (0 = a free port). That is the transport the
SDK's ``uamqp_transport=True`` needs: uAMQP always speaks TLS and ignores ``UseDevelopmentEmulator``.
``sdk_tls_kwargs()`` gives the client keyword arguments that point the SDK at it (the connection string
stays the plain one). uAMQP authenticates with SASL ``MSSBCBS`` and a ``$cbs`` token, both served.

Limitations (documented, not bugs): no WebSocket transport (``UseDevelopmentEmulator=true`` means plain
AMQP on the given port), JWT (Entra ID) tokens are refused, $management supports READ only, Kafka is not
spoken.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginehub.harness.amqp.connection import AMQPConnection
from enginehub.harness.amqp.errors import Condition
from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.errors import QuotaExceeded, ReceiverStolen
from enginehub.harness.eventhubs.health import HealthServer
from enginehub.harness.eventhubs.links import MAX_NON_EPOCH_READERS, Consumer, EventHubsHandler
from enginehub.harness.eventhubs.state import EventHubsStore
from enginehub.harness.runtime import LoopThread

if TYPE_CHECKING:
    from enginehub.harness.iothub.certs import ServerCerts
    from enginehub.harness.iothub.tls import TlsServer

LOG = logging.getLogger(__name__)

CONTAINER_ID = "eventhubs-emulator"

# the service's texts (docs/eventhubs-emulator.md §5.4)
_LOWER_EPOCH = (
    "Receiver 'nil' with a higher epoch '{old}' already exists. Receiver 'nil' with epoch {new} cannot be "
    "created. Make sure you are creating receiver with increasing epoch value to ensure connectivity, or "
    "ensure all old epoch receivers are closed or disconnected."
)
_STOLEN_BY_EPOCH = (
    "New receiver 'nil' with higher epoch of '{new}' is created hence current receiver 'nil' with epoch "
    "'{old}' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used."
)
_STOLEN_NON_EPOCH = (
    "New receiver 'nil' with epoch of '{new}' is created hence current non-epoch receiver 'nil' is getting "
    "disconnected."
)
_EPOCH_EXISTS = (
    "At least one receiver for the endpoint is created with epoch of '{old}', and so non-epoch receiver is "
    "not allowed. Either reconnect with a higher epoch, or make sure all epoch receivers are closed or "
    "disconnected."
)
_TOO_MANY = "Exceeded the maximum number of allowed receivers per partition in a consumer group which is {n}."


class EventHubsEmulator:
    """One emulated Event Hubs namespace served over AMQP 1.0 on loopback."""

    def __init__(
        self,
        config: EmulatorConfig,
        data_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 5672,
        http_port: int | None = 5300,
        *,
        max_frame_size: int = 65536,
        tls: ServerCerts | None = None,
        tls_port: int = 0,
    ) -> None:
        if tls is not None and (tls.cert_path is None or tls.key_path is None or tls.ca_path is None):
            raise ValueError("tls: write the certificates to a directory first (ServerCerts.write)")
        self.config = config
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.host = host
        self.port = port
        self.http_port = http_port
        self.max_frame_size = max_frame_size
        self.tls = tls
        self.tls_port: int | None = tls_port if tls is not None else None
        self._tls_server: TlsServer | None = None
        self.store: EventHubsStore | None = None  # type: ignore[assignment]
        self.ready = asyncio.Event()
        self.state = "created"
        self.connections: set[AMQPConnection] = set()
        self.stats: collections.Counter[str] = collections.Counter()
        self._receivers: dict[tuple[str, str, str], list[Consumer]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._http: HealthServer | None = None
        self._trimmer: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.state != "created":
            raise RuntimeError(f"cannot start an emulator in state {self.state}")
        self.state = "starting"
        self.store = EventHubsStore(self.config, self.data_dir)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._protocol, self.host, self.port, reuse_address=True, backlog=4096
            )  # a burst of connects must not drop a client SYN: pyamqp gives up after 1 s
            self.port = self._server.sockets[0].getsockname()[1]
            if self.tls is not None:
                from enginehub.harness.iothub.tls import start_tls_server

                self._tls_server = await start_tls_server(
                    loop, self._protocol, self.host, self.tls_port or 0, self.tls.server_context()
                )
                self.tls_port = self._tls_server.sockets[0].getsockname()[1]
            if self.http_port is not None:
                self._http = HealthServer(self.host, self.http_port, check=self._health_check)
                await self._http.start()
                self.http_port = self._http.port
        except BaseException:
            await self.stop()
            raise
        if self.config.retention_seconds is not None:
            self._trimmer = loop.create_task(
                self._trim_forever(min(max(self.config.retention_seconds / 4, 1), 60))
            )
        self.state = "running"
        self.ready.set()
        LOG.info(
            "Event Hubs emulator listening on %s:%s%s (hubs: %s)",
            self.host,
            self.port,
            f", AMQPS on {self.tls_port}" if self._tls_server is not None else "",
            ", ".join(self.hubs),
        )

    async def stop(self) -> None:
        if self.state == "stopped":
            return
        self.state = "stopping"
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        if self._server is not None:
            self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        for conn in list(self.connections):
            conn.close(Condition.CONNECTION_FORCED, "The emulator is shutting down.")
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                LOG.warning("listener did not close within 5 s")
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
            self._tls_server = None
        if self._http is not None:
            await self._http.stop()
        self._server = self._http = None
        if self.store is not None:
            self.store.close()
        self.state = "stopped"
        self.ready.clear()

    async def _trim_forever(self, interval: float) -> None:
        """Apply retention periodically (begin_sequence_number moves; consumers skip trimmed events)."""
        while True:
            await asyncio.sleep(interval)
            try:
                dropped = self.store.trim() if self.store is not None else 0
            except Exception:
                LOG.exception("retention trimming failed")
                continue
            if dropped:
                LOG.info("retention: dropped %d events", dropped)

    async def __aenter__(self) -> EventHubsEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _protocol(self) -> AMQPConnection:
        return AMQPConnection(
            EventHubsHandler(self),
            container_id=CONTAINER_ID,
            max_frame_size=self.max_frame_size,
        )

    # ----------------------------------------------------------------- addresses
    @property
    def hubs(self) -> list[str]:
        return [h.name for h in self.config.hubs]

    @property
    def connection_string(self) -> str:
        name, key = self.config.default_policy
        return (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={name};SharedAccessKey={key};"
            "UseDevelopmentEmulator=true"
        )

    def connection_string_for(self, hub: str) -> str:
        return f"{self.connection_string};EntityPath={hub}"

    def sdk_tls_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an ``azure-eventhub`` client (with :attr:`connection_string`) that make
        it connect to the AMQPS listener, trusting the emulator's CA: what ``uamqp_transport=True``
        needs."""
        if self.tls is None or self.tls_port is None:
            raise RuntimeError("this emulator has no TLS listener (pass tls=ServerCerts)")
        return sdk_tls_kwargs(self.host, self.tls_port, str(self.tls.ca_path))

    # ----------------------------------------------------------------- receivers (epoch rules)
    def register_consumer(self, consumer: Consumer) -> None:
        """Apply the service's epoch rules for (hub, consumer group, partition); raise to refuse."""
        key = consumer.key
        existing = [c for c in self._receivers.get(key, []) if not c.link.detached]
        epochs = [c.epoch for c in existing if c.epoch is not None]
        new = consumer.epoch
        if new is not None:
            if epochs and max(epochs) > new:
                raise ReceiverStolen(_LOWER_EPOCH.format(old=max(epochs), new=new))
            for old in existing:
                if old.epoch is not None:
                    text = _STOLEN_BY_EPOCH.format(old=old.epoch, new=new)
                else:
                    text = _STOLEN_NON_EPOCH.format(new=new)
                old.link.detach(Condition.LINK_STOLEN, text)
            existing = []
        else:
            if epochs:
                raise ReceiverStolen(_EPOCH_EXISTS.format(old=max(epochs)))
            if len(existing) >= MAX_NON_EPOCH_READERS:
                raise QuotaExceeded(_TOO_MANY.format(n=MAX_NON_EPOCH_READERS))
        existing.append(consumer)
        self._receivers[key] = existing

    def unregister_consumer(self, consumer: Consumer) -> None:
        lst = self._receivers.get(consumer.key)
        if lst and consumer in lst:
            lst.remove(consumer)
            if not lst:
                del self._receivers[consumer.key]

    # ----------------------------------------------------------------- health
    def _health_check(self) -> tuple[bool, str]:
        """``GET /health`` (eventhubs/health.py): healthy while running and the store is open."""
        if self.state != "running":
            return False, f"Service is {self.state}."
        return self.store.health()


def sdk_tls_kwargs(host: str, tls_port: int, ca_path: str) -> dict[str, Any]:
    """The client keyword arguments of :meth:`EventHubsEmulator.sdk_tls_kwargs` (for another process)."""
    from azure.eventhub import TransportType

    return {
        "custom_endpoint_address": f"sb://{host}:{tls_port}",
        "transport_type": TransportType.Amqp,  # with a custom endpoint the SDK's default is WebSocket
        "connection_verify": ca_path,
    }


class EmulatorThread(LoopThread):
    """Run an ``EventHubsEmulator`` on its own event loop in a background thread (pytest, Locust, scripts).

    ``with EmulatorThread(EventHubsEmulator(cfg, port=0)) as emu: ...`` returns once it accepts connections.
    """

    def __init__(self, emulator: EventHubsEmulator, startup_timeout: float = 30.0) -> None:
        super().__init__(lambda: emulator, startup_timeout, name="eventhubs-emulator")
        self.emulator = emulator

    def start(self) -> EventHubsEmulator:
        return super().start()

    def __enter__(self) -> EventHubsEmulator:
        return self.start()
