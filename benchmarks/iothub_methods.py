"""Benchmark: direct-method round trips against 100 connected devices, and the hub's CPU per method call next
to its CPU per telemetry message, measured in the same run on the same hub process.

Three processes: the hub (IoT Hub emulator + in-process Event Hubs emulator with a persistent data dir, as
``harness up`` runs it); the devices (default: our raw TLS MQTT client, one asyncio loop, each device
subscribed to ``$iothub/methods/POST/#`` and answering at once with its request payload; ``--device-client
sdk``: real ``azure-iot-device`` sync clients with ``on_method_request_received``); and this process, the
caller: ``--callers`` threads, each with its own REAL ``azure-iot-hub`` ``IoTHubRegistryManager``, invoking
``invoke_device_method`` back to back on the devices in turn. The hub's CPU time is read from /proc.

azure-iot-hub 2.7 (msrest) opens a new HTTPS connection for every call (measured: 10 calls, 10 TLS
connections; a plain ``requests.Session`` on the same server: 1), so its per-call hub CPU includes a TLS
handshake. A third phase therefore sends the same requests on kept-alive connections (aiohttp, the SDK's
wire format and SAS token) to show the hub's cost of a method call itself.

Phases (same hub, same run): (1) telemetry: 100 raw devices publish QoS 1 telemetry at ``--telemetry-rate``
for ``--duration`` s (hub CPU / acked message: the baseline); (2) methods: the callers run for
``--duration`` s (hub CPU / completed method call, round trips per second, caller-side p50/p99 latency);
(3) the same over kept-alive HTTPS.

    .venv/bin/python benchmarks/iothub_methods.py                          # 100 raw devices, 8 callers, 10 s
    .venv/bin/python benchmarks/iothub_methods.py --device-client sdk --callers 4 --duration 5

Prints one line per phase and a JSON line last.

Measured 2026-12-03 (`nice -n 15`, defaults: 100 devices, 8 callers, 10 s per phase; 2 shared cores, load
3-5): telemetry 500 msg/s at 140-152 us of hub CPU per message; azure-iot-hub methods 154 round trips/s
(raw devices) and 255/s (100 azure-iot-device clients), p50 46 / 29 ms, p99 138 / 69 ms, 1,370 / 1,162 us
of hub CPU per call = 9.0 / 8.3 x a telemetry message (the callers' SDK, not the hub, is the limit: the hub
used 21-30% of a core); kept-alive HTTPS 1,211 / 1,136 round trips/s, p50 5.1 / 6.6 ms, p99 24 / 15 ms,
224 / 313 us per call = 1.5 / 2.2 x a telemetry message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.testing import free_loopback_ip

TICK = os.sysconf("SC_CLK_TCK")
PAYLOAD = b"1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("azure", "paho", "uamqp", "msrest", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------- the hub
def _serve_hub(host: str, data_dir: str, conn: Any) -> None:
    from enginehub.harness.bridge import LocalIotHub

    _quiet()

    async def main() -> None:
        stack = LocalIotHub(host=host, data_dir=data_dir, partitions=4)
        await stack.start()
        hub = stack.iothub
        conn.send(
            {
                "hostname": hub.hostname,
                "group_key": hub.registry.group_key,
                "ca_pem": hub.ca_pem,
                "service_connection_string": hub.service_connection_string,
            }
        )
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        m = hub.metrics
        conn.send(
            {"messages": m.messages, "method_calls": m.method_calls, "method_timeouts": m.method_timeouts}
        )
        await stack.stop()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------- the devices
async def _raw_devices(info: dict[str, Any], host: str, n: int, conn: Any, prefix: str = "m") -> None:
    import ssl

    from enginehub.harness.iothub import codec, topics
    from enginehub.harness.iothub.rawclient import RawDevice

    ctx = ssl.create_default_context(cadata=info["ca_pem"])
    devs = []
    for i in range(n):
        did = f"{prefix}-{i:04d}"
        d = RawDevice(
            host, info["hostname"], did, auth.derive_device_key(info["group_key"], did), ssl_context=ctx
        )
        if await d.connect() != 0:
            raise SystemExit(f"device {did} refused")
        ack = await d.request(codec.Subscribe(1, ((topics.METHODS_FILTER, 0),)))
        if not isinstance(ack, codec.Suback) or ack.return_codes != (0,):
            raise SystemExit(f"device {did}: methods subscription refused ({ack!r})")
        devs.append(d)
    answered = [0]

    async def answer(d: RawDevice) -> None:
        while (pkt := await d.packets.get()) is not None:
            if isinstance(pkt, codec.Publish) and pkt.topic.startswith(topics.METHOD_REQUEST_PREFIX):
                rid = pkt.topic.rsplit("$rid=", 1)[1]
                d.publish_nowait(pkt.payload, qos=0, topic=f"{topics.METHOD_RESPONSE_PREFIX}200/?$rid={rid}")
                answered[0] += 1

    tasks = [asyncio.create_task(answer(d)) for d in devs]
    loop = asyncio.get_running_loop()
    conn.send({"devices": [d.device_id for d in devs]})
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "telemetry":
            conn.send(await _telemetry(devs, cmd[1], cmd[2]))
        elif cmd[0] == "stop":
            break
    for t in tasks:
        t.cancel()
    for d in devs:
        await d.close()
    conn.send({"answered": answered[0]})


async def _telemetry(devs: list[Any], rate: float, duration: float) -> dict[str, Any]:
    """Publish QoS 1 telemetry round-robin at ``rate`` for ``duration`` s; wait for the PUBACKs."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[None]] = set()
    acked = [0]

    def done(fut: asyncio.Future[None]) -> None:
        pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            acked[0] += 1

    start, sent = loop.time(), 0
    while sent / rate < duration:
        due = start + sent / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        d = devs[sent % len(devs)]
        fut = d.publish_nowait(PAYLOAD, {"$.mid": f"{d.device_id}-t{sent}", "$.ct": "text/plain"})
        fut.add_done_callback(done)
        pending.add(fut)
        sent += 1
    if pending:
        await asyncio.wait(pending, timeout=30)
    return {"sent": sent, "acked": acked[0], "wall_s": loop.time() - start}


