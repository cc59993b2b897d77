"""``simulate`` benchmark: achieved rate, delivery and CPU of a fleet of azure-iot-device clients.

Two modes:

- ``self-host`` (default): exactly the demo, ``simulate --units 100 --rate 500 --duration 60 --json``
  self-hosted (IoT Hub + Event Hubs emulators and an ingest consumer into SQLite, all started by
  simulate). Checks rate_achieved >= 99 % of the target and ingested == acked.
- ``hub``: the simulator alone against an in-process IoT Hub emulator whose router only counts (no Event
  Hubs, no consumer): what the device fleet itself sustains on this machine (the hub's CPU is this
  process's).

CPU is wall-clock-normalised (% of one core) from getrusage of the simulate process tree.

    .venv/bin/python benchmarks/simulate_demo.py                                   # the demo, 60 s
    .venv/bin/python benchmarks/simulate_demo.py --mode hub --units 100 --rate 500 --duration 30
    .venv/bin/python benchmarks/simulate_demo.py --units 1000 --rate 2000 --workers 2 --duration 30  # stretch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _run_simulate(args: list[str], timeout: float) -> tuple[int, dict, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "enginehub.simulator", *args, "--json", "--no-progress",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = out.decode().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return proc.returncode or 0, summary, err.decode()


async def _hub_mode(sim_args: list[str], timeout: float) -> tuple[int, dict, str, dict]:
    from enginehub.harness.iothub import server
    from enginehub.simulator.device import quiet_sdk_logging
    from enginehub.simulator.net import free_loopback_host

    quiet_sdk_logging()

    class CountingRouter:
        def __init__(self) -> None:
            self.count = 0
            self.ids: set[str] = set()

        async def route(self, telemetry: server.Telemetry) -> None:
            self.count += 1
            self.ids.add(str(telemetry.properties.get("message-id")))

    router = CountingRouter()
    emu = server.IotHubEmulator(router, host=free_loopback_host())
    await emu.start()
    try:
        args = [
            *sim_args,
            "--iothub-connection-string", emu.connection_string,
            "--group-key", emu.registry.group_key,
            "--gateway-host", emu.gateway_host,
            "--ca-cert", str(emu.ca_cert_path),
        ]  # fmt: skip
        code, summary, err = await _run_simulate(args, timeout)
    finally:
        await emu.stop()
    return code, summary, err, {"hub_received": router.count, "hub_unique_ids": len(router.ids)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("self-host", "hub"), default="self-host")
    p.add_argument("--units", type=int, default=100)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--payload", default="seed")
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    a = p.parse_args()
    sim_args = ["--units", str(a.units), "--rate", str(a.rate), "--duration", str(a.duration),
                "--workers", str(a.workers), "--payload", a.payload]  # fmt: skip
    timeout = a.duration + 240
    t0, c0, s0 = time.monotonic(), _cpu_children(), _cpu_self()
    extra: dict = {}
    if a.mode == "hub":
        code, summary, err, extra = asyncio.run(_hub_mode(sim_args, timeout))
    else:
        code, summary, err = asyncio.run(_run_simulate(sim_args, timeout))
    wall = time.monotonic() - t0
    cpu_sim = _cpu_children() - c0
    cpu_self = _cpu_self() - s0
    target = a.rate
    achieved = summary.get("rate_achieved", 0.0)
    result = {
        "mode": a.mode,
        "units": a.units,
        "rate_target": target,
        "workers": summary.get("workers", a.workers),
        "exit_code": code,
        "sent": summary.get("sent"),
        "acked": summary.get("acked"),
        "failed": summary.get("failed"),
        "ingested": summary.get("ingested"),
        "duration_s": summary.get("duration_s"),
        "rate_achieved": achieved,
        "rate_ok": achieved >= 0.99 * target,
        "max_lag_s": summary.get("max_lag_s"),
        "skipped": summary.get("skipped"),
        "wall_s": round(wall, 1),
        "cpu_s_simulate_tree": round(cpu_sim, 1),
        "cpu_pct_simulate_tree": round(100 * cpu_sim / wall, 1),
        "cpu_s_this_process": round(cpu_self, 1),
        "cpus": os.cpu_count(),
        **extra,
    }
    if a.mode == "self-host":
        result["ingested_equals_acked"] = summary.get("ingested") == summary.get("acked")
        result["db"] = summary.get("db")
    print(
        f"simulate {a.mode}: {a.units} devices, target {target:g} msg/s, "
        f"{a.workers} worker(s), {a.duration:g} s"
    )
    for k, v in result.items():
        print(f"  {k:24} {v}")
    if code != 0:
        print("  simulate stderr tail:\n    " + "\n    ".join(err.strip().splitlines()[-5:]))
    if a.json:
        print(json.dumps(result))
    return 0 if code == 0 and result["rate_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
