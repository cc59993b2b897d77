"""A TLS server transport for the device endpoint: the socket's own TLS (``SSLSocket``) under the event loop.

asyncio's ``create_server(ssl=...)`` runs TLS through ``SSLProtocol`` in Python (a memory BIO per direction,
``SSLObject.read`` until ``SSLWantReadError``, a copy per write): on 3.11 that is ~25 us of CPU per small
record, a fifth of the hub's cost per telemetry message. Here a readable socket is one ``recv`` that
decrypts in C and a PUBACK one ``send`` that encrypts in C.

``start_tls_server(loop, protocol_factory, host, port, ssl_context, ...)`` returns a :class:`TlsServer`
(``close``, ``wait_closed``, ``sockets``); each accepted connection completes its handshake (within
``handshake_timeout``; a failed or late one is dropped before the protocol exists), then gets a
:class:`TlsTransport` with what an ``asyncio.Protocol`` uses: ``write`` (buffered while the socket is
full), ``close`` (flush, close_notify, close), ``abort``, ``pause_reading``/``resume_reading``,
``is_closing``, ``get_extra_info`` (``peername``, ``sockname``, ``socket``, ``ssl_object``, ``peercert``,
``cipher``). ``connection_lost`` runs once, from the loop, after the socket is closed; end of stream
(with or without close_notify) is ``connection_lost(None)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

_RECV_SIZE = 65536
_ACCEPTS_PER_WAKEUP = 128


class TlsTransport(asyncio.Transport):
    """One accepted, handshaken TLS connection driven by ``add_reader``/``add_writer``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket, protocol: asyncio.Protocol):
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._out = bytearray()  # unsent bytes; a failed send is retried from the same start
        self._closing = False  # close() called: flush, then shut down
        self._closed = False  # socket closed, connection_lost scheduled
        self._reading = False
        self._paused = False
        self._extra: dict[str, Any] = {
            "socket": sock,
            "ssl_object": sock,
            "sslcontext": sock.context,
        }
        with contextlib.suppress(OSError):
            self._extra["peername"] = sock.getpeername()
            self._extra["sockname"] = sock.getsockname()

    # --- start ---------------------------------------------------------------------------------

    def _start(self) -> None:
        self._protocol.connection_made(self)
        if not self._closed and not self._closing and not self._paused:
            self._add_reader()
            self._read_ready()  # the handshake may have left application data buffered

    def _add_reader(self) -> None:
        if not self._reading:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _remove_reader(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    # --- reading -------------------------------------------------------------------------------

    def _read_ready(self) -> None:
        sock = self._sock
        while not self._closed and not self._closing and not self._paused:
            try:
                data = sock.recv(_RECV_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                return  # renegotiation-style write need: the next read retries it
            except (OSError, ssl.SSLError) as exc:
                self._force_close(exc)
                return
            if not data:
                self._force_close(None)
                return
            self._protocol.data_received(data)
            if not sock.pending():
                return  # anything still on the socket wakes the selector again

    def pause_reading(self) -> None:
        if self._closed or self._paused:
            return
        self._paused = True
        self._remove_reader()

    def resume_reading(self) -> None:
        if self._closed or not self._paused:
            return
        self._paused = False
        if not self._closing:
            self._add_reader()
            self._loop.call_soon(self._read_ready)  # decrypted bytes may be waiting inside the TLS layer

    def is_reading(self) -> bool:
        return not self._paused and not self._closed and not self._closing

    # --- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._closing or not data:
            return
        if self._out:
            self._out += data
            return
        try:
            n = self._sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            n = 0
        except (OSError, ssl.SSLError) as exc:
            self._force_close(exc)
            return
        if n < len(data):
            self._out += memoryview(data)[n:]
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self) -> None:
        if self._closed:
            return
        try:
            n = self._sock.send(self._out)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            return
        except (OSError, ssl.SSLError) as exc:
            self._force_close(exc)
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._shutdown()

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    def can_write_eof(self) -> bool:
        return False

    # --- closing -------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def close(self) -> None:
        """Flush what was written, send close_notify, close the socket."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._remove_reader()
        if not self._out:
            self._shutdown()

    def abort(self) -> None:
        self._force_close(None)

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):
            self._sock.unwrap()  # sends close_notify; does not wait for the peer's (non-blocking)
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._remove_reader()
        if self._out:
            self._out.clear()
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(OSError):
            self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    # --- information ---------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peercert":
            with contextlib.suppress(ValueError):
                return self._sock.getpeercert()
            return default
        if name == "cipher":
            return self._sock.cipher()
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol


class TlsServer:
    """Listening sockets accepting TLS connections for ``protocol_factory``; ``close()`` stops accepting
    (established connections are closed by their owner)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        socks: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self.sockets = socks
        self._factory = protocol_factory
        self._ctx = ssl_context
        self._handshake_timeout = handshake_timeout
        self._handshaking: set[ssl.SSLSocket] = set()
        self._closed = asyncio.Event()
        for s in socks:
            loop.add_reader(s.fileno(), self._accept, s)

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                raw, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
                LOG.warning("accept failed: %s", exc)
                return
            raw.setblocking(False)
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock = self._ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError) as exc:
                LOG.debug("TLS setup failed: %s", exc)
                raw.close()
                continue
            self._handshaking.add(sock)
            timer = self._loop.call_later(self._handshake_timeout, self._handshake_failed, sock, None)
            self._loop.add_reader(sock.fileno(), self._handshake, sock, timer)
            self._handshake(sock, timer)

    def _handshake(self, sock: ssl.SSLSocket, timer: asyncio.TimerHandle) -> None:
        if sock not in self._handshaking:
            return
        fd = sock.fileno()
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.remove_writer(fd)
            return
        except ssl.SSLWantWriteError:
            self._loop.add_writer(fd, self._handshake, sock, timer)
            return
        except (OSError, ssl.SSLError) as exc:
            timer.cancel()
            self._handshake_failed(sock, exc)
            return
        timer.cancel()
        self._handshaking.discard(sock)
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        if self._closed.is_set():
            sock.close()
            return
        try:
            protocol = self._factory()
        except Exception:
            LOG.exception("protocol factory failed")
            sock.close()
            return
        TlsTransport(self._loop, sock, protocol)._start()

    def _handshake_failed(self, sock: ssl.SSLSocket, exc: Exception | None) -> None:
        if sock not in self._handshaking:
            return
        self._handshaking.discard(sock)
        LOG.debug("TLS handshake failed: %s", exc or "timed out")
        with contextlib.suppress(OSError, ValueError):
            fd = sock.fileno()
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        sock.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for s in self.sockets:
            self._loop.remove_reader(s.fileno())
            s.close()
        for sock in list(self._handshaking):
            self._handshake_failed(sock, None)

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


async def start_tls_server(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    backlog: int = 4096,
    handshake_timeout: float = 15.0,
) -> TlsServer:
    """Listen on every address ``host`` resolves to (all interfaces for ``""``), like ``create_server``."""
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            if port and not addr[1]:
                addr = (addr[0], port, *addr[2:])
            s = socket.socket(family, type_, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(addr)
            except OSError as exc:  # the message create_server gives, naming the address
                msg = f"error while attempting to bind on address {addr!r}: {(exc.strerror or '').lower()}"
                raise OSError(exc.errno, msg) from None
            if port == 0 and len(socks) == 1:
                port = s.getsockname()[1]  # every address on the same ephemeral port
            s.listen(backlog)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return TlsServer(loop, socks, protocol_factory, ssl_context, handshake_timeout)
