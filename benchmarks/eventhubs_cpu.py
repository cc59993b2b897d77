"""Server CPU per event of the Event Hubs emulator, ingress (batched) and egress.

The emulator runs as a child process (``harness eventhubs``); its CPU time (utime+stime from /proc) is read
before and after each workload, so client cost is excluded. Workloads:

* raw-in:  a fast raw producer built on our own codec (batches, format 0x80013700, pipelined)
* raw-out: a raw consumer with large credit reading everything back
* sdk-in:  azure-eventhub EventHubProducerClient.send_batch
* sdk-out: azure-eventhub EventHubConsumerClient.receive (client-bound; server CPU is what is reported)

Prints one line per workload and a JSON summary line last. Example::

    .venv/bin/python benchmarks/eventhubs_cpu.py --events 200000 --sdk-events 20000
    .venv/bin/python benchmarks/eventhubs_cpu.py --events 1000000 --data-dir /tmp/eh-bench   # + RSS

Targets (issue 3): <= 10 us server CPU per event in, <= 15 us out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from enginehub.harness.amqp.codec import Described, Symbol, Timestamp, encode_binary
from enginehub.harness.amqp.framing import AMQP_HEADER, SASL_HEADER, decode_performative, encode_frame
from enginehub.harness.amqp.message import AMQP_VALUE, Message, encode_message, encode_section
from enginehub.harness.amqp.performatives import (
    Attach,
    Begin,
    Disposition,
    Flow,
    Open,
    Properties,
    SASLInit,
    Source,
    Target,
    Transfer,
)
from enginehub.harness.eventhubs.auth import generate_sas_token

BATCH_FORMAT = 0x80013700
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RawClient:
    """Minimal AMQP client on our codec: SASL ANONYMOUS, OPEN, BEGIN, CBS put-token, one link."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.buf = b""

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        w = self.writer
        w.write(SASL_HEADER + encode_frame(0, SASLInit(Symbol("ANONYMOUS"), b"", self.host).encode_amqp(), 1))
        w.write(AMQP_HEADER)
        w.write(
            encode_frame(
                0, Open("bench", self.host, 1 << 20, 10, None, None, None, None, None, None).encode_amqp()
            )
        )
        w.write(encode_frame(0, Begin(None, 0, 1 << 30, 1 << 30, 100, None, None, None).encode_amqp()))
        await self._exact(8)
        await self.frame()  # mechanisms
        await self.frame()  # outcome
        await self._exact(8)
        await self.frame()  # open
        await self.frame()  # begin

    async def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def frame(self) -> tuple[Any, bytes]:
        head = await self._exact(8)
        size = int.from_bytes(head[:4], "big")
        body = await self._exact(size - 8)
        if not body:
            return None, b""
        perf, pos = decode_performative(body)
        return perf, body[pos:]

    async def put_token(self, audience: str, policy: str, key: str) -> None:
        w = self.writer
        w.write(
            encode_frame(
                0,
                Attach(
                    "cbs-s", 0, False, 0, 0, Source("cbs"), Target("$cbs"), None, None, 0, 0, None, None, None
                ).encode_amqp(),
            )
        )
        w.write(
            encode_frame(
                0,
                Attach(
                    "cbs-r",
                    1,
                    True,
                    0,
                    0,
                    Source("$cbs"),
                    Target("cbs"),
                    None,
                    None,
                    None,
                    0,
                    None,
                    None,
                    None,
                ).encode_amqp(),
            )
        )
        w.write(encode_frame(0, Flow(0, 1 << 30, 0, 1 << 30, 1, 0, 10, None, None, None, None).encode_amqp()))
        token = generate_sas_token(audience, policy, key)
        msg = encode_message(
            Message(
                properties=Properties(message_id=uuid.uuid4()),
                application_properties={
                    "operation": "put-token",
                    "name": audience,
                    "type": "servicebus.windows.net:sastoken",
                    "expiration": Timestamp(0),
                },
            )
        ) + encode_section(AMQP_VALUE, token)
        w.write(
            encode_frame(
                0, Transfer(0, 0, b"\x00", 0, False, False, None, None, None, None, None).encode_amqp() + msg
            )
        )
        while True:
            perf, payload = await self.frame()
            if isinstance(perf, Transfer):
                assert b"status-code" in payload
                if b"\x54\xca" not in payload and b"\x71\x00\x00\x00\xca" not in payload:
                    raise RuntimeError(f"put-token refused: {payload!r}")
                return