def _sdk_devices(info: dict[str, Any], host: str, n: int, conn: Any) -> None:
    """Real azure-iot-device sync clients answering every method with its payload (telemetry is not sent
    from these: the telemetry phase then uses raw devices started next to them)."""
    from azure.iot.device import IoTHubDeviceClient, MethodResponse

    clients = []
    answered = [0]
    lock = threading.Lock()
    for i in range(n):
        did = f"m-{i:04d}"
        cs = auth.device_connection_string(
            info["hostname"], did, auth.derive_device_key(info["group_key"], did), host
        )
        c = IoTHubDeviceClient.create_from_connection_string(
            cs, server_verification_cert=info["ca_pem"], connection_retry=False
        )

        def handler(request: Any, c: IoTHubDeviceClient = c) -> None:
            c.send_method_response(MethodResponse.create_from_method_request(request, 200, request.payload))
            with lock:
                answered[0] += 1

        c.on_method_request_received = handler
        c.connect()
        clients.append(c)
    raw_parent, raw_child = mp.Pipe()  # telemetry from raw devices (other ids) on a loop in this process

    def raw_loop() -> None:
        asyncio.run(_raw_devices(info, host, n, raw_child, prefix="t"))

    t = threading.Thread(target=raw_loop, daemon=True)
    conn.send({"devices": [f"m-{i:04d}" for i in range(n)]})
    started = False
    while True:
        cmd = conn.recv()
        if cmd[0] == "telemetry":
            if not started:
                t.start()
                raw_parent.recv()
                started = True
            raw_parent.send(cmd)
            conn.send(raw_parent.recv())
        elif cmd[0] == "stop":
            break
    if started:
        raw_parent.send(("stop",))
        raw_parent.recv()
    for c in clients:
        c.shutdown()
    conn.send({"answered": answered[0]})


def _serve_devices(info: dict[str, Any], host: str, n: int, client: str, conn: Any) -> None:
    _quiet()
    if client == "sdk":
        _sdk_devices(info, host, n, conn)
    else:
        asyncio.run(_raw_devices(info, host, n, conn))


