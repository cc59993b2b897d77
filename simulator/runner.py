"""Run a fleet (or one worker's slice of it): connect the devices, pace the sends, drain, count.

``FleetRunner`` is one process's event loop: a ``PacedLoop`` dispatches each slot to its device as an
asyncio task (so a slow PUBACK never delays other devices), a device with ``max_pending`` unacked sends
skips its slot (counted as ``skipped``; its engine does not skip a cycle), and when the run stops
(duration reached, every engine done, or a stop request such as Ctrl-C) in-flight sends are drained
for up to ``drain_timeout`` seconds. A ``DeviceError`` (credentials refused, hub unreachable) stops the
run and is kept in ``fatal``.

``run_workers`` spreads the devices over K processes (``spawn``), each with its share of the rate, and
sums their counters; the parent handles Ctrl-C and SIGTERM and tells the workers to drain. Sent to the
process group they reach the workers too: a worker ignores SIGINT and takes SIGTERM as the same request
to drain, so both end as a stop by the parent's pid does; a worker dies with its parent (SIGKILL).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue as queue_mod
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from enginehub.harness.procutil import die_with_parent, stop_signals_blocked, unblock_stop_signals
from enginehub.simulator.clock import Clock, SystemClock
from enginehub.simulator.commands import Commander
from enginehub.simulator.credentials import DeviceCredentials
from enginehub.simulator.device import (
    DeviceClient,
    DeviceError,
    DevicePolicy,
    ResilientDevice,
    SdkClient,
    quiet_sdk_futures,
)
from enginehub.simulator.faults import FaultConfig, FaultPlan
from enginehub.simulator.fleet import Fleet, UnitSource
from enginehub.simulator.messages import OutMessage, build_message, malform
from enginehub.simulator.pacing import PacedLoop, Pacer
from enginehub.simulator.stats import Stats

LOG = logging.getLogger(__name__)

#: What one process of azure-iot-device clients sustains on one core (measured ~1,000; keep headroom).
PER_PROCESS_CAPACITY = 900.0
#: Clients per process: paho-mqtt 1.6 waits with select(), which cannot watch file descriptors >= 1024,
#: and each client holds 3 (TLS socket + a wake-up socket pair): client ~341 fails to connect.
MAX_DEVICES_PER_PROCESS = 300


@dataclass(frozen=True)
class FleetConfig:
    """Everything one process needs to run its slice of the fleet (picklable)."""

    devices: tuple[DeviceCredentials, ...]
    rate: float
    total_devices: int
    first_index: int = 0
    duration: float | None = None
    payload: str = "seed"
    run_id: str = "run"
    seed: int = 0
    faults: FaultConfig = field(default_factory=FaultConfig)
    replace_engines: bool = True
    jitter: float = 0.2
    ca_cert_pem: str | None = None
    policy: DevicePolicy = field(default_factory=DevicePolicy)
    max_pending: int = 20
    drain_timeout: float = 15.0
    connect_concurrency: int = 16
    # how to load the data inside a worker (sources.load_source arguments)
    dataset: str = "synthetic"
    cmapss_dir: str | None = None
    dataset_units: int = 100
    commands: bool = False  # answer direct methods and desired properties, report state (simulator.commands)


ClientFactory = Callable[[DeviceCredentials], DeviceClient]


class FleetRunner:
    def __init__(
        self,
        cfg: FleetConfig,
        source: UnitSource,
        *,
        clock: Clock | None = None,
        client_factory: ClientFactory | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.clock = clock or SystemClock()
        self.stats = stats or Stats()
        factory = client_factory or (lambda c: SdkClient(c, ca_cert_pem=cfg.ca_cert_pem))
        n = len(cfg.devices)
        self.fleet = Fleet(
            source,
            n,
            total_devices=cfg.total_devices,
            first_index=cfg.first_index,
            replace=cfg.replace_engines,
        )
        base = random.Random(f"{cfg.seed}:{cfg.first_index}")
        self.devices = [
            ResilientDevice(
                c.device_id,
                factory(c),
                clock=self.clock,
                rng=random.Random(base.random()),
                stats=self.stats,
                policy=cfg.policy,
            )
            for c in cfg.devices
        ]
        self.faults = [FaultPlan(cfg.faults, random.Random(base.random())) for _ in range(n)]
        self.pacer: Pacer | None = None
        self.loop: PacedLoop | None = None
        self.fatal: DeviceError | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seed_rng = base
        self.commander = Commander(
            self.fleet, lambda: self.pacer, [d.device_id for d in self.devices], self.clock.monotonic
        )
        self._reports: dict[int, asyncio.Task[None]] = {}

    async def enable_commands(self) -> None:
        """Every device answers direct methods and desired patches (``cfg.commands``); its first report."""
        sem = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def one(index: int) -> None:
            client = self.devices[index].client
            if not hasattr(client, "enable_commands"):
                return
            async with sem:

                async def on_method(name: str, payload: Any) -> tuple[int, Any]:
                    status, body = self.commander.method(index, name, payload)
                    self._report(index)
                    return status, body

                async def on_desired(patch: dict[str, Any]) -> None:
                    self.commander.desired(index, patch)
                    self._report(index)

                try:
                    await client.enable_commands(on_method, on_desired)
                except Exception as exc:  # a device that cannot subscribe still sends telemetry
                    LOG.warning("%s: cannot subscribe to commands: %s", self.devices[index].device_id, exc)
                    return
                self._report(index)

        await asyncio.gather(*(one(i) for i in range(len(self.devices))))

    def _report(self, index: int) -> None:
        """Write the device's state to its reported properties (latest state wins; one write at a time)."""
        client = self.devices[index].client
        running = self._reports.get(index)
        if running is not None and not running.done():
            running.add_done_callback(lambda _t: self._report(index))
            return

        async def write() -> None:
            try:
                await asyncio.wait_for(client.report(self.commander.state(index)), 10)  # type: ignore[attr-defined]
            except Exception as exc:  # reporting is best effort
                LOG.debug("%s: reported properties not written: %s", self.devices[index].device_id, exc)

        self._reports[index] = asyncio.create_task(write())

    async def connect_all(self) -> None:
        """Connect every device, the first alone (a refused key or a dead hub fails fast and is raised).

        Then the rest with bounded concurrency: a refused key is still raised; a device that cannot
        connect now stays disconnected and tries again on its first send (counted in connect_errors).
        """
        if not self.devices:
            return
        await self.devices[0].ensure_connected()
        sem = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def one(dev: ResilientDevice) -> None:
            async with sem:
                try:
                    await dev.ensure_connected()
                except DeviceError as exc:
                    if exc.kind == "auth":
                        raise
                    LOG.warning("%s; it will retry on its first send", exc)

        tasks = [asyncio.create_task(one(d)) for d in self.devices[1:]]
        try:
            for fut in asyncio.as_completed(tasks):
                await fut
        except DeviceError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _dispatch(self, device: int, due: float, lag: float) -> None:
        dev = self.devices[device]
        if lag > self.stats.max_lag_s:
            self.stats.max_lag_s = lag
        if dev.pending >= self.cfg.max_pending:
            self.stats.skipped += 1
            return
        if device in self.commander.paused:
            return  # paused by a command: the slot passes, the engine does not advance
        row = self.fleet.next_row(device)
        self.stats.engines_finished = self.fleet.engines_finished
        if row is None:
            assert self.pacer is not None
            self.pacer.retire(device)
            return
        msg = build_message(
            row,
            run_id=self.cfg.run_id,
            payload=self.cfg.payload,
            dataset=self.source.name,
            created=self.clock.utcnow(),
        )
        plan = self.faults[device]
        if plan.malformed():
            msg = malform(msg, plan.rng)
            self.stats.malformed += 1
        self.stats.sent += 1
        self.stats.inflight += 1
        task = asyncio.create_task(self._deliver(device, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, device: int, msg: OutMessage) -> None:
        dev = self.devices[device]
        plan = self.faults[device]
        ok = False
        try:
            ok = await dev.send(msg)
            if not ok:
                LOG.warning("message %s from %s failed after every attempt", msg.message_id, dev.device_id)
        except DeviceError as exc:
            if self.fatal is None:
                self.fatal = exc
        finally:
            self.stats.inflight -= 1
            if ok:
                self.stats.acked += 1
            else:
                self.stats.failed += 1
        if not ok:
            return
        try:
            if plan.duplicate():
                self.stats.duplicates += 1
                await dev.send(msg)
            if plan.disconnect_after(dev.acked):
                self.stats.disconnects += 1
                await dev.bounce()
        except DeviceError as exc:
            if self.fatal is None:
                self.fatal = exc

    async def run(self, should_stop: Callable[[], bool] = lambda: False) -> Stats:
        """Connect, pace until the end or a stop request, drain; returns the counters."""
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(quiet_sdk_futures)
        try:
            await self.connect_all()
        except DeviceError as exc:
            self.fatal = exc
            await self.close()
            return self.stats
        start = self.clock.monotonic()
        self.started_at = start
        self.pacer = Pacer(
            len(self.devices),
            self.cfg.rate,
            start=start,
            jitter=self.cfg.jitter,
            rng=random.Random(self._seed_rng.random()),
        )
        if self.cfg.commands:
            await self.enable_commands()
        end = start + self.cfg.duration if self.cfg.duration else None
        self.loop = PacedLoop(self.pacer, self.clock, end=end)
        await self.loop.run(self._dispatch, lambda: should_stop() or self.fatal is not None)
        self.stopped_at = self.clock.monotonic()
        await self.drain()
        await self.close()
        return self.stats

    async def drain(self) -> None:
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=self.cfg.drain_timeout)
        for t in pending:
            t.cancel()
        if pending:
            LOG.warning(
                "%d sends still in flight after %.0f s of draining", len(pending), self.cfg.drain_timeout
            )
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        reports = [t for t in self._reports.values() if not t.done()]
        if reports:
            await asyncio.wait(reports, timeout=5)
        await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.stopped_at if self.stopped_at is not None else self.clock.monotonic()
        return max(0.0, end - self.started_at)


