"""``GET /health`` over HTTP/1.1, like Microsoft's Event Hubs emulator (port 5300 there; 0 = a free port).

Healthy: ``200 {"status": "healthy", "message": "Service is healthy."}``; when the injected check says
otherwise: ``503 {"status": "unhealthy", "message": <reason>}``. Any other path is 404, another method
on ``/health`` is 405, a malformed request is 400. One request per connection (``Connection: close``).
Standard library only (``asyncio.start_server``); requests are bounded in size and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 5300
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
HEALTHY_MESSAGE = "Service is healthy."

HealthCheck = Callable[[], tuple[bool, str]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _always_healthy() -> tuple[bool, str]:
    return True, HEALTHY_MESSAGE


class HealthServer:
    """Lifecycle: ``await start()`` binds (port 0 picks one: see ``port``, ``url``); ``await stop()``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, check: HealthCheck | None = None
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.check = check or _always_healthy
        self.state = "new"  # new -> running -> stopped
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the health server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/health"

    async def start(self) -> None:
        if self.state == "running":
            return
        self._server = await asyncio.start_server(
            self._handle, self.host, self.requested_port, limit=MAX_REQUEST_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.state = "running"
        LOG.info("health endpoint listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.state = "stopped"

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                head = None
            if head is None or len(head) > MAX_REQUEST_BYTES:
                status, body = 400, {"status": "error", "message": "Malformed or oversized HTTP request."}
            else:
                status, body = self._route(head)
            payload = json.dumps(body).encode("utf-8")
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    "Content-Type: application/json; charset=utf-8\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                ).encode("ascii")
                + payload
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            if task is not None:
                self._clients.discard(task)

    def _route(self, head: bytes) -> tuple[int, dict[str, str]]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, {"status": "error", "message": "Malformed HTTP request line."}
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path.rstrip("/").lower() != "/health":
            return 404, {"status": "error", "message": f"No such path {path!r}; try GET /health."}
        if method not in ("GET", "HEAD"):
            return 405, {"status": "error", "message": f"Method {method} not allowed; use GET."}
        try:
            healthy, message = self.check()
        except Exception as exc:  # a failing check means unhealthy, never a crashed endpoint
            LOG.warning("health check raised: %r", exc)
            healthy, message = False, f"Health check failed: {exc!r}"
        if healthy:
            return 200, {"status": "healthy", "message": message}
        return 503, {"status": "unhealthy", "message": message}
