"""Bad input ends only the offending connection, with the proper AMQP error; the server keeps serving."""

from __future__ import annotations

import random
import socket
import struct
import time

import pytest
from azure.eventhub import EventData
from eh_sdk_helpers import Running, poll, producer

from enginehub.harness.amqp.codec import Symbol
from enginehub.harness.amqp.framing import AMQP_HEADER, SASL_HEADER, decode_performative, encode_frame
from enginehub.harness.amqp.performatives import (
    Attach,
    Begin,
    Close,
    Detach,
    End,
    Open,
    SASLInit,
    Source,
    Target,
    Transfer,
)

pytestmark = pytest.mark.integration


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def perf(self, channel: int, perf: object, frame_type: int = 0) -> None:
        self.send(encode_frame(channel, perf.encode_amqp(), frame_type))  # type: ignore[attr-defined]

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        data = self.buf
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"connection still open after {timeout} s; got {data!r}")

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading; buffered {self.buf!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; buffered {self.buf!r}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, deadline: float) -> object | None:
        header = self._read(8, deadline)
        size = struct.unpack(">I", header[:4])[0]
        body = self._read(size - 8, deadline)[header[4] * 4 - 8 :]
        return decode_performative(body)[0] if body else None

    def handshake(self) -> None:
        self.send(SASL_HEADER)
        self.perf(0, SASLInit(Symbol("ANONYMOUS"), b"", "127.0.0.1"), 1)
        self.send(AMQP_HEADER)
        self.perf(0, Open("raw", "127.0.0.1", 65536, 10, None, None, None, None, None, None))
        deadline = time.monotonic() + 5
        assert self._read(8, deadline) == SASL_HEADER
        self.read_frame(deadline)  # sasl-mechanisms
        self.read_frame(deadline)  # sasl-outcome
        assert self._read(8, deadline) == AMQP_HEADER
        assert isinstance(self.read_frame(deadline), Open)

    def expect_frames(self, done, timeout: float = 5.0) -> list[object]:  # type: ignore[no-untyped-def]
        got: list[object] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            frame = self.read_frame(deadline)
            if frame is not None:
                got.append(frame)
        return got

    def close(self) -> None:
        self.sock.close()


def transfer(handle: int, delivery_id: int, payload: bytes) -> bytes:
    perf = Transfer(
        handle, delivery_id, str(delivery_id).encode(), 0, False, False, None, None, None, None, None
    )
    return encode_frame(1, perf.encode_amqp() + payload)


def closes_with(port: int, condition: str, payload: bytes) -> None:
    client = RawClient(port)
    try:
        client.handshake()
        client.send(payload)
        frames = client.expect_frames(lambda ps: any(isinstance(p, Close) for p in ps))
        close = next(p for p in frames if isinstance(p, Close))
        assert close.error is not None and close.error.condition == condition, close
        client.read_until_closed()
    finally:
        client.close()


def still_serves(running: Running) -> None:
    with producer(running.cs) as p:
        p.send_event(EventData("still alive"), partition_id="0")
        assert p.get_partition_properties("0")["last_enqueued_sequence_number"] >= 0


def test_wrong_protocol_header_gets_our_header_and_a_close(eh: Running) -> None:
    client = RawClient(eh.emulator.port)
    client.send(b"GET / HTTP/1.1\r\n\r\n")
    assert client.read_until_closed().startswith(b"AMQP")
    client.close()


def test_oversize_unknown_and_unattached_frames_end_only_that_connection(eh: Running) -> None:
    port = eh.emulator.port
    closes_with(port, "amqp:connection:framing-error", struct.pack(">IBBH", 70_000, 2, 0, 0) + b"\x00" * 100)
    closes_with(port, "amqp:decode-error", encode_frame(0, b"\x00\x53\x30\x45"))  # unknown performative
    closes_with(port, "amqp:decode-error", encode_frame(0, b"\xff\xfe garbage"))
    begin = encode_frame(0, Begin(None, 0, 100, 100, 10, None, None, None).encode_amqp())
    transfer = encode_frame(
        0, Transfer(7, 0, b"t", 0, True, False, None, None, None, None, None).encode_amqp()
    )
    closes_with(port, "amqp:session:unattached-handle", begin + transfer)
    closes_with(port, "amqp:not-allowed", encode_frame(5, End(None).encode_amqp()))  # never-begun channel
    still_serves(eh)


