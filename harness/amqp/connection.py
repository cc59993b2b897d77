"""asyncio AMQP 1.0 server connection: protocol headers, SASL, sessions, links, flow control, teardown.

One ``AMQPConnection`` (an ``asyncio.Protocol``) per TCP connection. It speaks the wire protocol and hands
application events to a ``ConnectionHandler`` (the Event Hubs layer): links attached / detached, messages
received (complete, multi-frame reassembled), credit granted by the peer.

Wire rules kept here (see docs/eventhubs-emulator.md §0): every performative is written with all fields;
producer deliveries are settled by a settled disposition; outgoing deliveries are pre-settled; frames on
channels the peer has already ended are ignored; transfers pipelined on a link we refused are dropped.
Bad input (garbage, wrong protocol header, oversize frame, unknown performative, unknown channel/handle)
ends only this connection, with a CLOSE carrying the AMQP error when the protocol state allows.

Not implemented (not used by the Azure SDKs): resuming deliveries, unsettled-map recovery,
transactions, outgoing flow ``available``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from enginehub.harness.amqp.codec import Array, Symbol, encode_uint
from enginehub.harness.amqp.errors import (
    AMQPConnectionError,
    CodecError,
    Condition,
    LinkError,
)
from enginehub.harness.amqp.framing import (
    AMQP_HEADER,
    FRAME_AMQP,
    FRAME_SASL,
    HEARTBEAT,
    MIN_MAX_FRAME_SIZE,
    SASL_HEADER,
    FrameParser,
    FramingError,
    decode_performative,
    encode_frame,
)
from enginehub.harness.amqp.performatives import (
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Open,
    Rejected,
    SASLInit,
    SASLMechanisms,
    SASLOutcome,
    Transfer,
)

LOG = logging.getLogger(__name__)

_FRAME_HDR = struct.Struct(">IBBH").pack
MAX_DELIVERY_BYTES = 64 * 1024 * 1024  # hard cap on one reassembled incoming delivery
DEFAULT_WINDOW = 5000
DEFAULT_LINK_CREDIT = 1000
FLUSH_BYTES = 256 * 1024  # buffered output handed to the transport at once (then flow control applies)


class ConnectionHandler:
    """Application callbacks. Override what you need; all run on the event-loop thread."""

    def connection_made(self, conn: AMQPConnection) -> None:
        """The TCP connection is up (before any AMQP traffic)."""

    def on_open(self, conn: AMQPConnection, frame: Open) -> None:
        """The peer's OPEN arrived (our OPEN is sent right after)."""

    def on_attach(self, link: Link) -> None:
        """A link is being attached; raise ``LinkError`` to refuse it (attach echoed, then detached)."""

    def on_message(self, link: Link, delivery: Delivery) -> Any:
        """A complete message arrived on a link where we receive. Return an outcome composite (accepted,
        rejected, ...) to settle it, or None to leave it unsettled."""
        return None

    def on_credit(self, link: Link) -> None:
        """A link where we send may send again (credit granted or the session window re-opened)."""

    def on_detach(self, link: Link, error: Error | None) -> None:
        """A link ended (by the peer, by us, by END or by connection loss); called once per link."""

    def on_writable(self) -> None:
        """The transport drained its write buffer after a pause."""

    def on_close(self) -> None:
        """The connection is gone (called once)."""


class Delivery:
    __slots__ = ("delivery_id", "tag", "message_format", "settled", "payload")

    def __init__(
        self, delivery_id: int, tag: bytes, message_format: int, settled: bool, payload: bytes
    ) -> None:
        self.delivery_id = delivery_id
        self.tag = tag
        self.message_format = message_format
        self.settled = settled
        self.payload = payload


