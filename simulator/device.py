"""One simulated device: a real ``azure-iot-device`` aio client behind a small resilient wrapper.

What the SDK does not do and this wrapper adds (docs/iothub-device-protocol.md §3, §7):

- a timeout on every send (the SDK waits for the PUBACK forever) and on every connect;
- its own reconnect, with exponential backoff and jitter from a seeded RNG (the SDK retries every 10 s
  in lockstep): the SDK client is created with ``connection_retry=False, auto_connect=False`` so a drop
  fails the in-flight sends at once, and we re-send them with the SAME message id (the consumer keeps one
  row per id, so at-least-once delivery gives exactly one row);
- credential errors (CONNACK 4/5) are fatal and say so; transport errors are retried a bounded number
  of times, then the device reports the hub unreachable;
- SDK INFO logging stays off (it costs ~20 % throughput): ``quiet_sdk_logging()``.

``ResilientDevice`` works over any ``DeviceClient`` (the SDK, or a fake in unit tests) and an injected
clock and RNG.
"""

from __future__ import annotations

import asyncio
import logging
import random
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from enginehub.simulator.clock import Clock
from enginehub.simulator.credentials import DeviceCredentials
from enginehub.simulator.messages import OutMessage
from enginehub.simulator.stats import Stats

LOG = logging.getLogger(__name__)


class DeviceError(Exception):
    """A device cannot go on; ``kind`` is ``auth`` (credentials refused) or ``unreachable``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DeviceClient(Protocol):
    async def connect(self) -> None: ...

    async def send(self, message: OutMessage) -> None: ...

    async def disconnect(self) -> None: ...

    async def shutdown(self) -> None: ...


def quiet_sdk_logging(level: int = logging.ERROR) -> None:
    """Keep the SDK's and paho's per-message INFO (and per-drop WARNING) logging off."""
    for name in ("azure.iot.device", "paho", "azure.iot.device.common.handle_exceptions"):
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"azure\..*")
    warnings.filterwarnings("ignore", message=r"ssl\.PROTOCOL_TLS", category=DeprecationWarning)


def quiet_sdk_futures(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Loop exception handler: the SDK completes futures of cancelled connects from its own threads;
    log those at DEBUG instead of as asyncio ERROR tracebacks; everything else as usual."""
    exc = context.get("exception")
    if isinstance(exc, asyncio.InvalidStateError) or type(exc).__module__.startswith("azure.iot.device"):
        LOG.debug("SDK background future: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


def _sdk_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(fatal credential errors, transient transport errors) of the SDK."""
    from azure.iot.device import exceptions as ex

    fatal = (ex.CredentialError,)
    transient = (
        ex.ConnectionFailedError,
        ex.ConnectionDroppedError,
        ex.NoConnectionError,
        ex.OperationCancelled,
        ex.OperationTimeout,
        ex.ClientError,
    )
    return fatal, transient


class SdkClient:
    """``DeviceClient`` over ``azure.iot.device.aio.IoTHubDeviceClient``."""

    def __init__(
        self, creds: DeviceCredentials, *, ca_cert_pem: str | None = None, keep_alive: int = 60
    ) -> None:
        from azure.iot.device.aio import IoTHubDeviceClient

        kwargs: dict[str, object] = {
            "connection_retry": False,
            "auto_connect": False,
            "keep_alive": keep_alive,
        }
        if ca_cert_pem:
            kwargs["server_verification_cert"] = ca_cert_pem
        self.device_id = creds.device_id
        self._client = IoTHubDeviceClient.create_from_connection_string(creds.connection_string(), **kwargs)

    async def connect(self) -> None:
        await self._client.connect()

    async def send(self, message: OutMessage) -> None:
        from azure.iot.device import Message

        m = Message(
            message.body,
            message_id=message.message_id,
            content_encoding=message.content_encoding,
            content_type=message.content_type,
        )
        m.custom_properties = dict(message.properties)
        await self._client.send_message(m)

    async def disconnect(self) -> None:
        await self._client.disconnect()

    async def shutdown(self) -> None:
        await self._client.shutdown()

    async def enable_commands(
        self,
        on_method: Callable[[str, Any], Awaitable[tuple[int, Any]]],
        on_desired: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Answer direct methods with ``on_method(name, payload) -> (status, payload)`` and pass desired
        patches to ``on_desired``. The SDK runs handlers on its own handler thread; the callbacks given
        here are run on the caller's loop. Setting a handler subscribes (the SDK blocks until SUBACK), so
        that happens in a worker thread."""
        from azure.iot.device import MethodResponse

        loop = asyncio.get_running_loop()
        client = self._client

        async def method_handler(request: Any) -> None:
            fut = asyncio.run_coroutine_threadsafe(on_method(request.name, request.payload), loop)
            status, payload = await asyncio.wrap_future(fut)
            response = MethodResponse.create_from_method_request(request, status, payload)
            await client.send_method_response(response)

        async def desired_handler(patch: dict[str, Any]) -> None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_desired(patch), loop))

        await asyncio.to_thread(setattr, client, "on_method_request_received", method_handler)
        await asyncio.to_thread(setattr, client, "on_twin_desired_properties_patch_received", desired_handler)

    async def report(self, properties: dict[str, Any]) -> None:
        """Write reported properties (a twin PATCH)."""
        await self._client.patch_twin_reported_properties(properties)