def make_event(i: int, size: int) -> bytes:
    body = (b"%08d " % i) + b"x" * max(size - 9, 0)
    return b"\x00\x53\x75" + encode_binary(body)


async def raw_ingress(host: str, port: int, cs: dict[str, str], events: int, batch: int, size: int) -> float:
    client = RawClient(host, port)
    await client.connect()
    aud = f"sb://{host}:{port}/{cs['hub']}"
    await client.put_token(aud, cs["policy"], cs["key"])
    w = client.writer
    target = Target(f"amqps://{host}:{port}/{cs['hub']}/Partitions/0")
    w.write(
        encode_frame(
            0,
            Attach(
                "p", 2, False, 0, 1, Source("p"), target, None, None, 0, 0, None, None, None
            ).encode_amqp(),
        )
    )
    inner = [make_event(i, size) for i in range(batch)]
    envelope = b"".join(b"\x00\x53\x75" + encode_binary(m) for m in inner)
    nbatches = events // batch
    settled = 0
    sent = 0
    t0 = time.perf_counter()
    credit = 0
    while settled < nbatches:
        while sent < nbatches and sent - settled < 64 and (credit > 0 or sent == 0):
            perf = Transfer(
                2, sent + 1, sent.to_bytes(4, "big"), BATCH_FORMAT, False, False, None, None, None, None, None
            ).encode_amqp()
            w.write(
                encode_frame(0, perf + envelope)
                if len(perf) + len(envelope) + 8 <= 65536
                else _split(perf, envelope, sent)
            )
            sent += 1
            credit -= 1
        await w.drain()
        perf, _ = await client.frame()
        if isinstance(perf, Disposition):
            settled += (perf.last if perf.last is not None else perf.first) - perf.first + 1
        elif isinstance(perf, Flow) and perf.handle is not None:
            credit = perf.link_credit or 0
        elif isinstance(perf, Attach):
            credit = max(credit, 0)
    elapsed = time.perf_counter() - t0
    w.close()
    return elapsed


def _split(perf_unused: bytes, envelope: bytes, n: int) -> bytes:
    out = []
    room = 65536 - 8 - 64
    chunks = [envelope[i : i + room] for i in range(0, len(envelope), room)]
    for k, chunk in enumerate(chunks):
        more = k < len(chunks) - 1
        perf = Transfer(
            2, n + 1, n.to_bytes(4, "big"), BATCH_FORMAT, False, more, None, None, None, None, None
        ).encode_amqp()
        out.append(encode_frame(0, perf + chunk))
    return b"".join(out)


async def raw_egress(host: str, port: int, cs: dict[str, str], events: int) -> float:
    client = RawClient(host, port)
    await client.connect()
    aud = f"sb://{host}:{port}/{cs['hub']}/consumergroups/$default"
    await client.put_token(aud, cs["policy"], cs["key"])
    w = client.writer
    src = Source(
        f"amqps://{host}:{port}/{cs['hub']}/ConsumerGroups/$Default/Partitions/0",
        filter={
            Symbol("apache.org:selector-filter:string"): Described(
                Symbol("apache.org:selector-filter:string"), "amqp.annotation.x-opt-offset > '-1'"
            )
        },
    )
    w.write(
        encode_frame(
            0,
            Attach(
                "c", 2, True, 0, 0, src, Target("c"), None, None, None, 1 << 20, None, None, None
            ).encode_amqp(),
        )
    )
    got = 0
    credit_chunk = 5000
    w.write(
        encode_frame(
            0, Flow(0, 1 << 30, 2, 1 << 30, 2, 0, credit_chunk, None, None, None, None).encode_amqp()
        )
    )
    t0 = time.perf_counter()
    since_grant = 0
    reader = client.reader
    buf = client.buf
    # count transfer frames with a minimal scan (header + descriptor byte), no decode
    while got < events:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
        pos = 0
        while len(buf) - pos >= 8:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if len(buf) - pos < size:
                break
            if size > 8 and buf[pos + 10] == 0x14:
                got += 1
                since_grant += 1
            pos += size
        buf = buf[pos:]
        if since_grant >= credit_chunk // 2:
            w.write(
                encode_frame(
                    0,
                    Flow(
                        got, 1 << 30, 2, 1 << 30, 2, got, credit_chunk, None, None, None, None
                    ).encode_amqp(),
                )
            )
            since_grant = 0
    elapsed = time.perf_counter() - t0
    w.close()
    return elapsed