class Link:
    """Our end of a link. ``is_sender``: True when WE send (the peer attached as receiver)."""

    __slots__ = (
        "session",
        "name",
        "handle",
        "remote_handle",
        "is_sender",
        "attach",
        "source",
        "target",
        "credit",
        "delivery_count",
        "max_message_size",
        "remote_max_message_size",
        "snd_settle_mode",
        "offered_capabilities",
        "reply_properties",
        "initial_credit",
        "detached",
        "app",
        "_partial",
        "_partial_meta",
        "_partial_size",
        "_transfer_prefix",
        "drain",
    )

    def __init__(self, session: Session, handle: int, attach: Attach) -> None:
        self.session = session
        self.name = attach.name
        self.handle = handle
        self.remote_handle = attach.handle
        self.is_sender = bool(attach.role)  # peer is receiver -> we send
        self.attach = attach
        self.source = attach.source
        self.target = attach.target
        self.credit = 0
        self.delivery_count = 0
        self.max_message_size: int | None = None  # what we advertise (and enforce when we receive)
        self.remote_max_message_size = attach.max_message_size or 0
        self.snd_settle_mode = 1 if self.is_sender else attach.snd_settle_mode
        self.offered_capabilities: Any = None
        self.reply_properties: dict[Any, Any] | None = None
        self.initial_credit = DEFAULT_LINK_CREDIT
        self.detached = False
        self.app: Any = None
        self._partial: list[bytes] | None = None
        self._partial_meta: Transfer | None = None
        self._partial_size = 0
        self._transfer_prefix = b""
        self.drain = False  # the peer asked us to use up or give back its credit (flow drain=true)

    @property
    def connection(self) -> AMQPConnection:
        return self.session.connection

    @property
    def desired_capabilities(self) -> list[str]:
        caps = self.attach.desired_capabilities
        if caps is None:
            return []
        return [caps] if isinstance(caps, str) else list(caps)

    @property
    def properties(self) -> dict[Any, Any]:
        return self.attach.properties if isinstance(self.attach.properties, dict) else {}

    @property
    def can_send(self) -> bool:
        s = self.session
        return (
            self.credit > 0
            and not self.detached
            and s.remote_incoming_window > 0
            and not s.ended
            and not s.connection.write_paused
            and not s.connection.closed
        )

    def send(self, payload: bytes, message_format: int = 0) -> None:
        """Send one pre-settled delivery (split into frames as the peer's max-frame-size requires).
        The caller checks ``can_send`` first; credit and windows are accounted here."""
        session = self.session
        conn = session.connection
        delivery_id = session.next_delivery_id
        session.next_delivery_id = (delivery_id + 1) & 0xFFFFFFFF
        tag = delivery_id.to_bytes(4, "big")
        fields = (
            (self._transfer_prefix or self._make_prefix())
            + encode_uint(delivery_id)
            + b"\xa0\x04"
            + tag
            + (b"\x43" if message_format == 0 else encode_uint(message_format))
            + b"\x41"
        )
        perf = b"\x00\x53\x14\xc0" + bytes((len(fields) + 7, 11)) + fields + b"\x42\x40\x40\x40\x40\x40"
        total = 8 + len(perf) + len(payload)
        if total <= conn.remote_max_frame_size:
            conn.write(_FRAME_HDR(total, 2, 0, session.channel) + perf + payload)
            session.remote_incoming_window -= 1
            session.next_outgoing_id += 1
        else:
            perf_more = (
                b"\x00\x53\x14\xc0" + bytes((len(fields) + 7, 11)) + fields + b"\x41\x40\x40\x40\x40\x40"
            )
            room = conn.remote_max_frame_size - 8 - len(perf_more)
            view = memoryview(payload)
            pos = 0
            while len(payload) - pos > room:
                chunk = view[pos : pos + room]
                conn.write(
                    _FRAME_HDR(8 + len(perf_more) + len(chunk), 2, 0, session.channel) + perf_more + chunk
                )
                pos += room
                session.remote_incoming_window -= 1
                session.next_outgoing_id += 1
            chunk = view[pos:]
            conn.write(_FRAME_HDR(8 + len(perf) + len(chunk), 2, 0, session.channel) + perf + chunk)
            session.remote_incoming_window -= 1
            session.next_outgoing_id += 1
        self.credit -= 1
        self.delivery_count = (self.delivery_count + 1) & 0xFFFFFFFF

    def _make_prefix(self) -> bytes:
        self._transfer_prefix = encode_uint(self.handle)
        return self._transfer_prefix

    def finish_drain(self) -> None:
        """(We send) nothing more to send: consume the remaining credit and tell the peer (drain reply)."""
        if not self.drain or self.detached:
            return
        self.drain = False
        self.delivery_count = (self.delivery_count + self.credit) & 0xFFFFFFFF
        self.credit = 0
        ni, iw, no, ow = self.session.flow_fields()
        self.connection.send_performative(
            self.session.channel,
            Flow(ni, iw, no, ow, self.handle, self.delivery_count, 0, 0, True, False, None),
        )

    def grant(self, credit: int) -> None:
        """(We receive) grant ``credit`` to the peer's sender."""
        self.credit = credit
        self.session.send_flow(self)

    def detach(self, condition: Condition | str | None = None, description: str | None = None) -> None:
        """Detach (closed=true) from our side, with an error when ``condition`` is given."""
        if self.detached:
            return
        error = None
        if condition is not None:
            cond = condition.value if isinstance(condition, Condition) else condition
            error = Error(Symbol(cond), description, None)
        self.session.detach_link(self, error)