# --- several processes ----------------------------------------------------------------------------


def split(devices: list[DeviceCredentials], workers: int) -> list[tuple[int, list[DeviceCredentials]]]:
    """(first index, devices) per worker: contiguous, sizes differing by at most one."""
    workers = max(1, min(workers, len(devices)))
    q, r = divmod(len(devices), workers)
    out, i = [], 0
    for w in range(workers):
        n = q + (1 if w < r else 0)
        out.append((i, devices[i : i + n]))
        i += n
    return out


def worker_configs(cfg: FleetConfig, workers: int) -> list[FleetConfig]:
    """One config per worker: its devices and its share of the rate (proportional to its devices)."""
    parts = split(list(cfg.devices), workers)
    total = len(cfg.devices)
    return [
        replace(
            cfg, devices=tuple(devs), first_index=cfg.first_index + first, rate=cfg.rate * len(devs) / total
        )
        for first, devs in parts
    ]


def _worker_main(index: int, cfg: FleetConfig, out: mp.Queue, stop: mp.Event, log_level: int) -> None:
    # Ctrl-C reaches the whole group: the parent turns it into `stop`. SIGTERM (to the group, or to us:
    # multiprocessing's exit handler terminates daemon workers, then joins them without a timeout) is
    # the same request: drain, report, exit. If the parent is killed the kernel kills us (SIGKILL: we
    # would drain into a queue nobody reads): no fleet left sending.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: terminated.set())
    unblock_stop_signals()  # blocked by the parent until now (WorkerPool.start)
    parent = mp.parent_process()
    die_with_parent(signal.SIGKILL, parent.pid if parent is not None else None)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    from enginehub.simulator.device import quiet_sdk_logging
    from enginehub.simulator.sources import load_source

    quiet_sdk_logging()
    logging.getLogger("enginehub.simulator.commands").setLevel(logging.INFO)
    try:
        source = load_source(cfg.dataset, cmapss_dir=cfg.cmapss_dir, seed=cfg.seed, units=cfg.dataset_units)
    except Exception as exc:
        out.put(("done", index, Stats(), "dataset", str(exc), 0.0))
        return
    runner = FleetRunner(cfg, source)

    async def main() -> None:
        flag = {"stop": False}

        async def report() -> None:
            while True:
                flag["stop"] = stop.is_set() or terminated.is_set()
                out.put(("stats", index, replace(runner.stats), None, None, runner.elapsed))
                await asyncio.sleep(0.25)

        reporter = asyncio.create_task(report())
        try:
            await runner.run(lambda: flag["stop"])
        finally:
            reporter.cancel()

    asyncio.run(main())
    f = runner.fatal
    out.put(("done", index, runner.stats, f.kind if f else None, str(f) if f else None, runner.elapsed))