def test_late_detach_on_an_ended_channel_is_ignored(eh: Running) -> None:
    client = RawClient(eh.emulator.port)
    try:
        client.handshake()
        client.perf(1, Begin(None, 0, 100, 100, 10, None, None, None))
        client.expect_frames(lambda ps: any(isinstance(p, Begin) for p in ps))
        client.perf(
            1, Attach("l", 0, False, 0, 1, Source("s"), Target("$cbs"), None, None, 0, 0, None, None, None)
        )
        client.expect_frames(lambda ps: any(isinstance(p, Attach) for p in ps))
        client.perf(1, End(None))
        client.perf(1, Detach(0, True, None))  # pyamqp does this after END
        client.perf(2, Begin(None, 0, 100, 100, 10, None, None, None))
        frames = client.expect_frames(lambda ps: any(isinstance(p, Begin) for p in ps))
        assert not any(isinstance(p, Close) for p in frames)
    finally:
        client.close()


def test_unauthenticated_attach_is_refused_with_unauthorized_access(eh: Running) -> None:
    client = RawClient(eh.emulator.port)
    try:
        client.handshake()
        client.perf(1, Begin(None, 0, 100, 100, 10, None, None, None))
        target = Target("amqps://127.0.0.1/eh1")
        client.perf(1, Attach("p", 0, False, 0, 1, Source("s"), target, None, None, 0, 0, None, None, None))
        frames = client.expect_frames(lambda ps: any(isinstance(p, Detach) for p in ps))
        detach = next(p for p in frames if isinstance(p, Detach))
        assert detach.error.condition == "amqp:unauthorized-access" and detach.closed is True
    finally:
        client.close()


def test_random_byte_streams_never_take_the_server_down(eh: Running) -> None:
    rng = random.Random(1234)
    port = eh.emulator.port
    for i in range(60):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            prefix = [b"", SASL_HEADER, AMQP_HEADER][i % 3]
            sock.sendall(prefix + rng.randbytes(rng.randint(1, 3000)))
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
        finally:
            sock.close()
    still_serves(eh)
    assert eh.thread.call(lambda: len(eh.emulator.connections)) == 0


def authenticate(client: RawClient, eh: Running, path: str) -> None:
    """Begin a session on channel 1 and put a valid SAS token for ``path`` on $cbs (handles 0 and 1)."""
    import uuid

    from enginehub.harness.amqp.codec import Timestamp
    from enginehub.harness.amqp.message import AMQP_VALUE, Message, encode_message, encode_section
    from enginehub.harness.amqp.performatives import Flow, Properties
    from enginehub.harness.eventhubs.auth import generate_sas_token

    policy, key = eh.emulator.config.default_policy
    audience = f"sb://127.0.0.1:{eh.emulator.port}{path}"
    client.perf(1, Begin(None, 0, 1000, 1000, 10, None, None, None))
    client.perf(
        1, Attach("cs", 0, False, 0, 0, Source("c"), Target("$cbs"), None, None, 0, 0, None, None, None)
    )
    client.perf(
        1, Attach("cr", 1, True, 0, 0, Source("$cbs"), Target("c"), None, None, None, 0, None, None, None)
    )
    client.perf(1, Flow(0, 1000, 0, 1000, 1, 0, 10, None, None, None, None))
    request = encode_message(
        Message(
            properties=Properties(message_id=uuid.uuid4()),
            application_properties={
                "operation": "put-token",
                "name": audience,
                "type": "servicebus.windows.net:sastoken",
                "expiration": Timestamp(0),
            },
        )
    ) + encode_section(AMQP_VALUE, generate_sas_token(audience, policy, key))
    client.send(transfer(0, 0, request))
    frames = client.expect_frames(lambda ps: any(isinstance(p, Transfer) for p in ps))  # the put-token answer
    assert not any(isinstance(p, Detach) for p in frames)


