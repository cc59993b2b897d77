"""GET /health on a loopback port: 200 JSON like Microsoft's emulator, 503/404/405/400 otherwise."""

from __future__ import annotations

import asyncio
import json

from enginehub.harness.eventhubs.health import HealthServer


async def request(port: int, raw: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    if raw and not raw.endswith(b"\r\n\r\n"):
        writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict]:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def test_health_ok_on_free_port() -> None:
    async with HealthServer(port=0) as server:
        assert server.port and server.port != 5300
        assert server.url == f"http://127.0.0.1:{server.port}/health"
        assert await get(server.port, "/health") == (
            200,
            {"status": "healthy", "message": "Service is healthy."},
        )
        assert (await get(server.port, "/health?x=1"))[0] == 200
    assert server.state == "stopped"


async def test_unhealthy_and_raising_check() -> None:
    state = {"ok": False}

    def check() -> tuple[bool, str]:
        if state.get("boom"):
            raise RuntimeError("disk gone")
        return state["ok"], "store closed" if not state["ok"] else "Service is healthy."

    async with HealthServer(port=0, check=check) as server:
        assert await get(server.port, "/health") == (503, {"status": "unhealthy", "message": "store closed"})
        state["ok"] = True
        assert (await get(server.port, "/health"))[0] == 200
        state["boom"] = True
        status, body = await get(server.port, "/health")
        assert status == 503 and "disk gone" in body["message"]


async def test_errors() -> None:
    async with HealthServer(port=0) as server:
        assert (await get(server.port, "/"))[0] == 404
        assert (await get(server.port, "/healthz"))[0] == 404
        assert (await get(server.port, "/health", "POST"))[0] == 405
        assert (await request(server.port, b"garbage\r\n\r\n"))[0] == 400
        assert (await request(server.port, b"GET /health"))[0] == 400  # ends without a blank line
        assert (await request(server.port, b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n"))[
            0
        ] == 400
        # still serving after all that
        assert (await get(server.port, "/health"))[0] == 200