# ----------------------------------------------------------------------------------------- the callers
def _methods(
    service_cs: str, devices: list[str], callers: int, duration: float, hub_pid: int
) -> dict[str, Any]:
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import CloudToDeviceMethod

    latencies: list[list[float]] = [[] for _ in range(callers)]
    errors = [0] * callers
    managers = [IoTHubRegistryManager.from_connection_string(service_cs) for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def call(k: int, n: int) -> float:
        device = devices[(k + n * callers) % len(devices)]
        method = CloudToDeviceMethod(
            method_name="ping", payload={"k": k, "n": n}, response_timeout_in_seconds=10
        )
        t0 = time.perf_counter()
        result = managers[k].invoke_device_method(device, method)
        dt = time.perf_counter() - t0
        if result.status != 200 or result.payload != {"k": k, "n": n}:
            raise AssertionError(f"{device} answered {result.status} {result.payload!r}")
        return dt

    def worker(k: int) -> None:
        for n in range(3):  # warm-up: TLS session, keep-alive connection
            call(k, -1 - n)
        barrier.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            try:
                latencies[k].append(call(k, n))
            except Exception as exc:  # counted, reported; the run goes on
                errors[k] += 1
                if errors[k] <= 3:
                    print(f"caller {k}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)  # noqa: T201
            n += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600
    barrier.wait()
    cpu0, wall0 = _cpu_s(hub_pid), time.perf_counter()
    stop_at[0] = wall0 + duration
    for t in threads:
        t.join(duration + 60)
    wall = time.perf_counter() - wall0
    cpu = _cpu_s(hub_pid) - cpu0
    lat = sorted(x for per in latencies for x in per)
    calls = len(lat)
    return {
        "calls": calls,
        "errors": sum(errors),
        "round_trips_per_s": round(calls / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2) if lat else None,
        "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "hub_cpu_us_per_call": round(1e6 * cpu / max(1, calls), 1),
        "hub_cpu_pct_of_core": round(100 * cpu / wall, 1),
    }


async def _methods_keepalive(
    service_cs: str, devices: list[str], callers: int, duration: float, hub_pid: int, ca_pem: str
) -> dict[str, Any]:
    """The same calls as raw HTTPS POSTs on kept-alive connections (aiohttp, ``callers`` concurrent tasks):
    what the hub spends per method without the TLS handshake the SDK pays on every call."""
    import ssl

    import aiohttp

    fields = dict(part.split("=", 1) for part in service_cs.split(";"))
    host = fields["HostName"]
    token = auth.generate_sas_token(
        host, fields["SharedAccessKey"], ttl=3600, policy=fields["SharedAccessKeyName"]
    )
    ctx = ssl.create_default_context(cadata=ca_pem)
    latencies: list[float] = []
    errors = [0]
    connector = aiohttp.TCPConnector(ssl=ctx, limit=callers)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": token}) as session:

        async def call(k: int, n: int) -> float:
            device = devices[(k + n * callers) % len(devices)]
            body = {"methodName": "ping", "payload": {"k": k, "n": n}, "responseTimeoutInSeconds": 10}
            t0 = time.perf_counter()
            url = f"https://{host}/twins/{device}/methods?api-version=2021-04-12"
            async with session.post(url, json=body) as resp:
                answer = await resp.json()
            dt = time.perf_counter() - t0
            if resp.status != 200 or answer != {"status": 200, "payload": {"k": k, "n": n}}:
                raise AssertionError(f"{device} answered HTTP {resp.status} {answer!r}")
            return dt

        async def worker(k: int, until: float) -> None:
            n = 0
            while time.perf_counter() < until:
                try:
                    latencies.append(await call(k, n))
                except Exception as exc:  # counted, reported; the run goes on
                    errors[0] += 1
                    if errors[0] <= 3:
                        print(f"http caller {k}: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
                n += 1

        await asyncio.gather(*(call(k, -1) for k in range(callers)))  # warm-up: open the connections
        cpu0, wall0 = _cpu_s(hub_pid), time.perf_counter()
        await asyncio.gather(*(worker(k, wall0 + duration) for k in range(callers)))
        wall = time.perf_counter() - wall0
        cpu = _cpu_s(hub_pid) - cpu0
    lat = sorted(latencies)
    return {
        "calls": len(lat),
        "errors": errors[0],
        "round_trips_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2) if lat else None,
        "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "hub_cpu_us_per_call": round(1e6 * cpu / max(1, len(lat)), 1),
        "hub_cpu_pct_of_core": round(100 * cpu / wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument(
        "--callers", type=int, default=8, help="concurrent invoke_device_method threads (default 8)"
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    ap.add_argument("--telemetry-rate", type=float, default=500.0, help="telemetry phase msg/s (default 500)")
    ap.add_argument(
        "--device-client",
        choices=["raw", "sdk"],
        default="raw",
        help="devices answering methods: our raw MQTT client (default; cheap) or real azure-iot-device "
        "clients",
    )
    args = ap.parse_args()
    _quiet()
    host = free_loopback_ip()
    ctx = mp.get_context("spawn")
    hub_parent, hub_child = ctx.Pipe()
    dev_parent, dev_child = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="enginehub-bench-") as data_dir:
        hub = ctx.Process(target=_serve_hub, args=(host, data_dir, hub_child), daemon=True)
        hub.start()
        if not hub_parent.poll(60):
            raise SystemExit("hub did not start")
        info = hub_parent.recv()
        ca = Path(data_dir) / "bench-ca.pem"
        ca.write_text(info["ca_pem"])
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
        devs = ctx.Process(
            target=_serve_devices, args=(info, host, args.devices, args.device_client, dev_child), daemon=True
        )
        devs.start()
        try:
            if not dev_parent.poll(300):
                raise SystemExit("devices did not connect")
            devices = dev_parent.recv()["devices"]
            cpu0 = _cpu_s(hub.pid)
            dev_parent.send(("telemetry", args.telemetry_rate, args.duration))
            tel = dev_parent.recv()
            tel_cpu = _cpu_s(hub.pid) - cpu0
            tel["hub_cpu_us_per_msg"] = round(1e6 * tel_cpu / max(1, tel["acked"]), 1)
            tel["msgs_per_s"] = round(tel["acked"] / tel["wall_s"], 1)
            print(  # noqa: T201
                f"[telemetry] {args.devices} raw devices @ {args.telemetry_rate:.0f}/s QoS 1: "
                f"{tel['msgs_per_s']} msg/s acked ({tel['acked']}/{tel['sent']}), "
                f"hub CPU {tel['hub_cpu_us_per_msg']} us/msg",
                flush=True,
            )
            meth = _methods(info["service_connection_string"], devices, args.callers, args.duration, hub.pid)
            ratio = round(meth["hub_cpu_us_per_call"] / max(0.1, tel["hub_cpu_us_per_msg"]), 1)
            print(  # noqa: T201
                f"[methods] {len(devices)} {args.device_client} devices, {args.callers} azure-iot-hub "
                f"callers: {meth['round_trips_per_s']} round trips/s ({meth['calls']} calls, "
                f"{meth['errors']} errors), p50 {meth['p50_ms']} ms p99 {meth['p99_ms']} ms, hub CPU "
                f"{meth['hub_cpu_us_per_call']} us/call ({meth['hub_cpu_pct_of_core']}% of a core) = "
                f"{ratio} x a telemetry message",
                flush=True,
            )
            ka = asyncio.run(
                _methods_keepalive(
                    info["service_connection_string"],
                    devices,
                    args.callers,
                    args.duration,
                    hub.pid,
                    info["ca_pem"],
                )
            )
            ka_ratio = round(ka["hub_cpu_us_per_call"] / max(0.1, tel["hub_cpu_us_per_msg"]), 1)
            print(  # noqa: T201
                f"[methods, kept-alive HTTPS] {args.callers} aiohttp callers: "
                f"{ka['round_trips_per_s']} round "
                f"trips/s ({ka['calls']} calls, {ka['errors']} errors), p50 {ka['p50_ms']} ms p99 "
                f"{ka['p99_ms']} ms, hub CPU {ka['hub_cpu_us_per_call']} us/call = {ka_ratio} x a telemetry "
                "message",
                flush=True,
            )
        finally:
            dev_parent.send(("stop",))
            if dev_parent.poll(60):
                dev_parent.recv()
            devs.join(30)
            hub_parent.send("stop")
            counters = hub_parent.recv() if hub_parent.poll(30) else {}
            hub.join(30)
    print(  # noqa: T201
        json.dumps(
            {
                "benchmark": "iothub_methods",
                "devices": args.devices,
                "device_client": args.device_client,
                "callers": args.callers,
                "duration_s": args.duration,
                "telemetry": tel,
                "methods": meth,
                "method_cpu_over_telemetry_cpu": ratio,
                "methods_keepalive": ka,
                "keepalive_method_cpu_over_telemetry_cpu": ka_ratio,
                "hub_counters": counters,
                "python": sys.version.split()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
