"""A minimal asyncio IoT Hub device client built on :mod:`codec` (tests, benchmarks, raw load paths).

Not a replacement for ``azure-iot-device``: it speaks just enough MQTT to CONNECT with a SAS token,
PUBLISH telemetry, and read what the hub sends, with full control over the bytes (faults, fuzzing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from enginehub.harness.iothub import auth, codec, topics

LOG = logging.getLogger(__name__)


class RawDevice:
    def __init__(
        self,
        host: str,
        hostname: str,
        device_id: str,
        key: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None,
        port: int = 8883,
        token: str | None = None,
        ttl: float = 3600,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.device_id = device_id
        self.ssl_context = ssl_context
        if token is None and key is not None:
            token = auth.generate_sas_token(f"{hostname}/devices/{device_id}", key, ttl=ttl)
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.packets: asyncio.Queue[codec.Packet | None] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._next_pid = 0
        self.eof = asyncio.Event()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self.ssl_context,
            server_hostname=self.host if self.ssl_context else None,
        )

    def username(self) -> str:
        return f"{self.hostname}/{self.device_id}/?api-version=2019-10-01"

    async def connect(self, *, keepalive: int = 60, clean_session: bool = False, timeout: float = 10) -> int:
        """Open, send CONNECT, return the CONNACK return code. Starts the reader on success."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        pkt = codec.Connect(
            self.device_id,
            username=self.username(),
            password=(self.token or "").encode(),
            keepalive=keepalive,
            clean_session=clean_session,
        )
        self.writer.write(codec.encode(pkt))
        ack = await asyncio.wait_for(self._read(), timeout)
        if not isinstance(ack, codec.Connack):
            raise AssertionError(f"expected CONNACK, got {ack!r}")
        if ack.return_code == 0:
            self._task = asyncio.create_task(self._reader_loop())
        return ack.return_code

    async def _read(self) -> codec.Packet:
        assert self.reader is not None
        hdr = await self.reader.readexactly(2)
        while (parsed := codec.parse_fixed_header(hdr)) is None:
            hdr += await self.reader.readexactly(1)
        first, length, _ = parsed
        body = await self.reader.readexactly(length) if length else b""
        return codec.decode_body(first, body)

    async def _reader_loop(self) -> None:
        try:
            while True:
                pkt = await self._read()
                if isinstance(pkt, codec.Puback):
                    fut = self._acks.pop(pkt.packet_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                    continue
                await self.packets.put(pkt)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            self.eof.set()
            for fut in self._acks.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed before PUBACK"))
            await self.packets.put(None)

    def next_pid(self) -> int:
        self._next_pid = self._next_pid % 0xFFFF + 1
        return self._next_pid

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def publish_nowait(
        self,
        payload: bytes,
        properties: dict[str, str | None] | None = None,
        *,
        qos: int = 1,
        topic: str | None = None,
        dup: bool = False,
        packet_id: int | None = None,
    ) -> asyncio.Future[None] | None:
        """Send a PUBLISH; for QoS 1 return a future resolved by its PUBACK."""
        topic = topic or topics.telemetry_topic(self.device_id, properties)
        pid = (packet_id or self.next_pid()) if qos else None
        fut: asyncio.Future[None] | None = None
        if pid is not None:
            fut = asyncio.get_running_loop().create_future()
            self._acks[pid] = fut
        self.send(codec.encode(codec.Publish(topic, payload, qos, pid, dup)))
        return fut

    async def publish(
        self, payload: bytes, properties: dict[str, str | None] | None = None, **kw: object
    ) -> None:
        timeout = float(kw.pop("timeout", 10))  # type: ignore[arg-type]
        fut = self.publish_nowait(payload, properties, **kw)  # type: ignore[arg-type]
        if fut is not None:
            await asyncio.wait_for(fut, timeout)

    async def request(self, packet: codec.Packet, timeout: float = 10) -> codec.Packet | None:
        """Send a packet and return the next non-PUBACK packet from the hub (None on close)."""
        self.send(codec.encode(packet))
        return await self.next_packet(timeout)

    async def next_packet(self, timeout: float = 10) -> codec.Packet | None:
        return await asyncio.wait_for(self.packets.get(), timeout)

    async def wait_closed_by_server(self, timeout: float = 10) -> float:
        """Wait until the hub closes the connection; return the seconds waited."""
        t0 = time.monotonic()
        if self._task is None and self.reader is not None:
            # not connected yet (refused): read to EOF
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
                await asyncio.wait_for(self.reader.read(), timeout)
            return time.monotonic() - t0
        await asyncio.wait_for(self.eof.wait(), timeout)
        return time.monotonic() - t0

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.write(codec.encode(codec.Disconnect()))
            self.writer.transport.abort()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 2)
