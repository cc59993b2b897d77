"""Back off while Event Hubs refuses connections, instead of azure-eventhub 5.15's tight retry loop.

azure-eventhub 5.15.1: a refused connect makes ``EventHubConsumer.receive()`` return normally (its
connection-error cleanup looks like a user close), and ``EventProcessor._receive`` calls it again at once:
a whole CPU, no log line, no ``on_error`` (ingest/README.md, "When Event Hubs is unreachable").

While the processor runs, ``receive()`` only returns when the connection is gone. :class:`ReconnectBackoff`
wraps the ``receive`` of each consumer the processor creates: after such a return it probes the endpoint
(a TCP connect) and sleeps, capped exponential, until the endpoint accepts; then it returns, and the SDK
reconnects and reads on from the last checkpoint. Nothing is read or checkpointed in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

LOG = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class BackoffPolicy:
    #: first delay after a receive that ended without the processor stopping
    initial: float = 0.1
    #: the cap: also the longest wait between the endpoint answering and the next connect attempt
    cap: float = 2.0
    #: a receive that lasted this long was a working connection: the next failure starts at ``initial``
    healthy_after: float = 10.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.initial * (2 ** max(0, attempt)))


class ReconnectBackoff:
    """Per partition: counts quick consecutive connection losses and sleeps between them, probing the
    endpoint with ``probe`` (injected; a TCP connect in production) until it answers."""

    def __init__(
        self,
        probe: Probe,
        policy: BackoffPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.policy = policy or BackoffPolicy()
        self._sleep = sleep
        self._clock = clock
        self._attempts: dict[str, int] = {}
        self.waits = 0  # sleeps taken, all partitions (for tests and metrics)

    async def after_receive(self, pid: str, lasted: float) -> None:
        """Called when ``receive()`` of partition ``pid`` returned after ``lasted`` seconds while the
        processor still runs. Returns once the endpoint accepts TCP connections again."""
        attempt = 0 if lasted >= self.policy.healthy_after else self._attempts.get(pid, 0)
        started = self._clock()
        refused = 0
        while True:
            delay = self.policy.delay(attempt)
            self.waits += 1
            await self._sleep(delay)
            attempt += 1
            if await self._probe():
                break
            refused += 1
            if refused == 1 or delay < self.policy.cap <= self.policy.delay(attempt):
                LOG.warning(
                    "partition %s: Event Hubs refuses connections; retrying with backoff "
                    "(now %.1f s, cap %.1f s)",
                    pid,
                    self.policy.delay(attempt),
                    self.policy.cap,
                )
        self._attempts[pid] = attempt
        if refused:
            LOG.info(
                "partition %s: Event Hubs accepts connections again after %.1f s; reconnecting",
                pid,
                self._clock() - started,
            )

    def wrap_receive(self, pid: str, receive: Callable[..., Awaitable[None]], running: Callable[[], bool]):
        """``receive`` with a backoff after each return while ``running()``."""

        async def receive_with_backoff(*args: Any, **kwargs: Any) -> None:
            began = self._clock()
            await receive(*args, **kwargs)
            if running():
                await self.after_receive(pid, self._clock() - began)

        return receive_with_backoff


def endpoint_of(client: Any) -> tuple[str, int] | None:
    """(host, port) the SDK client connects to, from its configuration; None when it cannot be told."""
    config = getattr(client, "_config", None)
    if config is None:
        return None
    custom = getattr(config, "custom_endpoint_address", None)
    if custom:
        url = urlparse(custom if "//" in custom else "sb://" + custom)
        if url.hostname:
            return url.hostname, url.port or int(getattr(config, "connection_port", 0) or 443)
    host = getattr(config, "hostname", None)
    if not host:
        return None
    host = host.split("/", 1)[0]
    url = urlparse("sb://" + host)
    if not url.hostname:
        return None
    return url.hostname, url.port or int(getattr(config, "connection_port", 0) or 5671)


def tcp_probe(host: str, port: int, timeout: float = 1.0) -> Probe:
    """A probe that is True when ``host:port`` accepts a TCP connection (closed at once)."""

    async def probe() -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError):
            return False
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True

    return probe


async def _always() -> bool:
    return True


def install(processor: Any, backoff: ReconnectBackoff) -> bool:
    """Wrap ``processor.create_consumer`` so each consumer's ``receive`` backs off (see module doc).
    False (nothing changed) when the SDK's internals are not what this was written against."""
    create = getattr(processor, "create_consumer", None)
    if create is None or not hasattr(processor, "_running"):
        return False

    def create_consumer(partition_id: str, *args: Any, **kwargs: Any) -> Any:
        consumer = create(partition_id, *args, **kwargs)
        receive = getattr(consumer, "receive", None)
        if receive is not None:
            consumer.receive = backoff.wrap_receive(partition_id, receive, lambda: bool(processor._running))
        return consumer

    processor.create_consumer = create_consumer
    return True


def for_client(client: Any, policy: BackoffPolicy | None = None) -> ReconnectBackoff:
    """A backoff probing the endpoint ``client`` connects to (no probe, plain backoff, when unknown)."""
    endpoint = endpoint_of(client)
    if endpoint is None:
        LOG.warning("could not tell the Event Hubs endpoint; backing off without probing it")
        return ReconnectBackoff(_always, policy)
    return ReconnectBackoff(tcp_probe(*endpoint), policy)