class WorkerPool:
    """K worker processes running slices of one fleet; poll ``update()`` for summed counters."""

    def __init__(self, cfg: FleetConfig, workers: int, log_level: int = logging.WARNING) -> None:
        ctx = mp.get_context("spawn")
        self.configs = worker_configs(cfg, workers)
        self.queue: mp.Queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.stats = [Stats() for _ in self.configs]
        self.elapsed = [0.0 for _ in self.configs]
        self.done = [False for _ in self.configs]
        self.fatal: list[tuple[str, str]] = []
        self.procs = [
            ctx.Process(target=_worker_main, args=(i, c, self.queue, self.stop_event, log_level), daemon=True)
            for i, c in enumerate(self.configs)
        ]

    def start(self) -> None:
        with stop_signals_blocked():  # a group signal while a worker starts waits for its handlers
            for p in self.procs:
                p.start()

    def stop(self) -> None:
        self.stop_event.set()

    def update(self, timeout: float = 0.0) -> None:
        """Take every report waiting (waiting up to `timeout` for the first)."""
        block = timeout > 0
        while True:
            try:
                kind, i, stats, fkind, fmsg, elapsed = self.queue.get(block, timeout if block else None)
            except queue_mod.Empty:
                break
            block = False
            self.stats[i] = stats
            self.elapsed[i] = elapsed
            if kind == "done":
                self.done[i] = True
                if fkind:
                    self.fatal.append((fkind, fmsg))
        for i, p in enumerate(self.procs):
            if not self.done[i] and p.exitcode is not None and p.exitcode != 0:
                self.done[i] = True
                self.fatal.append(("worker", f"worker {i} exited with code {p.exitcode}"))

    @property
    def finished(self) -> bool:
        return all(self.done)

    def total(self) -> Stats:
        return Stats.total(self.stats)

    def join(self, timeout: float = 10.0) -> None:
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()  # SIGTERM would only start a drain (see _worker_main)
                p.join(2)
