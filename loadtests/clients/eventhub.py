"""Event Hubs load clients: the official SDK's batched producer, and a raw producer on our AMQP codec.

Both are synchronous (blocking sockets): they run unchanged in Locust's gevent greenlets (sockets are
monkey-patched there) and in plain threads or scripts. Each reports one request per batch through the
injected request event (``eh.sdk send_batch`` / ``eh.raw send_batch``) with ``response_length`` = events.

Why a raw producer: the SDK spends ~105 µs of CPU per event just building a batch (it encodes every
``EventData`` to size it), so on a 2-core machine the load generator, not the pipeline, would be the
bottleneck. :class:`RawProducer` encodes each event with a fixed layout (properties section with the
message id, optional application properties, one data section: ~1-2 µs), wraps them in a batch envelope
(message-format ``0x80013700``, one data section per event, as the SDK sends it) and speaks just enough
AMQP 1.0 for that: SASL ANONYMOUS, OPEN/BEGIN, a ``$cbs`` put-token with a SAS token, one sender link,
transfers split to the peer's max-frame-size, settled dispositions back. It works against the emulator
and against a real namespace without TLS only (``UseDevelopmentEmulator=true``).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from enginehub.harness.amqp.codec import Described, Symbol, encode_binary, encode_value
from enginehub.harness.amqp.framing import (
    AMQP_HEADER,
    FRAME_AMQP,
    FRAME_SASL,
    SASL_HEADER,
    FrameParser,
    decode_performative,
    encode_frame,
)
from enginehub.harness.amqp.message import decode_message
from enginehub.harness.amqp.performatives import (
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Flow,
    Open,
    Properties,
    SASLInit,
    SASLMechanisms,
    SASLOutcome,
    Source,
    Target,
    Transfer,
)
from enginehub.harness.eventhubs.auth import generate_sas_token
from enginehub.loadtests.clients import NoOpEvent, RequestEvent, measure

LOG = logging.getLogger(__name__)

BATCH_MESSAGE_FORMAT = 0x80013700
SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"
_ACCEPTED = 0x24
_REJECTED = 0x25


# --------------------------------------------------------------------------------------- encoding (pure)
def encode_event(
    body: bytes, message_id: str | None = None, properties: dict[str, Any] | None = None
) -> bytes:
    """One AMQP message: [properties{message-id}] [application-properties] data(body)."""
    parts = []
    if message_id is not None:
        mid = message_id.encode("utf-8")
        if len(mid) < 200:
            parts.append(b"\x00\x53\x73\xc0" + bytes((len(mid) + 3, 1)) + b"\xa1" + bytes((len(mid),)) + mid)
        else:
            parts.append(Properties(message_id=message_id).encode_amqp())
    if properties:
        parts.append(b"\x00\x53\x74" + encode_value(dict(properties)))
    parts.append(b"\x00\x53\x75" + encode_binary(body))
    return b"".join(parts)


def encode_batch(events: Iterable[bytes]) -> bytes:
    """The batch envelope (message-format 0x80013700): one data section per encoded event."""
    return b"".join(b"\x00\x53\x75" + encode_binary(e) for e in events)


@dataclass(frozen=True)
class ConnectionInfo:
    host: str
    port: int
    policy: str
    key: str
    eventhub: str | None
    emulator: bool

    @property
    def namespace(self) -> str:
        return f"{self.host}:{self.port}"


def parse_connection_string(cs: str, eventhub: str | None = None) -> ConnectionInfo:
    """``Endpoint=sb://host[:port];SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..]``."""
    fields: dict[str, str] = {}
    for part in cs.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            fields[k.strip().lower()] = v.strip()
    endpoint = fields.get("endpoint", "")
    if not endpoint.startswith("sb://"):
        raise ValueError("connection string needs Endpoint=sb://host[:port]")
    netloc = endpoint[5:].strip("/")
    host, _, port = netloc.partition(":")
    if "sharedaccesskeyname" not in fields or "sharedaccesskey" not in fields:
        raise ValueError("connection string needs SharedAccessKeyName and SharedAccessKey")
    hub = eventhub or fields.get("entitypath")
    if not hub:
        raise ValueError("no event hub: pass eventhub= or put EntityPath in the connection string")
    emulator = fields.get("usedevelopmentemulator") == "true"
    return ConnectionInfo(
        host,
        int(port) if port else 5672,
        fields["sharedaccesskeyname"],
        fields["sharedaccesskey"],
        hub,
        emulator,
    )