@dataclass(frozen=True)
class DevicePolicy:
    send_timeout: float = 10.0
    connect_timeout: float = 15.0
    send_attempts: int = 5
    connect_attempts: int = 6
    backoff_base: float = 0.25
    backoff_cap: float = 8.0
    timeouts_before_reconnect: int = 2


class ResilientDevice:
    """Sends with a timeout, reconnects with jittered backoff, re-sends with the same message id."""

    def __init__(
        self,
        device_id: str,
        client: DeviceClient,
        *,
        clock: Clock,
        rng: random.Random,
        stats: Stats,
        policy: DevicePolicy | None = None,
        fatal: tuple[type[BaseException], ...] | None = None,
        transient: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        self.device_id = device_id
        self.client = client
        self.clock = clock
        self.rng = rng
        self.stats = stats
        self.policy = policy or DevicePolicy()
        if fatal is None or transient is None:
            fatal, transient = _sdk_errors()
        self._fatal = fatal
        self._transient = transient
        self._lock = asyncio.Lock()
        self.connected = False
        self._generation = 0
        self.pending = 0
        self.acked = 0
        self.ever_connected = False
        self._timeouts_in_row = 0

    def backoff(self, attempt: int) -> float:
        """Seconds before reconnect attempt `attempt` (1-based): exponential, capped, jitter x0.5..1.5."""
        p = self.policy
        return min(p.backoff_cap, p.backoff_base * 2 ** (attempt - 1)) * (0.5 + self.rng.random())

    async def ensure_connected(self) -> None:
        if self.connected:
            return
        async with self._lock:
            attempt = 0
            while not self.connected:
                try:
                    await asyncio.wait_for(self.client.connect(), self.policy.connect_timeout)
                except self._fatal as exc:
                    raise DeviceError(
                        "auth", f"IoT Hub refused the credentials of device {self.device_id}: {_why(exc)}"
                    ) from None
                except (TimeoutError, *self._transient) as exc:
                    attempt += 1
                    self.stats.connect_errors += 1
                    if attempt >= self.policy.connect_attempts:
                        raise DeviceError(
                            "unreachable",
                            f"cannot connect device {self.device_id} after {attempt} attempts: {_why(exc)}",
                        ) from None
                    await self.clock.sleep(self.backoff(attempt))
                else:
                    if self.ever_connected:
                        self.stats.reconnects += 1
                    self.connected = self.ever_connected = True

    def _broken(self, generation: int) -> None:
        if generation == self._generation and self.connected:
            self.connected = False
            self._generation += 1

    async def send(self, message: OutMessage) -> bool:
        """Deliver `message` (True once acked; False after every attempt failed). DeviceError is fatal."""
        self.pending += 1
        try:
            for attempt in range(self.policy.send_attempts):
                if attempt:
                    self.stats.retries += 1
                await self.ensure_connected()
                generation = self._generation
                try:
                    await asyncio.wait_for(self.client.send(message), self.policy.send_timeout)
                except TimeoutError:
                    # no PUBACK in time: the message may still have arrived, so the re-send keeps its id.
                    # One timeout: re-send on the same connection (a lost PUBACK); a second in a row:
                    # the connection is presumed half-dead, reconnect (that cancels the device's other
                    # in-flight sends, which re-send too -- so not on the first timeout)
                    self.stats.timeouts += 1
                    self._timeouts_in_row += 1
                    if self._timeouts_in_row >= self.policy.timeouts_before_reconnect:
                        self._timeouts_in_row = 0
                        await self._drop(generation)
                except self._transient as exc:
                    LOG.debug("send %s from %s failed: %s", message.message_id, self.device_id, _why(exc))
                    self._broken(generation)
                else:
                    self.acked += 1
                    self._timeouts_in_row = 0
                    return True
            return False
        finally:
            self.pending -= 1

    async def _drop(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._broken(generation)
        try:
            await asyncio.wait_for(self.client.disconnect(), self.policy.connect_timeout)
        except (TimeoutError, *self._transient, *self._fatal):
            pass

    async def bounce(self) -> None:
        """Disconnect now and reconnect (the ``--disconnect-every`` fault)."""
        await self._drop(self._generation)
        await self.clock.sleep(self.backoff(1))
        await self.ensure_connected()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown(), self.policy.connect_timeout)
        except Exception as exc:  # shutting down: report, never raise
            LOG.debug("shutdown of %s: %s", self.device_id, _why(exc))
        self.connected = False


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({type(cause).__name__}: {cause})"
    return text
