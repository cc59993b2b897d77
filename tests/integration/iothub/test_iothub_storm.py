"""A bounded storm of hostile peers against the running IoT Hub emulator on loopback (issue 19): malformed
connects, truncated packets, slow-loris peers (half a TLS record, then silence), abrupt resets, while a real
azure-iot-device client sends telemetry throughout; every message arrives, and memory stops growing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl

import pytest

from enginehub.harness.iothub import codec

pytestmark = pytest.mark.integration

ROUNDS = 4
PER_KIND = 10
SLOW_LORIS = 20


def _rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _hostile(hub, ctx: ssl.SSLContext, data: bytes, abort_at_once: bool) -> None:
    r, w = await asyncio.open_connection(hub.host, hub.port, ssl=ctx, server_hostname=hub.host)
    w.write(data)
    if not abort_at_once:
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(r.read(), 0.1)
    w.transport.abort()  # an abrupt reset either way


async def test_a_storm_of_hostile_peers_leaves_the_hub_serving_with_bounded_memory(hub, router, sdk_client):
    from azure.iot.device import Message

    rng = random.Random(19)
    ctx = hub.certs.client_context()
    hub.registry.create("storm-sdk")
    client = sdk_client("storm-sdk")
    await client.connect()
    sent, stop = [0], asyncio.Event()

    async def send_throughout() -> None:
        while not stop.is_set():
            await client.send_message(Message(f"m{sent[0]}"))
            sent[0] += 1

    sender = asyncio.create_task(send_throughout())
    rss = []
    routed = [0]  # the router keeps every message in memory: counted and dropped each round, so that RSS
    # measures the hub and not the test's record of what was routed
    try:
        for _ in range(ROUNDS):
            loris = []
            for _ in range(SLOW_LORIS):  # half a TLS record header, then silence
                r, w = await asyncio.open_connection(hub.host, hub.port)
                w.write(b"\x16\x03")
                loris.append(w)
            for _ in range(PER_KIND):  # malformed connects
                await _hostile(hub, ctx, rng.randbytes(rng.randint(1, 100)), abort_at_once=False)
            for _ in range(PER_KIND):  # a truncated CONNECT
                full = codec.encode(codec.Connect("x", username="u", password=b"p"))
                await _hostile(hub, ctx, full[: rng.randint(1, len(full) - 1)], abort_at_once=False)
            for _ in range(PER_KIND):  # resets right after the TLS handshake
                await _hostile(hub, ctx, b"", abort_at_once=True)
            assert not sender.done(), sender.exception()
            for w in loris:
                w.transport.abort()
            routed[0] += len(router.messages)
            router.messages.clear()
            rss.append(_rss_mib())
    finally:
        stop.set()
        await asyncio.wait_for(sender, 30)
    await asyncio.wait_for(_routed(router, sent[0] - routed[0]), 30)
    routed[0] += len(router.messages)
    peers = ROUNDS * (3 * PER_KIND + SLOW_LORIS)
    print(
        f"\niothub storm: {peers} hostile peers while the SDK sent {sent[0]} messages "
        f"({routed[0]} "
        "routed); RSS (hub in this process) after each round: " + ", ".join(f"{m:.1f}" for m in rss) + " MiB"
    )
    assert sent[0] > 0 and routed[0] == sent[0]
    assert rss[-1] - rss[0] < 16, f"RSS grew {rss[-1] - rss[0]:.1f} MiB over {ROUNDS - 1} storm rounds"


async def _routed(router, n: int) -> None:
    await router.wait_for(n, 30)