# ------------------------------------------------------------------------------------------ raw producer
class AmqpError(Exception):
    """The peer refused something (detach, close, rejected outcome, non-2xx put-token)."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(f"{condition}: {description}")
        self.condition = condition
        self.description = description


def _error_of(value: Any) -> tuple[str, str]:
    """(condition, description) from an error composite / Described / None."""
    if value is None:
        return "unknown", "no error given"
    fields = getattr(value, "values", None)
    items = fields() if callable(fields) else (value.value if type(value) is Described else value)
    if isinstance(items, list) and items:
        return str(items[0]), str(items[1] if len(items) > 1 else "")
    return "unknown", repr(value)


def _state_code(state: Any) -> tuple[int | None, Any]:
    if state is None:
        return None, None
    code = getattr(state, "CODE", None)
    if code is not None:
        return int(code), getattr(state, "error", None)
    if type(state) is Described:
        inner = state.value
        return int(state.descriptor), (inner[0] if isinstance(inner, list) and inner else None)
    return None, None


class RawProducer:
    """``RawProducer(cs, eventhub, partition_id=None)``: ``open()``, ``send_batch(events)``, ``close()``.

    ``send_batch`` blocks until the batch's settled disposition arrives (accepted, or :class:`AmqpError`).
    ``partition_id=None`` sends to the hub (the emulator round-robins batches over partitions).
    """

    def __init__(
        self,
        connection_string: str,
        eventhub: str | None = None,
        partition_id: str | None = None,
        *,
        timeout: float = 10.0,
        request_event: RequestEvent | None = None,
        name: str = "eh.raw send_batch",
    ) -> None:
        self.info = parse_connection_string(connection_string, eventhub)
        self.partition_id = partition_id
        self.timeout = timeout
        self.event = request_event or NoOpEvent()
        self.name = name
        self.sock: socket.socket | None = None
        self._reset()
        self.events_sent = 0
        self.batches_sent = 0

    def _reset(self) -> None:
        """Connection state back to 'not connected' (the next send reconnects)."""
        self._parser = FrameParser(1 << 24)
        self._peer_max_frame = 512
        self._next_outgoing_id = 0
        self._remote_incoming_window = 0
        self._credit = 0
        self._delivery_count = 0
        self._next_delivery_id = 0
        self._outcomes: dict[int, tuple[int | None, Any]] = {}
        self._cbs_reply: Any = None
        self._attached: set[int] = set()
        self._detached: dict[int, Any] = {}
        self._closed: Any = None

    # -- low-level I/O ------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def _perf(self, perf: Any, payload: bytes = b"", frame_type: int = FRAME_AMQP) -> None:
        self._write(encode_frame(0, perf.encode_amqp() + payload, frame_type))

    def _recv(self, deadline: float) -> None:
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer from {self.info.namespace} within {self.timeout} s")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise TimeoutError(f"no answer from {self.info.namespace} within {self.timeout} s") from None
        if not data:
            raise ConnectionError(f"{self.info.namespace} closed the connection")
        self._parser.feed(data)

    def _take_header(self, expected: bytes, deadline: float) -> None:
        while (header := self._parser.take(8)) is None:
            self._recv(deadline)
        if header != expected:
            raise AmqpError("protocol-header", f"expected {expected!r}, got {header!r}")

    def _next_frame(self, deadline: float) -> tuple[int, Any, bytes, int]:
        while (frame := self._parser.next_frame()) is None:
            self._recv(deadline)
        if not frame.body:
            return frame.type, None, b"", 0
        perf, pos = decode_performative(frame.body)
        return frame.type, perf, frame.body, pos

    def _pump(self, done: Any, what: str) -> None:
        """Read and handle frames until ``done()`` is true; raise on close/detach of our links."""
        deadline = time.monotonic() + self.timeout
        while not done():
            _, perf, body, pos = self._next_frame(deadline)
            if perf is None:
                continue
            self._handle(perf, body, pos)
            if self._closed is not None:
                raise AmqpError(*_error_of(self._closed))
            for handle, err in self._detached.items():
                if handle in (0, 2):  # our cbs sender or the producer link
                    raise AmqpError(*_error_of(err))
        LOG.debug("%s done", what)

    def _handle(self, perf: Any, body: bytes, pos: int) -> None:
        kind = type(perf)
        if kind is Disposition:
            code, error = _state_code(perf.state)
            last = perf.last if perf.last is not None else perf.first
            for delivery_id in range(perf.first, last + 1):
                self._outcomes[delivery_id] = (code, error)
        elif kind is Flow:
            nxt = perf.next_incoming_id or 0
            self._remote_incoming_window = nxt + (perf.incoming_window or 0) - self._next_outgoing_id
            if perf.handle == 2:
                count = perf.delivery_count or 0
                self._credit = count + (perf.link_credit or 0) - self._delivery_count
        elif kind is Transfer:
            if perf.handle == 1:  # the $cbs reply
                self._cbs_reply = decode_message(body[pos:])
        elif kind is Attach:
            self._attached.add(int(perf.handle))
        elif kind is Detach:
            self._detached[int(perf.handle)] = perf.error or "detached"
        elif kind is End or kind is Close:
            self._closed = perf.error or "closed"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> RawProducer:
        try:
            return self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> RawProducer:
        info = self.info
        deadline = time.monotonic() + self.timeout
        self.sock = socket.create_connection((info.host, info.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write(SASL_HEADER)
        self._take_header(SASL_HEADER, deadline)
        ftype, perf, _, _ = self._next_frame(deadline)
        if ftype != FRAME_SASL or type(perf) is not SASLMechanisms:
            raise AmqpError("sasl", f"expected sasl-mechanisms, got {perf!r}")
        self._perf(SASLInit(Symbol("ANONYMOUS"), b"", info.host), frame_type=FRAME_SASL)
        _, outcome, _, _ = self._next_frame(deadline)
        if type(outcome) is not SASLOutcome or outcome.code != 0:
            raise AmqpError("sasl", f"SASL ANONYMOUS refused: {outcome!r}")
        container = f"enginehub-raw-{uuid.uuid4().hex[:12]}"
        self._write(AMQP_HEADER)
        self._perf(Open(container, info.host, 1 << 20, 8, None))
        self._perf(Begin(None, 0, 5000, 5000, 16))
        self._take_header(AMQP_HEADER, deadline)
        opened: list[Any] = []
        while not opened:
            _, perf, body, pos = self._next_frame(deadline)
            if type(perf) is Open:
                opened.append(perf)
            elif perf is not None:
                self._handle(perf, body, pos)
        self._peer_max_frame = int(opened[0].max_frame_size or 512)
        self._put_token()
        self._attach_producer()
        return self

    def _put_token(self) -> None:
        info = self.info
        audience = f"sb://{info.namespace}/{info.eventhub}"
        self._perf(Attach("cbs-sender", 0, False, 0, 0, Source("cbs-client"), Target("$cbs")))
        self._perf(Attach("cbs-receiver", 1, True, 0, 0, Source("$cbs"), Target("cbs-client")))
        self._perf(Flow(0, 5000, self._next_outgoing_id, 5000, 1, 0, 10, None, False, False, None))
        self._pump(lambda: {0, 1} <= self._attached and self._remote_incoming_window > 0, "cbs attach")
        token = generate_sas_token(audience, info.policy, info.key)
        request = (
            Properties(message_id=uuid.uuid4(), reply_to="cbs-client").encode_amqp()
            + b"\x00\x53\x74"
            + encode_value({"operation": "put-token", "name": audience, "type": SAS_TOKEN_TYPE})
            + b"\x00\x53\x77"
            + encode_value(token)
        )
        self._transfer(0, request, message_format=0, settled=True)
        self._pump(lambda: self._cbs_reply is not None, "put-token")
        props = self._cbs_reply.application_properties or {}
        status = props.get("status-code")
        if status not in (200, 202):
            raise AmqpError(f"cbs {status}", str(props.get("status-description")))

    def _attach_producer(self) -> None:
        info = self.info
        address = f"amqps://{info.namespace}/{info.eventhub}"
        if self.partition_id is not None:
            address += f"/Partitions/{self.partition_id}"
        name = f"raw-producer-{uuid.uuid4().hex[:8]}"
        self._perf(Attach(name, 2, False, 0, 0, Source(name), Target(address), None, None, 0))
        self._pump(lambda: 2 in self._attached and self._credit > 0, "producer attach")

    def _transfer(self, handle: int, payload: bytes, *, message_format: int, settled: bool) -> int:
        delivery_id = self._next_delivery_id
        self._next_delivery_id += 1
        tag = struct.pack(">I", delivery_id)
        first = Transfer(handle, delivery_id, tag, message_format, settled, False).encode_amqp()
        room = self._peer_max_frame - 8 - len(first) - 16
        if len(payload) <= room:
            self._write(encode_frame(0, first + payload))
            self._next_outgoing_id += 1
            self._remote_incoming_window -= 1
            return delivery_id
        chunks = [payload[i : i + room] for i in range(0, len(payload), room)]
        frames = []
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            if i == 0:
                perf = Transfer(handle, delivery_id, tag, message_format, settled, more)
            else:
                perf = Transfer(handle, None, None, None, settled, more)
            frames.append(encode_frame(0, perf.encode_amqp() + chunk))
        self._write(b"".join(frames))
        self._next_outgoing_id += len(chunks)
        self._remote_incoming_window -= len(chunks)
        return delivery_id

    def send_batch(self, events: Sequence[bytes]) -> None:
        """Send pre-encoded events (see :func:`encode_event`) as one batch; block until accepted."""
        with measure(self.event, "amqp", self.name) as m:
            m.response_length = len(events)
            try:
                if self.sock is None:
                    self.open()
                if self._credit <= 0 or self._remote_incoming_window <= 0:
                    self._pump(lambda: self._credit > 0 and self._remote_incoming_window > 0, "credit")
                delivery_id = self._transfer(
                    2, encode_batch(events), message_format=BATCH_MESSAGE_FORMAT, settled=False
                )
                self._credit -= 1
                self._delivery_count += 1
                self._pump(lambda: delivery_id in self._outcomes, "disposition")
            except (OSError, AmqpError):  # connection or link gone, or no answer: reconnect on the next send
                self.close()
                raise
            code, error = self._outcomes.pop(delivery_id)
            if code != _ACCEPTED:
                raise AmqpError(*_error_of(error)) if code == _REJECTED else AmqpError("outcome", repr(code))
        self.events_sent += len(events)
        self.batches_sent += 1

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self._perf(Close(None))
        except OSError:
            pass
        try:
            self.sock.close()
        finally:
            self.sock = None
            self._reset()

    def __enter__(self) -> RawProducer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ SDK producer
class SdkProducer:
    """The official SDK's batched producer (``EventHubProducerClient.create_batch`` + ``send_batch``).

    ``send_batch(bodies, message_ids)`` builds one ``EventDataBatch`` (this is where the SDK's ~105 µs per
    event goes) and sends it; reported as ``eh.sdk send_batch``.
    """

    def __init__(
        self,
        connection_string: str,
        eventhub: str | None = None,
        partition_id: str | None = None,
        *,
        request_event: RequestEvent | None = None,
        name: str = "eh.sdk send_batch",
        retry_total: int = 0,
    ) -> None:
        from azure.eventhub import EventHubProducerClient

        self.partition_id = partition_id
        self.event = request_event or NoOpEvent()
        self.name = name
        self.client = EventHubProducerClient.from_connection_string(
            connection_string, eventhub_name=eventhub, retry_total=retry_total
        )
        self.events_sent = 0

    def send_batch(self, bodies: Sequence[bytes], message_ids: Sequence[str] | None = None) -> None:
        from azure.eventhub import EventData

        with measure(self.event, "amqp", self.name) as m:
            m.response_length = len(bodies)
            batch = self.client.create_batch(partition_id=self.partition_id)
            for i, body in enumerate(bodies):
                event = EventData(body)
                if message_ids is not None:
                    event.message_id = message_ids[i]
                batch.add(event)
            self.client.send_batch(batch)
        self.events_sent += len(bodies)

    def close(self) -> None:
        self.client.close()
