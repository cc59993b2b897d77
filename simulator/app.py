"""The ``simulate`` run: pick the target (a hub, or the self-hosted stack), run the fleet, summarise.

Exit codes (``EXIT_*``): 0 every message acked (also after Ctrl-C, which drains first), 2 bad input,
3 hub unreachable, 4 credentials refused, 5 some messages failed after every retry, 6 the self-hosted
stack or consumer failed, 7 self-hosted and the database did not receive every acked message in time,
1 anything unexpected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginehub.simulator.clock import SystemClock
from enginehub.simulator.credentials import (
    CredentialsError,
    DeviceCredentials,
    HubTarget,
    hub_from_connection_string,
    read_devices_file,
)
from enginehub.simulator.device import DevicePolicy, quiet_sdk_logging
from enginehub.simulator.faults import FaultConfig
from enginehub.simulator.progress import Progress, Snapshot
from enginehub.simulator.runner import (
    MAX_DEVICES_PER_PROCESS,
    PER_PROCESS_CAPACITY,
    FleetConfig,
    FleetRunner,
    WorkerPool,
)
from enginehub.simulator.selfhost import TABLE, SelfHost, SelfHostError
from enginehub.simulator.sources import DatasetError, default_dataset, load_source

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_FAILED = 5
EXIT_STACK = 6
EXIT_INGEST = 7


class UsageError(ValueError):
    """Bad input: one sentence, exit 2."""


@dataclass
class Options:
    units: int = 10
    rate: float = 10.0
    duration: float | None = None
    dataset: str | None = None
    cmapss_dir: str | None = None
    payload: str = "seed"
    seed: int = 0
    run_id: str | None = None
    json: bool = False
    iothub_connection_string: str | None = None
    gateway_host: str | None = None
    ca_cert: str | None = None
    group_key: str | None = None
    devices_file: str | None = None
    workers: int = 1
    faults: FaultConfig = field(default_factory=FaultConfig)
    stop_at_end: bool = False
    send_timeout: float = 10.0
    jitter: float = 0.2
    data_dir: str | None = None
    progress: bool = True
    ingest_wait: float = 60.0
    verbose: bool = False
    commands: bool = False


@dataclass
class Outcome:
    code: int
    summary: dict[str, Any]
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def workers_needed(units: int, workers: int) -> int:
    """`workers`, raised so that no process holds more than MAX_DEVICES_PER_PROCESS clients."""
    return max(workers, -(-units // MAX_DEVICES_PER_PROCESS))


def capacity_warnings(rate: float, workers: int, cpus: int | None) -> list[str]:
    """Sentences saying the target rate is out of reach (empty when it looks reachable)."""
    out = []
    need = int(-(-rate // PER_PROCESS_CAPACITY))
    if rate / max(1, workers) > PER_PROCESS_CAPACITY:
        out.append(
            f"--rate {rate:g} with {workers} worker process(es) is beyond what azure-iot-device sustains "
            f"(~{PER_PROCESS_CAPACITY:.0f} msg/s per process): use --workers {need} or more"
        )
    if cpus and rate > PER_PROCESS_CAPACITY * cpus:
        out.append(
            f"--rate {rate:g} needs about {need} cores of SDK clients and this machine has {cpus}: "
            "the run will fall behind its target"
        )
    return out


def _read_ca(path: str | None) -> str | None:
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"--ca-cert {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"--ca-cert {path}: not a PEM certificate")
    return text


def _devices(opts: Options, target: HubTarget | None) -> list[DeviceCredentials]:
    if opts.devices_file:
        devs = read_devices_file(opts.devices_file)
        if opts.units > len(devs):
            raise UsageError(f"--units {opts.units} but --devices-file has only {len(devs)} devices")
        devs = devs[: opts.units]
        if opts.gateway_host:
            devs = [DeviceCredentials(d.device_id, d.hostname, d.key, opts.gateway_host) for d in devs]
        return devs
    assert target is not None
    return target.devices(opts.units)


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


async def run(opts: Options) -> Outcome:
    """Run one simulation; never raises for expected failures (they become an exit code and a sentence)."""
    quiet_sdk_logging(logging.DEBUG if opts.verbose else logging.ERROR)
    run_id = opts.run_id or uuid.uuid4().hex[:8]
    warnings_ = capacity_warnings(opts.rate, opts.workers, os.cpu_count())
    summary: dict[str, Any] = {
        "units": opts.units,
        "rate_target": opts.rate,
        "sent": 0,
        "acked": 0,
        "failed": 0,
        "duration_s": 0.0,
        "rate_achieved": 0.0,
        "run_id": run_id,
        "payload": opts.payload,
        "workers": opts.workers,
        "self_hosted": opts.iothub_connection_string is None and opts.devices_file is None,
    }
    # --- inputs that need no network ------------------------------------------------------------
    try:
        ca_pem = _read_ca(opts.ca_cert)
        target: HubTarget | None = None
        if opts.iothub_connection_string:
            target = hub_from_connection_string(
                opts.iothub_connection_string, group_key=opts.group_key, gateway_host=opts.gateway_host
            )
        devices = _devices(opts, target) if not summary["self_hosted"] else []
        dataset = opts.dataset or default_dataset(opts.cmapss_dir)
        source = load_source(dataset, cmapss_dir=opts.cmapss_dir, seed=opts.seed, units=max(opts.units, 100))
        summary["dataset"] = source.name
    except (UsageError, CredentialsError, DatasetError) as exc:
        return Outcome(EXIT_USAGE, summary, str(exc), warnings_)

    host: SelfHost | None = None
    t_wall = time.monotonic()
    try:
        if summary["self_hosted"]:
            host = SelfHost(Path(opts.data_dir) if opts.data_dir else None)
            try:
                info = await host.start()
            except SelfHostError as exc:
                return Outcome(EXIT_STACK, summary, f"self-hosted stack: {exc}", warnings_)
            except (OSError, ModuleNotFoundError) as exc:
                return Outcome(EXIT_STACK, summary, f"self-hosted stack could not start: {exc}", warnings_)
            summary["db"] = str(host.db)
            target = HubTarget(info.hostname, info.group_key, info.gateway_host)
            ca_pem = _read_ca(info.ca_cert)
            devices = target.devices(opts.units)
        cfg = FleetConfig(
            devices=tuple(devices),
            rate=opts.rate,
            total_devices=len(devices),
            duration=opts.duration,
            payload=opts.payload,
            run_id=run_id,
            seed=opts.seed,
            faults=opts.faults,
            replace_engines=not opts.stop_at_end,
            jitter=opts.jitter,
            ca_cert_pem=ca_pem,
            policy=DevicePolicy(send_timeout=opts.send_timeout),
            drain_timeout=max(15.0, opts.send_timeout * 2),
            dataset=dataset,
            cmapss_dir=opts.cmapss_dir,
            dataset_units=max(opts.units, 100),
            commands=opts.commands,
        )
        outcome = await _fleet(opts, cfg, source, host, summary, warnings_)
    finally:
        if host is not None:
            await host.stop()
    me, kids = _cpu()
    wall = max(1e-9, time.monotonic() - t_wall)
    summary["cpu_s"] = round(me, 2)
    summary["cpu_s_children"] = round(kids, 2)
    summary["cpu_pct_of_one_core"] = round(100 * (me + kids) / wall, 1)
    summary["exit_code"] = outcome.code
    return outcome


async def _fleet(
    opts: Options,
    cfg: FleetConfig,
    source: Any,
    host: SelfHost | None,
    summary: dict[str, Any],
    warnings_: list[str],
) -> Outcome:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupts = 0

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            sys.stderr.write("simulate: stopping — draining in-flight sends (Ctrl-C again to stop waiting)\n")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    clock = SystemClock()
    pool: WorkerPool | None = None
    runner: FleetRunner | None = None
    fatal: tuple[str, str] | None = None
    stack_error: str | None = None
    warned_lag = False
    warned_skip = False
    try:
        if opts.workers > 1:
            pool = WorkerPool(cfg, opts.workers, logging.DEBUG if opts.verbose else logging.WARNING)
            pool.start()
            task = None
        else:
            runner = FleetRunner(cfg, source, clock=clock)
            task = asyncio.create_task(runner.run(stop.is_set))
        with Progress(rate_target=opts.rate, enabled=opts.progress) as progress:
            while True:
                if pool is not None:
                    await asyncio.sleep(0.25)
                    pool.update()
                    if stop.is_set():
                        pool.stop()
                    stats = pool.total()
                    elapsed = max(pool.elapsed) if pool.elapsed else 0.0
                    if pool.finished:
                        break
                    if pool.fatal:
                        pool.stop()
                else:
                    assert runner is not None and task is not None
                    done, _ = await asyncio.wait({task}, timeout=0.25)
                    stats = runner.stats
                    elapsed = runner.elapsed
                    if done:
                        break
                if host is not None and stack_error is None and (why := host.alive()):
                    stack_error = why
                    stop.set()
                    if pool is not None:
                        pool.stop()
                if not warned_lag and stats.max_lag_s > 2.0:
                    warned_lag = True
                    sys.stderr.write(
                        f"simulate: warning: falling behind the target ({stats.max_lag_s:.1f} s late): "
                        f"the devices cannot keep {opts.rate:g} msg/s here\n"
                    )
                if not warned_skip and stats.skipped > max(10, stats.sent // 100):
                    warned_skip = True
                    sys.stderr.write(
                        f"simulate: warning: the hub is not acknowledging fast enough: {stats.skipped} send "
                        f"slots skipped (devices at {cfg.max_pending} unacked sends); the target "
                        f"{opts.rate:g} msg/s is out of reach for this hub\n"
                    )
                progress.update(Snapshot(elapsed, stats, host.ingested(cfg.run_id) if host else None))
            # --- after the fleet: let the consumer catch up ------------------------------------
            if pool is not None:
                pool.join()
                stats = pool.total()
                elapsed = max(pool.elapsed) if pool.elapsed else 0.0
                fatal = pool.fatal[0] if pool.fatal else None
            else:
                assert runner is not None and task is not None
                task.result()
                stats, elapsed = runner.stats, runner.elapsed
                fatal = (runner.fatal.kind, str(runner.fatal)) if runner.fatal else None
            ingested = None
            if host is not None:
                expected = stats.acked - stats.malformed
                ingested = await _catch_up(
                    lambda: host.ingested(cfg.run_id),
                    host,
                    expected,
                    opts.ingest_wait,
                    lambda: interrupts >= 2,
                    progress,
                    elapsed,
                    stats,
                    clock,
                )
                if stack_error is None and (why := host.alive()):
                    stack_error = why
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if pool is not None:
            pool.stop()
            pool.join(2)
    summary.update(
        sent=stats.sent,
        acked=stats.acked,
        failed=stats.failed,
        duration_s=round(elapsed, 3),
        rate_achieved=round(stats.acked / elapsed, 1) if elapsed > 0 else 0.0,
        retries=stats.retries,
        timeouts=stats.timeouts,
        reconnects=stats.reconnects,
        skipped=stats.skipped,
        duplicates=stats.duplicates,
        malformed=stats.malformed,
        disconnects=stats.disconnects,
        engines_finished=stats.engines_finished,
        max_lag_s=round(stats.max_lag_s, 3),
        interrupted=interrupts > 0,
    )
    if host is not None:
        summary["ingested"] = ingested
        summary["query"] = (
            f'SELECT "unit #", count(*), max("cycle #") FROM {TABLE} GROUP BY 1 ORDER BY 1 LIMIT 5'
        )
    if fatal is not None:
        kind, msg = fatal
        if kind == "unreachable" and cfg.devices:
            d = cfg.devices[0]
            msg = f"cannot reach the IoT Hub at {d.gateway_host or d.hostname}:8883 — {msg}"
        code = {"auth": EXIT_AUTH, "unreachable": EXIT_UNREACHABLE, "dataset": EXIT_USAGE}.get(
            kind, EXIT_INTERNAL
        )
        return Outcome(code, summary, msg, warnings_)
    if stack_error is not None:
        return Outcome(EXIT_STACK, summary, f"self-hosted stack: {stack_error}", warnings_)
    if stats.failed:
        return Outcome(
            EXIT_FAILED, summary, f"{stats.failed} messages were not acknowledged by the hub", warnings_
        )
    if host is not None and ingested is not None and ingested < stats.acked - stats.malformed:
        return Outcome(
            EXIT_INGEST,
            summary,
            f"the database has {ingested} of {stats.acked - stats.malformed} acked messages "
            f"after waiting {opts.ingest_wait:.0f} s",
            warnings_,
        )
    return Outcome(EXIT_OK, summary, None, warnings_)


async def _catch_up(count, host, expected, wait, give_up, progress, elapsed, stats, clock) -> int:  # type: ignore[no-untyped-def]
    """Poll the database until it holds `expected` rows, stops growing for 15 s, or `wait` s pass."""
    deadline = clock.monotonic() + wait
    last, last_change = -1, clock.monotonic()
    while True:
        n = count()
        now = clock.monotonic()
        if n != last:
            last, last_change = n, now
        progress.update(Snapshot(elapsed, stats, n))
        if n >= expected or now >= deadline or now - last_change > 15.0 or give_up() or host.alive():
            return n
        await asyncio.sleep(0.25)