def sdk_ingress(cs: str, events: int, batch: int, size: int) -> float:
    from azure.eventhub import EventData, EventHubProducerClient

    body = b"x" * size
    t0 = time.perf_counter()
    with EventHubProducerClient.from_connection_string(cs) as p:
        for _ in range(events // batch):
            b = p.create_batch(partition_id="1")
            for _ in range(batch):
                b.add(EventData(body))
            p.send_batch(b)
    return time.perf_counter() - t0


def sdk_egress(cs: str, events: int) -> float:
    from azure.eventhub import EventHubConsumerClient

    got = 0
    done = threading.Event()
    client = EventHubConsumerClient.from_connection_string(cs, consumer_group="$Default")

    def on_event_batch(ctx: Any, batch: list[Any]) -> None:
        nonlocal got
        got += len(batch)
        if got >= events:
            done.set()

    t0 = time.perf_counter()
    th = threading.Thread(
        target=client.receive_batch,
        kwargs=dict(
            on_event_batch=on_event_batch, partition_id="1", starting_position="-1", max_batch_size=300
        ),
        daemon=True,
    )
    th.start()
    done.wait(600)
    elapsed = time.perf_counter() - t0
    client.close()
    th.join(30)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="events for the raw workloads (200000)")
    ap.add_argument(
        "--sdk-events", type=int, default=20_000, help="events for the SDK workloads (20000, 0 = skip)"
    )
    ap.add_argument("--batch", type=int, default=500, help="events per batch (500)")
    ap.add_argument("--size", type=int, default=100, help="event body bytes (100)")
    ap.add_argument("--data-dir", help="persist to this dir (reports RSS after ingest); default in memory")
    args = ap.parse_args()

    data_dir = args.data_dir
    cmd = [sys.executable, "-m", "enginehub.harness", "eventhubs", "--port", "0", "--http-port", "-1",
           "--policy", "bench=benchkey", "--partitions", "2", "--hub", "bench"]  # fmt: skip
    if data_dir:
        cmd += ["--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        host, port = info["host"], info["port"]
        creds = {"hub": "bench", "policy": "bench", "key": "benchkey"}
        cs = info["eventhub_connection_strings"]["bench"]
        results: dict[str, Any] = {"events": args.events, "batch": args.batch, "size": args.size}

        def measure(name: str, n: int, fn: Any) -> None:
            c0 = cpu_seconds(proc.pid)
            wall = fn()
            c1 = cpu_seconds(proc.pid)
            us = (c1 - c0) / n * 1e6
            results[f"{name}_server_cpu_us_per_event"] = round(us, 2)
            results[f"{name}_events_per_s_wall"] = round(n / wall)
            print(
                f"{name:8s} {n:>9d} events  server CPU {us:6.2f} us/event  wall {n / wall:>10.0f} events/s",
                flush=True,
            )

        measure(
            "raw_in",
            args.events,
            lambda: asyncio.run(raw_ingress(host, port, creds, args.events, args.batch, args.size)),
        )
        results["server_rss_mib_after_raw_in"] = round(rss_mib(proc.pid), 1)
        measure("raw_out", args.events, lambda: asyncio.run(raw_egress(host, port, creds, args.events)))
        if args.sdk_events:
            measure(
                "sdk_in", args.sdk_events, lambda: sdk_ingress(cs, args.sdk_events, args.batch, args.size)
            )
            measure("sdk_out", args.sdk_events, lambda: sdk_egress(cs, args.sdk_events))
        results["server_rss_mib"] = round(rss_mib(proc.pid), 1)
        results["data_dir"] = data_dir
        print(json.dumps(results), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
