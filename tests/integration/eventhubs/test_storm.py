"""A bounded storm of hostile peers against the running Event Hubs emulator on loopback (issue 19): malformed
connects, truncated frames, slow-loris peers holding half a header, abrupt resets (RST). A real SDK producer
sends throughout and every send succeeds; afterwards no connection is left and memory has stopped growing."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest
from azure.eventhub import EventData
from eh_sdk_helpers import Running, poll, producer

from enginehub.harness.amqp.framing import AMQP_HEADER, SASL_HEADER

pytestmark = pytest.mark.integration

ROUNDS = 4  # the first warms up; memory is compared between the end of round 1 and the end of the last
PER_KIND = 40
SLOW_LORIS = 30


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> RST
    sock.close()


def _storm_round(port: int, rng: random.Random) -> None:
    for _ in range(PER_KIND):  # malformed connects: garbage instead of a protocol header
        with _connect(port) as s:
            s.sendall(rng.randbytes(rng.randint(1, 64)))
    for _ in range(PER_KIND):  # truncated frames: a header and part of a frame, then gone
        with _connect(port) as s:
            s.sendall(SASL_HEADER + struct.pack(">IBBH", 64, 2, 1, 0) + rng.randbytes(rng.randint(0, 20)))
    for _ in range(PER_KIND):  # abrupt resets mid-handshake
        s = _connect(port)
        s.sendall(rng.choice([SASL_HEADER, AMQP_HEADER, SASL_HEADER[:3]]))
        _reset(s)


def _last_sequence(eh: Running) -> int:
    with producer(eh.cs) as p:
        return p.get_partition_properties("0")["last_enqueued_sequence_number"]


def test_a_storm_of_hostile_peers_leaves_the_emulator_serving_with_bounded_memory(eh: Running) -> None:
    port = eh.emulator.port
    rng = random.Random(19)
    sent, errors, stop = [0], [], threading.Event()

    def produce() -> None:
        try:
            with producer(eh.cs) as p:
                while not stop.is_set():
                    p.send_event(EventData(f"e{sent[0]}"), partition_id="0")
                    sent[0] += 1
        except Exception as exc:  # recorded and asserted below
            errors.append(exc)

    before = _last_sequence(eh)
    worker = threading.Thread(target=produce, name="sdk-producer")
    worker.start()
    rss: list[float] = []
    t0 = time.monotonic()
    try:
        for _ in range(ROUNDS):
            loris = [_connect(port) for _ in range(SLOW_LORIS)]
            for s in loris:
                s.sendall(SASL_HEADER[:2])  # half a header, then silence
            _storm_round(port, rng)
            assert not errors, errors
            for s in loris:
                _reset(s)
            rss.append(_rss_mib())
    finally:
        stop.set()
        worker.join(30)
    seconds = time.monotonic() - t0
    assert not errors, errors
    poll(lambda: eh.thread.call(lambda: len(eh.emulator.connections)) == 0, 10, "every storm connection gone")
    after = _last_sequence(eh)
    peers = ROUNDS * (3 * PER_KIND + SLOW_LORIS)
    print(
        f"\nstorm: {peers} hostile peers in {seconds:.1f} s while the SDK sent {sent[0]} events "
        f"({after - before} stored); RSS (emulator in this process) after each round: "
        + ", ".join(f"{m:.1f}" for m in rss)
        + " MiB"
    )
    assert sent[0] > 0 and after - before == sent[0]
    assert rss[-1] - rss[0] < 16, f"RSS grew {rss[-1] - rss[0]:.1f} MiB over {ROUNDS - 1} storm rounds"