class Session:
    __slots__ = (
        "connection",
        "channel",
        "remote_channel",
        "next_outgoing_id",
        "next_incoming_id",
        "incoming_window",
        "remote_incoming_window",
        "remote_outgoing_window",
        "next_delivery_id",
        "handle_max",
        "links",
        "remote_links",
        "closed_handles",
        "ended",
        "_pending_disp",
    )

    def __init__(self, connection: AMQPConnection, channel: int, remote_channel: int, begin: Begin) -> None:
        self.connection = connection
        self.channel = channel
        self.remote_channel = remote_channel
        self.next_outgoing_id = 0
        self.next_incoming_id = begin.next_outgoing_id or 0
        self.incoming_window = connection.session_window
        self.remote_incoming_window = begin.incoming_window or 0
        self.remote_outgoing_window = begin.outgoing_window or 0
        self.next_delivery_id = 0
        self.handle_max = (
            min(int(begin.handle_max), 0xFFFFFFFF) if begin.handle_max is not None else 0xFFFFFFFF
        )
        self.links: dict[int, Link] = {}  # by our handle
        self.remote_links: dict[int, Link] = {}  # by the peer's handle
        self.closed_handles: set[int] = set()  # peer handles of links we detached: late frames are dropped
        self.ended = False
        self._pending_disp: list[tuple[int, bytes]] = []

    def flow_fields(self) -> tuple[int, int, int, int]:
        return (self.next_incoming_id, self.incoming_window, self.next_outgoing_id, 0xFFFFFFFF)

    def send_flow(self, link: Link | None = None, echo: bool = False) -> None:
        ni, iw, no, ow = self.flow_fields()
        if link is None:
            frame = Flow(ni, iw, no, ow, None, None, None, None, None, None, None)
        else:
            frame = Flow(
                ni, iw, no, ow, link.handle, link.delivery_count, link.credit, None, False, echo, None
            )
        self.connection.send_performative(self.channel, frame)

    def detach_link(self, link: Link, error: Error | None) -> None:
        link.detached = True
        self.links.pop(link.handle, None)
        if self.remote_links.get(link.remote_handle) is link:
            del self.remote_links[link.remote_handle]
            self.closed_handles.add(link.remote_handle)
        if not self.ended and not self.connection.closed:
            self.connection.send_performative(self.channel, Detach(link.handle, True, error))
        self.connection.notify_detach(link, error)

    def queue_disposition(self, delivery_id: int, state: Any) -> None:
        self._pending_disp.append((delivery_id, state.encode_amqp()))

    def flush_dispositions(self) -> None:
        pending = self._pending_disp
        if not pending:
            return
        self._pending_disp = []
        first, state = pending[0]
        last = first
        for did, st in pending[1:]:
            if st == state and did == last + 1:
                last = did
                continue
            self._write_disposition(first, last, state)
            first = last = did
            state = st
        self._write_disposition(first, last, state)

    def _write_disposition(self, first: int, last: int, state: bytes) -> None:
        body = (
            b"\x41"
            + encode_uint(first)
            + (encode_uint(last) if last != first else b"\x40")
            + b"\x41"
            + state
            + b"\x40"
        )
        if len(body) + 1 < 256:
            perf = b"\x00\x53\x15\xc0" + bytes((len(body) + 1, 6)) + body
        else:
            perf = b"\x00\x53\x15\xd0" + struct.pack(">II", len(body) + 4, 6) + body
        self.connection.write(encode_frame(self.channel, perf))


