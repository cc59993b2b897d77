"""The device endpoint's TLS transport (``enginehub.harness.iothub.tls``) on loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from enginehub.harness.iothub.certs import mint
from enginehub.harness.iothub.testing import free_loopback_ip
from enginehub.harness.iothub.tls import TlsServer, start_tls_server

pytestmark = pytest.mark.integration


class _Recorder(asyncio.Protocol):
    made: list[_Recorder] = []

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[Exception | None] = []
        self.transport: asyncio.Transport | None = None
        _Recorder.made.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        if data.endswith(b"echo\n"):
            self.transport.write(bytes(self.data))  # type: ignore[union-attr]
        if data.endswith(b"big\n"):
            self.transport.write(b"x" * 8_000_000)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


@pytest.fixture
async def server(tmp_path: Path) -> tuple[TlsServer, str, ssl.SSLContext]:
    host = free_loopback_ip()
    certs = mint([host], [host]).write(tmp_path)
    _Recorder.made.clear()
    srv = await start_tls_server(
        asyncio.get_running_loop(), _Recorder, host, 0, certs.server_context(), handshake_timeout=0.5
    )
    client_ctx = ssl.create_default_context(cadata=certs.ca_pem.decode())
    yield srv, host, client_ctx
    srv.close()
    await srv.wait_closed()


async def _connect(host: str, port: int, ctx: ssl.SSLContext):  # type: ignore[no-untyped-def]
    return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)


async def test_echo_then_client_close_is_connection_lost_none(server) -> None:  # type: ignore[no-untyped-def]
    srv, host, ctx = server
    port = srv.sockets[0].getsockname()[1]
    r, w = await _connect(host, port, ctx)
    w.write(b"hello echo\n")
    assert await r.readexactly(11) == b"hello echo\n"
    w.close()
    for _ in range(100):
        if _Recorder.made and _Recorder.made[0].lost:
            break
        await asyncio.sleep(0.01)
    assert _Recorder.made[0].lost == [None]
    assert _Recorder.made[0].transport.get_extra_info("sockname")[0] == host  # type: ignore[union-attr]


async def test_close_flushes_a_large_write_then_close_notify(server) -> None:  # type: ignore[no-untyped-def]
    srv, host, ctx = server
    port = srv.sockets[0].getsockname()[1]
    r, w = await _connect(host, port, ctx)
    w.write(b"big\n")
    got = await asyncio.wait_for(r.read(), 10)  # EOF only after every byte (clean TLS close)
    assert got == b"x" * 8_000_000
    w.close()


async def test_pause_and_resume_reading(server) -> None:  # type: ignore[no-untyped-def]
    srv, host, ctx = server
    port = srv.sockets[0].getsockname()[1]
    r, w = await _connect(host, port, ctx)
    w.write(b"a")
    for _ in range(100):
        if _Recorder.made and _Recorder.made[0].data:
            break
        await asyncio.sleep(0.01)
    proto = _Recorder.made[0]
    proto.transport.pause_reading()  # type: ignore[union-attr]
    w.write(b"b")
    await asyncio.sleep(0.1)
    assert bytes(proto.data) == b"a"
    proto.transport.resume_reading()  # type: ignore[union-attr]
    for _ in range(100):
        if proto.data == b"ab":
            break
        await asyncio.sleep(0.01)
    assert bytes(proto.data) == b"ab"
    proto.transport.abort()  # type: ignore[union-attr]
    assert await asyncio.wait_for(r.read(), 5) == b""
    await asyncio.sleep(0)
    assert proto.lost == [None]


async def test_plain_tcp_and_silent_peers_never_reach_the_protocol(server) -> None:  # type: ignore[no-untyped-def]
    srv, host, _ = server
    port = srv.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    garbage = socket.create_connection((host, port))
    silent = socket.create_connection((host, port))
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
    garbage.setblocking(False)
    silent.setblocking(False)
    for s in (garbage, silent):  # both are closed by the server: bad handshake / 0.5 s timeout
        try:
            data = await asyncio.wait_for(loop.sock_recv(s, 100), 5)
        except ConnectionResetError:
            data = b""
        while data:
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 100), 5)
            except ConnectionResetError:
                data = b""
        s.close()
    assert _Recorder.made == []


async def test_bind_error_names_the_address(tmp_path: Path) -> None:
    host = free_loopback_ip()
    blocker = socket.socket()
    blocker.bind((host, 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"{port}.*address already in use"):
            await start_tls_server(
                asyncio.get_running_loop(),
                _Recorder,
                host,
                port,
                mint([host], [host]).write(tmp_path).server_context(),
            )
    finally:
        blocker.close()