def test_malformed_message_is_rejected_and_the_connection_stays_usable(eh: Running) -> None:
    from enginehub.harness.amqp.performatives import Disposition

    port = eh.emulator.port
    client = RawClient(port)
    try:
        client.handshake()
        authenticate(client, eh, "/eh1")
        target = Target(f"amqps://127.0.0.1:{port}/eh1/Partitions/0")
        client.perf(1, Attach("p", 2, False, 0, 1, Source("p"), target, None, None, 0, 0, None, None, None))
        client.expect_frames(lambda ps: any(isinstance(p, Attach) for p in ps))
        garbage = b"\x00\x53\x75\xa0\xff not a message"
        client.send(transfer(2, 1, garbage))
        frames = client.expect_frames(lambda ps: any(isinstance(p, Disposition) for p in ps))
        disposition = next(p for p in frames if isinstance(p, Disposition))
        assert disposition.settled and disposition.state.error.condition == "amqp:decode-error"
        assert "not a valid AMQP message" in disposition.state.error.description
        good = b"\x00\x53\x75\xa0\x02ok"
        client.send(transfer(2, 2, good))
        frames = client.expect_frames(lambda ps: any(isinstance(p, Disposition) for p in ps))
        assert type(next(p for p in frames if isinstance(p, Disposition)).state).__name__ == "Accepted"
    finally:
        client.close()
    assert eh.thread.call(lambda: eh.emulator.store.hub("eh1").partitions["0"].last_sequence_number) == 0


def test_a_dropped_connection_releases_its_receivers(eh: Running) -> None:
    from enginehub.harness.amqp.codec import Described

    port = eh.emulator.port
    client = RawClient(port)
    client.handshake()
    authenticate(client, eh, "/eh1/consumergroups/$default")
    selector = Symbol("apache.org:selector-filter:string")
    source = Source(
        f"amqps://127.0.0.1:{port}/eh1/ConsumerGroups/$Default/Partitions/0",
        filter={selector: Described(selector, "amqp.annotation.x-opt-offset > '@latest'")},
    )
    epoch = {Symbol("com.microsoft:epoch"): 5}
    client.perf(1, Attach("c", 2, True, 0, 0, source, Target("c"), None, None, None, 0, None, None, epoch))
    client.expect_frames(lambda ps: any(isinstance(p, Attach) for p in ps))
    assert eh.receivers() == 1
    client.sock.close()  # no DETACH, no CLOSE
    poll(lambda: eh.receivers() == 0 and not eh.thread.call(lambda: len(eh.emulator.connections)), 10,
         "the emulator to drop the receiver of a vanished connection")  # fmt: skip


def test_raw_consumer_drain_on_an_empty_partition_returns_the_credit(eh: Running) -> None:
    from enginehub.harness.amqp.performatives import Flow

    port = eh.emulator.port
    client = RawClient(port)
    try:
        client.handshake()
        authenticate(client, eh, "/eh1/consumergroups/$default")
        source = Source(f"amqps://127.0.0.1:{port}/eh1/ConsumerGroups/$Default/Partitions/3")
        client.perf(1, Attach("c", 2, True, 0, 0, source, Target("c"), None, None, None, 0, None, None, None))
        client.expect_frames(lambda ps: any(isinstance(p, Attach) for p in ps))
        client.perf(1, Flow(1, 1000, 1, 1000, 2, 0, 50, None, True, None, None))
        frames = client.expect_frames(
            lambda ps: any(isinstance(p, Flow) and p.handle is not None for p in ps)
        )
        flow = next(p for p in frames if isinstance(p, Flow) and p.handle is not None)
        assert flow.drain is True and flow.link_credit == 0 and flow.delivery_count == 50
    finally:
        client.close()
