"""The connection layer driven with bytes through a fake transport (no sockets): handshake, pipelining,
multi-frame transfers both directions, credit, session windows, coalesced dispositions, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.amqp.codec import Symbol
from enginehub.harness.amqp.connection import AMQPConnection, ConnectionHandler, Delivery, Link
from enginehub.harness.amqp.framing import (
    AMQP_HEADER,
    SASL_HEADER,
    FrameParser,
    decode_performative,
    encode_frame,
)
from enginehub.harness.amqp.performatives import (
    Accepted,
    Attach,
    Begin,
    Close,
    Disposition,
    End,
    Flow,
    Open,
    Rejected,
    SASLInit,
    SASLOutcome,
    Source,
    Target,
    Transfer,
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("test", 0) if name == "peername" else default


class Recorder(ConnectionHandler):
    def __init__(self, max_message_size: int | None = None) -> None:
        self.links: list[Link] = []
        self.deliveries: list[Delivery] = []
        self.detached: list[Link] = []
        self.closed = False
        self.max_message_size = max_message_size

    def on_attach(self, link: Link) -> None:
        link.max_message_size = self.max_message_size
        self.links.append(link)

    def on_message(self, link: Link, delivery: Delivery) -> Any:
        self.deliveries.append(delivery)
        return Accepted()

    def on_detach(self, link: Link, error: Any) -> None:
        self.detached.append(link)

    def on_close(self) -> None:
        self.closed = True


def frames_out(data: bytes) -> list[Any]:
    """Decode everything the server wrote (protocol headers shown as the bytes)."""
    out: list[Any] = []
    pos = 0
    parser = FrameParser(1 << 24)
    while pos < len(data):
        if data[pos : pos + 4] == b"AMQP":
            out.append(bytes(data[pos : pos + 8]))
            pos += 8
            continue
        size = int.from_bytes(data[pos : pos + 4], "big")
        parser.feed(bytes(data[pos : pos + size]))
        frame = parser.next_frame()
        assert frame is not None
        if frame.body:
            perf, at = decode_performative(frame.body)
            out.append((perf, frame.body[at:]))
        else:
            out.append(None)
        pos += size
    return out


def perfs(data: bytes) -> list[Any]:
    return [f[0] for f in frames_out(data) if isinstance(f, tuple)]


def f(perf: Any, channel: int = 1, payload: bytes = b"", frame_type: int = 0) -> bytes:
    return encode_frame(channel, perf.encode_amqp() + payload, frame_type)


HANDSHAKE = (
    SASL_HEADER
    + f(SASLInit(Symbol("ANONYMOUS"), b"", "localhost"), 0, frame_type=1)
    + AMQP_HEADER
    + f(Open("c", "localhost", 1 << 20, 65535, None, None, None, None, None, None), 0)
    + f(Begin(None, 0, 65536, 65536, 100, None, None, None))
)


def sender_attach(handle: int = 0) -> bytes:
    return f(Attach("s", handle, False, 0, 1, Source("x"), Target("t"), None, None, 0, 0, None, None, None))


def receiver_attach(handle: int = 0) -> bytes:
    return f(Attach("r", handle, True, 0, 0, Source("x"), Target("t"), None, None, None, 0, None, None, None))


def connect(handler: Recorder, extra: bytes = b"", **kw: Any) -> tuple[AMQPConnection, FakeTransport]:
    conn = AMQPConnection(handler, **kw)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(HANDSHAKE + extra)
    return conn, transport


async def test_pipelined_sasl_open_begin_attach_in_one_read() -> None:
    handler = Recorder()
    conn, transport = connect(handler, sender_attach())
    out = frames_out(bytes(transport.data))
    assert out[0] == SASL_HEADER and AMQP_HEADER in out
    kinds = [type(p[0]).__name__ for p in out if isinstance(p, tuple)]
    assert kinds == ["SASLMechanisms", "SASLOutcome", "Open", "Begin", "Attach", "Flow"]
    outcome = next(p[0] for p in out if isinstance(p, tuple) and isinstance(p[0], SASLOutcome))
    begin = next(p[0] for p in out if isinstance(p, tuple) and isinstance(p[0], Begin))
    assert outcome.code == 0 and begin.remote_channel == 1
    flow = next(p[0] for p in out if isinstance(p, tuple) and isinstance(p[0], Flow))
    assert flow.link_credit > 0 and not transport.closed and len(handler.links) == 1


async def test_multi_frame_transfer_is_reassembled_and_settled() -> None:
    handler = Recorder()
    conn, transport = connect(handler, sender_attach())
    transport.data.clear()
    parts = [b"a" * 100, b"b" * 100, b"c" * 7]
    data = b""
    for i, part in enumerate(parts):
        more = i < len(parts) - 1
        data += f(
            Transfer(0, 0 if i == 0 else None, b"t", 0, False, more, None, None, None, None, None),
            payload=part,
        )
    conn.data_received(data)
    assert [d.payload for d in handler.deliveries] == [b"".join(parts)]
    (disp,) = [p for p in perfs(bytes(transport.data)) if isinstance(p, Disposition)]
    assert disp.settled is True and disp.first == 0 and isinstance(disp.state, Accepted)


async def test_dispositions_are_coalesced_into_ranges() -> None:
    handler = Recorder()
    conn, transport = connect(handler, sender_attach())
    transport.data.clear()
    conn.data_received(
        b"".join(
            f(Transfer(0, i, bytes([i]), 0, False, False, None, None, None, None, None), payload=b"m")
            for i in range(5)
        )
    )
    disps = [p for p in perfs(bytes(transport.data)) if isinstance(p, Disposition)]
    assert [(d.first, d.last) for d in disps] == [(0, 4)]


def _two_frames(delivery_id: int, first: int, second: int) -> bytes:
    data = f(
        Transfer(0, delivery_id, b"t", 0, False, True, None, None, None, None, None), payload=b"x" * first
    )
    return data + f(
        Transfer(0, None, b"t", 0, False, False, None, None, None, None, None), payload=b"x" * second
    )


async def test_link_max_message_size_at_limit_and_over() -> None:
    handler = Recorder(max_message_size=100)
    conn, transport = connect(handler, sender_attach())
    transport.data.clear()
    conn.data_received(_two_frames(0, 80, 20))  # exactly the limit
    conn.data_received(_two_frames(1, 80, 21))  # one byte over
    disps = [p for p in perfs(bytes(transport.data)) if isinstance(p, Disposition)]
    assert isinstance(disps[0].state, Accepted) and len(handler.deliveries) == 1
    assert isinstance(disps[1].state, Rejected)
    error = disps[1].state.error
    assert error.condition == "amqp:link:message-size-exceeded" and error.info is None
    assert "size:101 bytes" in error.description and "(100 bytes)" in error.description
    assert not transport.closed


async def test_absolute_delivery_cap_at_limit_and_over(monkeypatch: Any) -> None:
    from enginehub.harness.amqp import connection as connection_module

    monkeypatch.setattr(connection_module, "MAX_DELIVERY_BYTES", 100)
    handler = Recorder(max_message_size=None)  # no link limit: the hard cap still applies
    conn, transport = connect(handler, sender_attach())
    transport.data.clear()
    conn.data_received(_two_frames(0, 50, 50) + _two_frames(1, 50, 51))
    disps = [p for p in perfs(bytes(transport.data)) if isinstance(p, Disposition)]
    assert [type(d.state).__name__ for d in disps] == ["Accepted", "Rejected"]


async def test_outgoing_transfer_split_by_peer_max_frame_and_credit() -> None:
    handler = Recorder()
    conn = AMQPConnection(handler)
    transport = FakeTransport()
    conn.connection_made(transport)
    small_open = f(Open("c", "h", 512, 10, None, None, None, None, None, None), 0)
    conn.data_received(
        SASL_HEADER + f(SASLInit(Symbol("ANONYMOUS"), b"", "h"), 0, frame_type=1) + AMQP_HEADER + small_open
        + f(Begin(None, 0, 65536, 65536, 100, None, None, None)) + receiver_attach()
    )  # fmt: skip
    link = handler.links[0]
    assert link.is_sender and not link.can_send  # no credit yet
    conn.data_received(f(Flow(0, 65536, 0, 65536, 0, 0, 1, None, None, None, None)))
    assert link.can_send
    transport.data.clear()
    payload = bytes(range(256)) * 10
    link.send(payload)
    conn.flush()
    out = frames_out(bytes(transport.data))
    transfers = [p for p in out if isinstance(p, tuple) and isinstance(p[0], Transfer)]
    assert len(transfers) > 1 and all(t[0].more for t in transfers[:-1]) and not transfers[-1][0].more
    assert all(t[0].settled for t in transfers)
    assert b"".join(t[1] for t in transfers) == payload
    assert not link.can_send  # the one credit is used


async def test_session_window_blocks_until_the_peer_refreshes_it() -> None:
    handler = Recorder()
    conn = AMQPConnection(handler)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(
        SASL_HEADER + f(SASLInit(Symbol("ANONYMOUS"), b"", "h"), 0, frame_type=1) + AMQP_HEADER
        + f(Open("c", "h", 1 << 20, 10, None, None, None, None, None, None), 0)
        + f(Begin(None, 0, 2, 65536, 100, None, None, None)) + receiver_attach()
        + f(Flow(0, 2, 0, 65536, 0, 0, 100, None, None, None, None))
    )  # fmt: skip
    link = handler.links[0]
    link.send(b"1")
    link.send(b"2")
    assert not link.can_send and link.credit == 98
    conn.data_received(f(Flow(2, 10, 0, 65536, None, None, None, None, None, None, None)))
    assert link.can_send


async def test_late_frames_on_ended_channel_are_ignored_but_unknown_channels_close() -> None:
    handler = Recorder()
    conn, transport = connect(handler, sender_attach())
    conn.data_received(f(End(None)) + f(Transfer(0, 9, b"t", 0, True, False, None, None, None, None, None)))
    assert not transport.closed and handler.detached == handler.links
    conn.data_received(f(End(None), channel=7))
    closes = [p for p in perfs(bytes(transport.data)) if isinstance(p, Close)]
    assert transport.closed and closes[-1].error.condition == "amqp:not-allowed" and handler.closed


async def test_peer_close_is_answered() -> None:
    handler = Recorder()
    conn, transport = connect(handler)
    conn.data_received(f(Close(None), 0))
    assert isinstance(perfs(bytes(transport.data))[-1], Close) and transport.closed and handler.closed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_after_the_handshake_never_escape(data: bytes) -> None:
    async def run() -> None:
        handler = Recorder()
        conn, transport = connect(handler, sender_attach())
        conn.data_received(data)  # must not raise
        if transport.closed:
            assert handler.closed

    asyncio.run(run())


async def test_sasl_plain_is_accepted_and_unknown_mechanisms_refused() -> None:
    handler = Recorder()
    conn = AMQPConnection(handler)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(SASL_HEADER + f(SASLInit(Symbol("PLAIN"), b"\x00user\x00pw", "h"), 0, frame_type=1))
    outcome = [p for p in perfs(bytes(transport.data)[8:]) if isinstance(p, SASLOutcome)]
    assert outcome[0].code == 0 and conn.sasl_identity == "user" and not transport.closed

    conn = AMQPConnection(Recorder())
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(SASL_HEADER + f(SASLInit(Symbol("GSSAPI"), b"", "h"), 0, frame_type=1))
    outcome = [p for p in perfs(bytes(transport.data)[8:]) if isinstance(p, SASLOutcome)]
    assert outcome[0].code == 1 and transport.closed


async def test_wrong_protocol_header_is_answered_with_ours_then_closed() -> None:
    conn = AMQPConnection(Recorder())
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"HTTP/1.1")
    assert bytes(transport.data) == SASL_HEADER and transport.closed


async def test_heartbeats_are_sent_at_half_the_peer_idle_timeout() -> None:
    handler = Recorder()
    conn = AMQPConnection(handler)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(
        SASL_HEADER + f(SASLInit(Symbol("ANONYMOUS"), b"", "h"), 0, frame_type=1) + AMQP_HEADER
        + f(Open("c", "h", 1 << 20, 10, 100, None, None, None, None, None), 0)
    )  # fmt: skip
    transport.data.clear()
    deadline = asyncio.get_running_loop().time() + 2
    while not transport.data and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(transport.data[:8]) == b"\x00\x00\x00\x08\x02\x00\x00\x00"
    conn.close()


async def test_transport_backpressure_stops_sending_until_resumed() -> None:
    class Writable(Recorder):
        resumed = 0

        def on_writable(self) -> None:
            self.resumed += 1

    handler = Writable()
    conn, transport = connect(handler, receiver_attach())
    conn.data_received(f(Flow(0, 65536, 0, 65536, 0, 0, 10_000, None, None, None, None)))
    link = handler.links[0]
    original_write = transport.write

    def write(data: Any) -> None:  # a transport whose buffer is full past 300 kB
        original_write(data)
        if len(transport.data) > 300_000 and not conn.write_paused:
            conn.pause_writing()

    transport.write = write  # type: ignore[method-assign]
    sent = 0
    while link.can_send and sent < 1000:
        link.send(b"x" * 10_000)
        sent += 1
    assert sent < 100 and conn.write_paused  # ~300 kB, not 10 MB, were produced
    conn.resume_writing()
    assert link.can_send and handler.resumed == 1


async def test_drain_gives_back_unused_credit() -> None:
    handler = Recorder()
    conn, transport = connect(handler, receiver_attach())
    link = handler.links[0]
    conn.data_received(f(Flow(0, 65536, 0, 65536, 0, 0, 5, None, True, None, None)))
    assert link.drain and link.credit == 5
    link.send(b"one")
    transport.data.clear()
    link.finish_drain()
    conn.flush()
    (flow,) = [p for p in perfs(bytes(transport.data)) if isinstance(p, Flow)]
    assert flow.drain is True and flow.link_credit == 0 and flow.delivery_count == 5
    assert link.credit == 0 and not link.drain