class AMQPConnection(asyncio.Protocol):
    """One server-side AMQP 1.0 connection."""

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        container_id: str = "enginehub-amqp",
        max_frame_size: int = 65536,
        channel_max: int = 4999,
        idle_time_out_ms: int | None = 240_000,
        session_window: int = DEFAULT_WINDOW,
        sasl_mechanisms: tuple[str, ...] = ("ANONYMOUS", "PLAIN", "EXTERNAL", "MSSBCBS"),
        allow_no_sasl: bool = True,
    ) -> None:
        self.handler = handler
        self.container_id = container_id
        self.max_frame_size = max(max_frame_size, MIN_MAX_FRAME_SIZE)
        self.channel_max = channel_max
        self.idle_time_out_ms = idle_time_out_ms
        self.session_window = session_window
        self.sasl_mechanisms = sasl_mechanisms
        self.allow_no_sasl = allow_no_sasl
        self.remote_max_frame_size = MIN_MAX_FRAME_SIZE
        self.remote_open: Open | None = None
        self.sessions: dict[int, Session] = {}  # by the peer's channel
        self._local_channels: set[int] = set()
        self._ended_channels: set[int] = set()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.closed = False
        self.write_paused = False
        self._state = "header"
        self._sasl_done = False
        self._parser = FrameParser(self.max_frame_size)
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._open_sent = False
        self._close_sent = False
        self._heartbeat: asyncio.TimerHandle | None = None
        self._closed_notified = False
        self.sasl_hostname: str | None = None
        self.sasl_identity: str | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.handler.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._parser.feed(data)
        try:
            self._process()
        except AMQPConnectionError as exc:
            self.close(exc.condition, exc.description)
        except FramingError as exc:
            self.close(Condition.FRAMING_ERROR, str(exc))
        except CodecError as exc:
            self.close(Condition.DECODE_ERROR, str(exc))
        except Exception as exc:  # a bug must end this connection only, never the server
            LOG.exception("AMQP connection %s: internal error while processing input", self.peer)
            self.close(Condition.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            for session in list(self.sessions.values()):
                session.flush_dispositions()
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._teardown()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed:
            try:
                self.handler.on_writable()
            except Exception:
                LOG.exception("AMQP connection %s: on_writable failed", self.peer)

    # ------------------------------------------------------------------ output
    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_BYTES:
            self.flush()  # hand big output to the transport now: pause_writing can stop the producer
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self._out_size = 0
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def send_performative(self, channel: int, perf: Any, frame_type: int = FRAME_AMQP) -> None:
        self.write(encode_frame(channel, perf.encode_amqp(), frame_type))

    def close(self, condition: Condition | str | None = None, description: str | None = None) -> None:
        """End the connection: CLOSE (with an error when given) and drop the transport."""
        if self.closed:
            return
        if condition is not None:
            cond = condition.value if isinstance(condition, Condition) else condition
            LOG.info("AMQP connection %s closed by the server: %s %s", self.peer, cond, description)
            error = Error(Symbol(cond), description, None)
        else:
            error = None
        if self._state in ("open", "opened"):
            if not self._open_sent:
                self._send_open()
            if not self._close_sent:
                self._close_sent = True
                self.send_performative(0, Close(error))
        self.closed = True
        self.flush()
        if self.transport is not None:
            self.transport.close()
        self._teardown()

    def _teardown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._closed_notified:
            return
        self._closed_notified = True
        for session in list(self.sessions.values()):
            self._end_session_links(session)
        self.sessions.clear()
        try:
            self.handler.on_close()
        except Exception:
            LOG.exception("AMQP connection %s: on_close failed", self.peer)

    def notify_detach(self, link: Link, error: Error | None) -> None:
        try:
            self.handler.on_detach(link, error)
        except Exception:
            LOG.exception("AMQP connection %s: on_detach failed", self.peer)

    # ------------------------------------------------------------------ input state machine
    def _process(self) -> None:
        parser = self._parser
        while not self.closed:
            state = self._state
            if state in ("header", "amqp-header"):
                header = parser.take(8)
                if header is None:
                    return
                self._on_protocol_header(header)
                continue
            frame = parser.next_frame()
            if frame is None:
                return
            if state == "sasl":
                self._on_sasl_frame(frame.type, frame.body)
            elif frame.type != FRAME_AMQP:
                raise AMQPConnectionError(Condition.FRAMING_ERROR, f"unexpected frame type {frame.type}")
            elif not frame.body:
                continue  # heartbeat
            else:
                perf, pos = decode_performative(frame.body)
                self._dispatch(frame.channel, perf, frame.body, pos)

    def _on_protocol_header(self, header: bytes) -> None:
        if header == SASL_HEADER and self._state == "header":
            self.write(SASL_HEADER)
            mechs = Array([Symbol(m) for m in self.sasl_mechanisms], code=0xB3)
            self.send_performative(0, SASLMechanisms(mechs), FRAME_SASL)
            self._state = "sasl"
            return
        if header == AMQP_HEADER and (self._sasl_done or self.allow_no_sasl):
            self.write(AMQP_HEADER)
            self._state = "open"
            return
        LOG.info("AMQP connection %s: unsupported protocol header %r", self.peer, header)
        self.write(SASL_HEADER if not self._sasl_done else AMQP_HEADER)
        self.closed = True
        self.flush()
        if self.transport is not None:
            self.transport.close()
        self._teardown()

    def _on_sasl_frame(self, frame_type: int, body: bytes) -> None:
        if frame_type != FRAME_SASL or not body:
            raise FramingError("expected a SASL frame")
        perf, _ = decode_performative(body)
        if type(perf) is not SASLInit:
            raise FramingError(f"expected sasl-init, got {type(perf).__name__}")
        mechanism = str(perf.mechanism or "")
        ok = mechanism in self.sasl_mechanisms
        if ok and mechanism == "PLAIN" and isinstance(perf.initial_response, bytes):
            parts = perf.initial_response.split(b"\x00")
            if len(parts) == 3:
                self.sasl_identity = parts[1].decode("utf-8", "replace")
        self.sasl_hostname = perf.hostname if isinstance(perf.hostname, str) else None
        self.send_performative(0, SASLOutcome(0 if ok else 1, None), FRAME_SASL)
        if not ok:
            LOG.info("AMQP connection %s: SASL mechanism %r refused", self.peer, mechanism)
            self.closed = True
            self.flush()
            if self.transport is not None:
                self.transport.close()
            self._teardown()
            return
        self._sasl_done = True
        self._state = "amqp-header"

    def _send_open(self) -> None:
        self._open_sent = True
        self.send_performative(
            0,
            Open(
                self.container_id,
                None,
                self.max_frame_size,
                self.channel_max,
                self.idle_time_out_ms,
                None,
                None,
                None,
                None,
                None,
            ),
        )

    def _dispatch(self, channel: int, perf: Any, body: bytes, pos: int) -> None:
        kind = type(perf)
        if self._state == "open":
            if kind is not Open:
                raise AMQPConnectionError(Condition.NOT_ALLOWED, f"expected OPEN, got {kind.__name__}")
            self._on_open(perf)
            return
        if kind is Transfer:
            self._on_transfer(channel, perf, body, pos)
        elif kind is Flow:
            self._on_flow(channel, perf)
        elif kind is Disposition:
            self._session_for(channel)  # validated, otherwise ignored: we only send pre-settled
        elif kind is Attach:
            self._on_attach(channel, perf)
        elif kind is Detach:
            self._on_detach(channel, perf)
        elif kind is Begin:
            self._on_begin(channel, perf)
        elif kind is End:
            self._on_end(channel, perf)
        elif kind is Close:
            self._on_close(perf)
        elif kind is Open:
            raise AMQPConnectionError(Condition.NOT_ALLOWED, "OPEN received twice")
        else:
            raise AMQPConnectionError(Condition.NOT_ALLOWED, f"unexpected performative {kind.__name__}")

    def _on_open(self, frame: Open) -> None:
        self.remote_open = frame
        mfs = frame.max_frame_size
        self.remote_max_frame_size = 0xFFFFFFFF if mfs is None else max(int(mfs), MIN_MAX_FRAME_SIZE)
        self._state = "opened"
        self.handler.on_open(self, frame)
        self._send_open()
        idle = frame.idle_time_out
        if isinstance(idle, int) and idle > 0:
            self._schedule_heartbeat(max(idle / 2000.0, 0.05))

    def _schedule_heartbeat(self, interval: float) -> None:
        def beat() -> None:
            if self.closed:
                return
            self.write(HEARTBEAT)
            self._heartbeat = asyncio.get_running_loop().call_later(interval, beat)

        self._heartbeat = asyncio.get_running_loop().call_later(interval, beat)

    def _on_close(self, frame: Close) -> None:
        if frame.error is not None:
            LOG.debug("AMQP connection %s: peer closed with %r", self.peer, frame.error)
        if not self._close_sent:
            self._close_sent = True
            self.send_performative(0, Close(None))
        self.closed = True
        self.flush()
        if self.transport is not None:
            self.transport.close()
        self._teardown()

    # ------------------------------------------------------------------ sessions
    def _session_for(self, channel: int) -> Session | None:
        session = self.sessions.get(channel)
        if session is None:
            if channel in self._ended_channels:
                return None  # late frame on a channel the peer already ended: ignore (pyamqp does this)
            raise AMQPConnectionError(Condition.NOT_ALLOWED, f"no session is mapped to channel {channel}")
        return session

    def _on_begin(self, channel: int, frame: Begin) -> None:
        if channel in self.sessions:
            raise AMQPConnectionError(Condition.NOT_ALLOWED, f"channel {channel} already has a session")
        if frame.remote_channel is not None:
            raise AMQPConnectionError(Condition.NOT_IMPLEMENTED, "server-initiated sessions are not used")
        if channel > self.channel_max:
            raise AMQPConnectionError(Condition.FRAMING_ERROR, f"channel {channel} exceeds channel-max")
        local = 0
        while local in self._local_channels:
            local += 1
        self._local_channels.add(local)
        self._ended_channels.discard(channel)
        session = Session(self, local, channel, frame)
        self.sessions[channel] = session
        self.send_performative(
            local,
            Begin(channel, 0, session.incoming_window, 0xFFFFFFFF, 0xFFFFFFFF, None, None, None),
        )

    def _end_session_links(self, session: Session) -> None:
        session.ended = True
        for link in list(session.links.values()):
            link.detached = True
            self.notify_detach(link, None)
        session.links.clear()
        session.remote_links.clear()

    def _on_end(self, channel: int, frame: End) -> None:
        session = self._session_for(channel)
        if session is None:
            return
        self._end_session_links(session)
        del self.sessions[channel]
        self._local_channels.discard(session.channel)
        self._ended_channels.add(channel)
        self.send_performative(session.channel, End(None))

    # ------------------------------------------------------------------ links
    def _on_attach(self, channel: int, frame: Attach) -> None:
        session = self._session_for(channel)
        if session is None:
            return
        if not isinstance(frame.handle, int) or not isinstance(frame.name, str):
            raise AMQPConnectionError(Condition.INVALID_FIELD, "attach needs a name and a handle")
        if frame.handle in session.remote_links:
            raise AMQPConnectionError(Condition.SESSION_HANDLE_IN_USE, f"handle {frame.handle} is in use")
        if frame.handle > session.handle_max:
            raise AMQPConnectionError(Condition.FRAMING_ERROR, f"handle {frame.handle} exceeds handle-max")
        session.closed_handles.discard(frame.handle)
        local = 0
        while local in session.links:
            local += 1
        link = Link(session, local, frame)
        session.links[local] = link
        session.remote_links[frame.handle] = link
        refused: LinkError | None = None
        try:
            self.handler.on_attach(link)
        except LinkError as exc:
            refused = exc
        self.send_performative(
            session.channel,
            Attach(
                link.name,
                link.handle,
                not frame.role,
                link.snd_settle_mode if link.is_sender else frame.snd_settle_mode,
                0 if not link.is_sender else frame.rcv_settle_mode,
                link.source,
                link.target,
                None,
                None,
                0 if link.is_sender else None,
                link.max_message_size,
                link.offered_capabilities,
                None,
                link.reply_properties,
            ),
        )
        if refused is not None:
            link.detach(refused.condition, refused.description)
            return
        if not link.is_sender and link.initial_credit:
            link.delivery_count = frame.initial_delivery_count or 0
            link.grant(link.initial_credit)

    def _link_for(self, session: Session, handle: Any) -> Link | None:
        link = session.remote_links.get(handle)
        if link is None:
            if handle in session.closed_handles:
                return None
            raise AMQPConnectionError(
                Condition.SESSION_UNATTACHED_HANDLE, f"handle {handle!r} is not attached on this session"
            )
        return link

    def _on_detach(self, channel: int, frame: Detach) -> None:
        session = self._session_for(channel)
        if session is None:
            return
        link = session.remote_links.get(frame.handle)
        if link is None:
            if frame.handle in session.closed_handles:
                session.closed_handles.discard(frame.handle)  # the peer's answer to our detach
                return
            raise AMQPConnectionError(
                Condition.SESSION_UNATTACHED_HANDLE, f"detach of handle {frame.handle!r} that is not attached"
            )
        del session.remote_links[frame.handle]
        session.links.pop(link.handle, None)
        link.detached = True
        self.send_performative(session.channel, Detach(link.handle, True, None))
        self.notify_detach(link, frame.error)

    def _on_flow(self, channel: int, frame: Flow) -> None:
        session = self._session_for(channel)
        if session is None:
            return
        next_incoming = frame.next_incoming_id if frame.next_incoming_id is not None else 0
        window = frame.incoming_window or 0
        session.remote_incoming_window = next_incoming + window - session.next_outgoing_id
        session.remote_outgoing_window = frame.outgoing_window or 0
        if frame.handle is None:
            if session.remote_incoming_window > 0:
                for link in list(session.links.values()):
                    if link.is_sender and link.credit > 0:
                        self.handler.on_credit(link)
            return
        link = self._link_for(session, frame.handle)
        if link is None:
            return
        if link.is_sender:
            peer_count = frame.delivery_count if frame.delivery_count is not None else 0
            credit = (peer_count + (frame.link_credit or 0) - link.delivery_count) & 0xFFFFFFFF
            link.credit = credit if credit < 0x80000000 else 0
            link.drain = bool(frame.drain)
            if frame.echo:
                session.send_flow(link)
            if link.credit > 0:
                self.handler.on_credit(link)
            elif link.drain:
                link.finish_drain()
        elif frame.echo:
            session.send_flow(link)

    def _on_transfer(self, channel: int, frame: Transfer, body: bytes, pos: int) -> None:
        session = self._session_for(channel)
        if session is None:
            return
        session.next_incoming_id = (session.next_incoming_id + 1) & 0xFFFFFFFF
        session.incoming_window -= 1
        if session.incoming_window <= self.session_window // 2:
            session.incoming_window = self.session_window
            session.send_flow()
        link = self._link_for(session, frame.handle)
        if link is None:
            return  # pipelined on a link we refused or detached: dropped
        if link.is_sender:
            raise AMQPConnectionError(Condition.NOT_ALLOWED, "transfer on a link where the peer is receiver")
        payload = body[pos:]
        if link._partial is not None:
            meta = link._partial_meta
            link._partial_size += len(payload)
            if link._partial_size <= MAX_DELIVERY_BYTES and (
                not link.max_message_size or link._partial_size <= link.max_message_size
            ):
                link._partial.append(payload)
            else:
                link._partial.clear()
        else:
            if frame.delivery_id is None:
                raise AMQPConnectionError(
                    Condition.INVALID_FIELD, "first transfer of a delivery lacks delivery-id"
                )
            meta = frame
            if frame.more:
                link._partial = [payload]
                link._partial_meta = frame
                link._partial_size = len(payload)
        if frame.aborted:
            link._partial = None
            link._partial_meta = None
            return
        if frame.more:
            return
        assert meta is not None
        size = len(payload)
        if link._partial is not None:
            size = link._partial_size
            payload = b"".join(link._partial)
            link._partial = None
            link._partial_meta = None
        link.credit -= 1
        link.delivery_count = (link.delivery_count + 1) & 0xFFFFFFFF
        if link.credit <= link.initial_credit // 2:
            link.grant(link.initial_credit)
        limit = link.max_message_size
        if (limit and size > limit) or size > MAX_DELIVERY_BYTES:
            outcome: Any = Rejected(
                Error(
                    Symbol(Condition.LINK_MESSAGE_SIZE_EXCEEDED.value),
                    f"The received message (delivery-id:{meta.delivery_id}, size:{size} bytes) exceeds the "
                    f"limit ({limit or MAX_DELIVERY_BYTES} bytes) currently allowed on the link.",
                    None,
                )
            )
        else:
            delivery = Delivery(
                meta.delivery_id, meta.delivery_tag, meta.message_format or 0, bool(meta.settled), payload
            )
            outcome = self.handler.on_message(link, delivery)
        if outcome is not None and not meta.settled:
            session.queue_disposition(meta.delivery_id, outcome)
