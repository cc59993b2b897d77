"""What the Event Hubs locustfiles do, without importing Locust (usable and testable on its own).

- :func:`add_arguments`: the custom command-line options of ``scenarios/throughput.py`` and
  ``scenarios/failover.py``.
- :class:`ProducerLoop`: one producer user's work: paced batches (``--target-rate`` split over
  ``--producers`` users, each writing to partition ``index % partitions``), ids logged in a
  :class:`~enginehub.loadtests.measure.ProducedLog`.
- :class:`Run`: the run's shared state (start time, visibility probe, failover driver) and
  :meth:`Run.finish`: wait until the sink holds every produced id (bounded), analyse, check thresholds.
- :class:`FailoverDriver`: kill -9 one ingest node at ``--crash-at`` s, SIGTERM a second at ``--graceful-at``
  s, and time how long until a live node owns each of their partitions (read from the file checkpoint
  store that the nodes share).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginehub.loadtests.clients import RequestEvent
from enginehub.loadtests.clients.eventhub import RawProducer, SdkProducer, encode_event
from enginehub.loadtests.measure import (
    CrateRows,
    ProducedLog,
    Report,
    Thresholds,
    VisibilityProbe,
    analyze,
    count_rows,
    summarize,
)
from enginehub.loadtests.stack import owners

LOG = logging.getLogger(__name__)


D2C_NAME = "d2c.send qos1"


def add_arguments(parser: Any, kind: str = "throughput") -> None:
    """Locust's ``init_command_line_parser`` parser (or argparse); ``kind``: throughput|failover|devices."""
    g = parser.add_argument_group("enginehub") if hasattr(parser, "add_argument_group") else parser
    env = os.environ.get
    if kind == "devices":
        g.add_argument(
            "--iothub-hostname", default=env("IOTHUB_HOSTNAME", "enginehub-local.azure-devices.net")
        )
        g.add_argument(
            "--gateway-host", default=env("IOTHUB_GATEWAY_HOST", "127.0.0.1"), help="address to dial"
        )
        g.add_argument("--group-key", default=env("IOTHUB_DEVICE_GROUP_KEY", ""), help="DPS group key")
        g.add_argument("--ca-cert", default=env("IOTHUB_CA_CERT", ""), help="CA PEM of the hub (emulator)")
        g.add_argument("--devices", dest="producers", type=int, default=10, help="device users")
        g.add_argument("--device-client", choices=("raw", "sdk"), default="raw")
        g.add_argument("--window", type=int, default=1, help="messages pipelined per send (raw client)")
        g.add_argument("--target-rate", type=float, default=100.0, help="messages/s over all devices")
        g.add_argument("--max-puback-p99-ms", type=float, default=None, help="fail above this PUBACK p99")
    else:
        g.add_argument("--eventhub-connection-string", default=env("EVENTHUB_CONNECTION_STRING", ""))
        g.add_argument("--eventhub", default=env("EVENTHUB_NAME", "eh1"))
        g.add_argument(
            "--partitions", type=int, default=4, help="partitions of the hub (producer i -> i %% P)"
        )
        g.add_argument("--producer", choices=("raw", "sdk"), default="raw", help="raw (our codec) or sdk")
        g.add_argument("--producers", type=int, default=4, help="producer users")
        g.add_argument("--target-rate", type=float, default=10000.0, help="events/s over all producers")
        g.add_argument("--batch-size", type=int, default=250, help="events per batch")
    g.add_argument("--hold", type=float, default=60.0, help="seconds the rate is held (the shape's length)")
    g.add_argument(
        "--warmup", type=float, default=5.0, help="seconds at the start left out of the steady window"
    )
    g.add_argument("--sink-db", default="", help="SQLite file the ingest nodes write (measurement)")
    g.add_argument(
        "--sink-url",
        default="",
        help="or: the CrateDB sink the ingest nodes write (crate://host:4200?schema=s): rows counted after "
        "REFRESH TABLE, each row visible at its ingested_at (measurement)",
    )
    g.add_argument("--table", default="enginehub_events")
    g.add_argument("--run-id", default="", help="id prefix of this run's events (default: random)")
    g.add_argument(
        "--drain-timeout", type=float, default=60.0, help="max seconds to wait for rows after the load"
    )
    g.add_argument("--report-json", default="", help="write the measurement here (the runner reads it)")
    g.add_argument("--min-rate", type=float, default=None, help="fail below this sustained events/s")
    g.add_argument("--max-lost", type=int, default=0)
    g.add_argument("--max-duplicates", type=int, default=0)
    g.add_argument("--max-p99-ms", type=float, default=None, help="fail above this end-to-end p99 latency")
    if kind == "failover":
        g.add_argument("--ingest-pids", default="", help="owner_id:pid,... of the ingest nodes")
        g.add_argument("--checkpoint-dir", default="", help="their shared file checkpoint store")
        g.add_argument("--crash-at", type=float, default=8.0, help="kill -9 one node at this second")
        g.add_argument("--graceful-at", type=float, default=20.0, help="SIGTERM a second node at this second")
        g.add_argument("--max-crash-takeover", type=float, default=10.0)
        g.add_argument("--max-graceful-takeover", type=float, default=3.0)


def bodies(n: int = 512) -> list[bytes]:
    from enginehub.ingest.testing import seed_line

    return [seed_line(1 + i % 100, 1 + i // 100).encode() for i in range(n)]


class ProducerLoop:
    """One producer: ``step()`` sends one batch, ``wait()`` is the pause until the next one is due."""

    def __init__(
        self, opts: Any, index: int, produced: ProducedLog, request_event: RequestEvent | None = None
    ) -> None:
        self.opts = opts
        self.index = index
        self.produced = produced
        self.prefix = f"{opts.run_id}-p{index}"
        self.partition = str(index % opts.partitions)
        self.batch = int(opts.batch_size)
        rate_per_user = opts.target_rate / max(opts.producers, 1)
        self.interval = self.batch / rate_per_user if rate_per_user > 0 else 1.0
        #: bounded in count as well as in time: at most the events the rate asks for over --hold
        self.max_events = int(round(rate_per_user * opts.hold / self.batch)) * self.batch
        self.n = 0
        self.bodies = bodies()
        self._pending: tuple[int, int] | None = None
        self._next = time.monotonic()
        cs = opts.eventhub_connection_string
        if opts.producer == "sdk":
            self.client: Any = SdkProducer(cs, opts.eventhub, self.partition, request_event=request_event)
        else:
            self.client = RawProducer(cs, opts.eventhub, self.partition, request_event=request_event)

    @property
    def done(self) -> bool:
        return self.n >= self.max_events

    def step(self) -> None:
        if self.done:
            return
        first, count = self.n, self.batch
        self.n += count
        ids = [f"{self.prefix}-{k}" for k in range(first, first + count)]
        bodies = self.bodies
        nb = len(bodies)
        self._pending = (first, count)
        ok = False
        try:
            if isinstance(self.client, RawProducer):
                self.client.send_batch(
                    [
                        encode_event(bodies[k % nb], mid)
                        for k, mid in zip(range(first, first + count), ids, strict=True)
                    ]
                )
            else:
                self.client.send_batch([bodies[k % nb] for k in range(first, first + count)], ids)
            ok = True
        finally:
            self._pending = None
            self.produced.record(self.prefix, first, count, ok)
        self._next += self.interval

    def wait(self) -> float:
        if self.done:
            return 1.0  # idle until the shape ends the run
        now = time.monotonic()
        if self._next < now - 2.0:  # more than 2 s behind: do not burst, hold the rate from here
            self._next = now
        return max(0.0, self._next - now)

    def close(self) -> None:
        if self._pending is not None:  # stopped mid-send: it may or may not have been stored
            self.produced.record(self.prefix, self._pending[0], self._pending[1], False)
            self._pending = None
        try:
            self.client.close()
        except Exception:  # closing must not fail the run
            LOG.debug("closing the producer failed", exc_info=True)


class DeviceLoop:
    """One device: ``step()`` sends ``--window`` QoS 1 messages (each waits for its PUBACK), paced so that
    the fleet offers ``--target-rate`` messages/s; message ids ``<run>-d<index>-<n>``."""

    def __init__(
        self, opts: Any, index: int, produced: ProducedLog, request_event: RequestEvent | None = None
    ) -> None:
        from enginehub.loadtests.clients.mqtt_device import RawMqttDevice, SdkDevice, device_key

        self.opts = opts
        self.produced = produced
        self.prefix = f"{opts.run_id}-d{index}"
        self.device_id = f"loadtest-{index:05d}"
        self.window = max(1, int(getattr(opts, "window", 1)))
        rate = opts.target_rate / max(opts.producers, 1)
        self.interval = self.window / rate if rate > 0 else 1.0
        self.max_events = int(round(rate * opts.hold / self.window)) * self.window
        self.n = 0
        self.bodies = bodies(64)
        self._pending: tuple[int, int] | None = None
        self._next = time.monotonic()
        key = device_key(opts.group_key, self.device_id)
        cls = SdkDevice if opts.device_client == "sdk" else RawMqttDevice
        self.client: Any = cls(
            opts.gateway_host,
            opts.iothub_hostname,
            self.device_id,
            key,
            ca_cert=opts.ca_cert or None,
            request_event=request_event,
            name=D2C_NAME,
        )
        self.client.connect()

    @property
    def done(self) -> bool:
        return self.n >= self.max_events

    def step(self) -> None:
        if self.done:
            return
        first, count = self.n, self.window
        self.n += count
        self._pending = (first, count)
        ok = False
        try:
            nb = len(self.bodies)
            if count == 1 or not hasattr(self.client, "send_many"):
                for k in range(first, first + count):
                    self.client.send(self.bodies[k % nb], f"{self.prefix}-{k}")
            else:
                self.client.send_many(
                    [(self.bodies[k % nb], f"{self.prefix}-{k}") for k in range(first, first + count)]
                )
            ok = True
        finally:
            self._pending = None
            self.produced.record(self.prefix, first, count, ok)
        self._next += self.interval

    wait = ProducerLoop.wait
    close = ProducerLoop.close


@dataclass
class Takeover:
    what: str
    node: str
    partitions: list[str]
    at: float
    seconds: float | None = None
    new_owners: dict[str, str] = field(default_factory=dict)


class FailoverDriver:
    """See the module docstring. ``nodes``: owner id -> pid (children of whoever started them)."""

    def __init__(
        self,
        nodes: dict[str, int],
        checkpoint_dir: str,
        crash_at: float,
        graceful_at: float,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.nodes = dict(nodes)
        self.live = set(nodes)
        self.checkpoint_dir = checkpoint_dir
        self.crash_at = crash_at
        self.graceful_at = graceful_at
        self.timeout = timeout
        self.sleep = sleep
        self.results: list[Takeover] = []
        self.error: str | None = None
        self.done = threading.Event()

    def _victim(self) -> str:
        current = owners(self.checkpoint_dir)
        counts = {n: sum(1 for o in current.values() if o == n) for n in sorted(self.live)}
        return max(counts, key=lambda n: (counts[n], n))

    def _stop_node(self, what: str, sig: int) -> Takeover:
        node = self._victim()
        partitions = sorted(p for p, o in owners(self.checkpoint_dir).items() if o == node)
        t0 = time.time()
        os.kill(self.nodes[node], sig)
        self.live.discard(node)
        LOG.info("failover: %s node %s (pid %s) owning %s", what, node, self.nodes[node], partitions)
        result = Takeover(what, node, partitions, t0)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            current = owners(self.checkpoint_dir)
            if all(current.get(p) in self.live for p in partitions):
                result.seconds = round(time.time() - t0, 2)
                result.new_owners = {p: current[p] for p in partitions}
                break
            self.sleep(0.05)
        LOG.info("failover: %s takeover of %s: %s s", what, partitions, result.seconds)
        self.results.append(result)
        return result

    def run(self, started: float) -> None:
        try:
            self.sleep(max(0.0, started + self.crash_at - time.time()))
            self._stop_node("crash", signal.SIGKILL)
            self.sleep(max(0.0, started + self.graceful_at - time.time()))
            self._stop_node("graceful", signal.SIGTERM)
        except Exception as exc:  # reported in the run's results, never swallowed silently
            LOG.exception("failover driver failed")
            self.error = repr(exc)
        finally:
            self.done.set()

    def takeover(self, what: str) -> float | None:
        for r in self.results:
            if r.what == what:
                return r.seconds
        return None


#: Locust messages of the distributed mode (``scenarios/users.py``): worker -> master
MSG_PRODUCED = "enginehub-produced"  # data: the worker's ProducedLog.to_json(), at its test_stop
MSG_PRODUCER_DONE = "enginehub-producer-done"  # data: 1, when one producer user has sent its share
#: master -> workers when the load ends: stop producing, send MSG_PRODUCED (the master's headless stop
#: ends the workers only after its own test_stop, so it asks for their logs first)
MSG_REPORT_REQUEST = "enginehub-report-request"
#: seconds the master waits after the stop for the produced-id logs of its workers
WORKER_LOG_TIMEOUT = 30.0


@dataclass
class Run:
    """Shared state of one load run inside one Locust process (or a script).

    ``role``: ``local`` (one Locust process does everything), or Locust's distributed mode: ``worker``
    processes run the producer users (producer ``i`` of worker ``w`` of ``workers`` is the run's producer
    ``i * workers + w``, so ids and partitions are the same as with one process) and send their
    produced-id logs with ``send`` when they stop; the ``master`` runs the shape, the visibility probe,
    the failover driver and the analysis, on the logs of all its workers merged."""

    opts: Any
    role: str = "local"
    worker_index: int = 0
    workers: int = 1
    send: Callable[[str, Any], None] | None = None
    remote_done: int = 0  # master: producer users of the workers that sent their share
    worker_logs: dict[str, ProducedLog] = field(default_factory=dict)  # master: by worker id
    reported: bool = False  # worker: its log went to the master
    gathered: bool = False  # master: the workers' logs are merged into ``produced``
    produced: ProducedLog = field(default_factory=ProducedLog)
    started: float | None = None
    probe: VisibilityProbe | None = None
    failover: FailoverDriver | None = None
    report: Report | None = None
    failures: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    producers: list[ProducerLoop] = field(default_factory=list)
    _crate: CrateRows | None = None
    _users: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.opts.run_id:
            self.opts.run_id = f"lt{uuid.uuid4().hex[:8]}"

    def next_index(self) -> int:
        with self._lock:
            self._users += 1
            local = self._users - 1
        if self.role == "worker":
            return local * max(self.workers, 1) + self.worker_index
        return local

    def producer_done(self) -> None:
        """A producer user sent its share: a worker tells the master, whose shape waits for all."""
        if self.role == "worker" and self.send is not None:
            self.send(MSG_PRODUCER_DONE, 1)

    def add_worker_log(self, worker: str, data: dict[str, Any]) -> None:
        """Master: the produced-id log a worker sent when it stopped."""
        with self._lock:
            self.worker_logs[worker] = ProducedLog.from_json(data)

    def report_to_master(self, sleep: Callable[[float], None] = time.sleep, timeout: float = 10.0) -> None:
        """Worker, on the master's request: stop producing, let a batch in flight finish (bounded; one
        cut off is recorded as unconfirmed), send the produced-id log once."""
        if self.role != "worker" or self.reported:
            return
        for p in self.producers:
            p.max_events = min(p.max_events, p.n)  # done: no further batch
        deadline = time.monotonic() + timeout
        while any(p._pending is not None for p in self.producers) and time.monotonic() < deadline:
            sleep(0.05)
        for p in self.producers:
            if p._pending is not None:
                self.produced.record(p.prefix, p._pending[0], p._pending[1], False)
                p._pending = None
        self.reported = True
        if self.send is not None:
            self.send(MSG_PRODUCED, self.produced.to_json())

    def gather(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Master: ask every worker for its produced-id log, wait for them (bounded), merge them."""
        if self.role != "master" or self.gathered:
            return
        if self.send is not None:
            self.send(MSG_REPORT_REQUEST, None)
        deadline = time.monotonic() + WORKER_LOG_TIMEOUT
        while len(self.worker_logs) < self.workers and time.monotonic() < deadline:
            sleep(0.1)
        with self._lock:
            self.gathered = True
            for log in self.worker_logs.values():
                self.produced.acked.extend(log.acked)
                self.produced.unconfirmed.extend(log.unconfirmed)

    def new_producer(self, request_event: RequestEvent | None = None) -> ProducerLoop:
        loop = ProducerLoop(self.opts, self.next_index(), self.produced, request_event)
        self.producers.append(loop)
        return loop

    def new_device(self, request_event: RequestEvent | None = None) -> DeviceLoop:
        loop = DeviceLoop(self.opts, self.next_index(), self.produced, request_event)
        self.producers.append(loop)  # type: ignore[arg-type]
        return loop

    def keep_running(self, run_time: float) -> bool:
        """The shape's verdict: until ``--hold`` s have passed and every producer sent its share, or at
        most ``--hold`` + max(5 s, 50 %): a producer that cannot keep up is cut off (fewer events, lower
        rate)."""
        opts = self.opts
        if run_time < opts.hold:
            return True
        if self.role == "master":
            done = self.remote_done >= opts.producers
        else:
            done = len(self.producers) >= opts.producers and all(p.done for p in self.producers)
        return not done and run_time < opts.hold + max(5.0, opts.hold * 0.5)

    @property
    def crate(self) -> CrateRows | None:
        """The CrateDB sink's rows (``--sink-url``), else None (an SQLite sink, or none)."""
        url = getattr(self.opts, "sink_url", "")
        if not url or self.opts.sink_db:
            return None
        if self._crate is None:
            self._crate = CrateRows(url, self.opts.table)
        return self._crate

    @property
    def measured(self) -> bool:
        return bool(self.opts.sink_db or getattr(self.opts, "sink_url", ""))

    def count_rows(self) -> int:
        prefix = self.opts.run_id + "-"
        crate = self.crate
        if crate is not None:
            return crate.count(prefix)
        return count_rows(self.opts.sink_db, self.opts.table, prefix)

    def start(self) -> None:
        self.started = time.time()
        if self.opts.sink_db and self.role != "worker":  # a CrateDB row carries its own time: no probe
            self.probe = VisibilityProbe(self.opts.sink_db, self.opts.table).start()

    def start_failover(self, spawn: Callable[[Callable[[], None]], Any]) -> None:
        opts = self.opts
        if not getattr(opts, "ingest_pids", "") or self.role == "worker":
            return
        nodes = {}
        for item in opts.ingest_pids.split(","):
            owner, _, pid = item.rpartition(":")
            nodes[owner] = int(pid)
        self.failover = FailoverDriver(nodes, opts.checkpoint_dir, opts.crash_at, opts.graceful_at)
        started = self.started or time.time()
        spawn(lambda: self.failover.run(started))  # type: ignore[union-attr]

    def wait_drained(self, sleep: Callable[[float], None] = time.sleep) -> int:
        """Poll until the sink holds as many rows of this run as were acked (bounded by --drain-timeout)."""
        want = self.produced.produced
        deadline = time.monotonic() + self.opts.drain_timeout
        interval = CrateRows.poll_interval if self.crate is not None else 0.2
        have = self.count_rows()
        while have < want and time.monotonic() < deadline:
            sleep(interval)
            have = self.count_rows()
        if have < want:
            LOG.warning("drain timeout: %d of %d rows after %.0f s", have, want, self.opts.drain_timeout)
        return have

    def finish(
        self, sleep: Callable[[float], None] = time.sleep, request_stats: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        opts = self.opts
        ended = time.time()
        if self.role == "worker":  # the master analyses; the worker only hands over its ids (once)
            self.report_to_master(sleep)
            self.result = {"run_id": opts.run_id, "produced": self.produced.produced, "role": "worker"}
            return self.result
        missing = 0
        if self.role == "master":
            self.gather(sleep)
            missing = self.workers - len(self.worker_logs)
        result: dict[str, Any] = {"run_id": opts.run_id, "produced": self.produced.produced}
        if self.role == "master":
            result["locust_workers"] = len(self.worker_logs)
        result["unconfirmed"] = sum(last - first + 1 for _, first, last in self.produced.unconfirmed)
        result["request_stats"] = request_stats or {}
        if self.failover is not None and not self.failover.done.wait(self.failover.timeout * 2 + 5):
            self.failures.append("the failover driver did not finish")
        started = self.started or ended
        window = (started + opts.warmup, min(started + opts.hold, ended))
        if window[1] > window[0]:  # wall clock: what the live baseline counts its events in
            result["steady_window_epoch"] = [round(window[0], 3), round(window[1], 3)]
        if self.measured:
            self.wait_drained(sleep)
            if self.probe is not None:
                self.probe.stop()
            steady = window if window[1] > window[0] else None
            crate = self.crate
            if crate is not None:
                self.report = summarize(crate.rows(opts.run_id + "-"), self.produced, steady)
            else:
                self.report = analyze(
                    opts.sink_db,
                    opts.table,
                    opts.run_id + "-",
                    self.produced,
                    self.probe.samples if self.probe else [],
                    steady,
                )
            result.update(self.report.to_json())
            thresholds = Thresholds(opts.min_rate, opts.max_lost, opts.max_duplicates, opts.max_p99_ms)
            self.failures = thresholds.failures(self.report)
        if self.failover is not None:
            result["crash_takeover_s"] = self.failover.takeover("crash")
            result["graceful_takeover_s"] = self.failover.takeover("graceful")
            result["failover"] = [vars(r) for r in self.failover.results]
            result["failover_error"] = self.failover.error
            for what, limit in (("crash", opts.max_crash_takeover), ("graceful", opts.max_graceful_takeover)):
                seconds = self.failover.takeover(what)
                if seconds is None or seconds > limit:
                    self.failures.append(f"{what} takeover {seconds} s > {limit} s")
        if missing > 0:  # their events count as neither produced nor lost: the run cannot be judged
            self.failures.append(f"{missing} of {self.workers} Locust workers sent no produced-id log")
        result["failures"] = self.failures
        self.result = result
        if opts.report_json:
            Path(opts.report_json).write_text(json.dumps(result, default=str))
        return result


def parse_args(argv: list[str] | None = None, kind: str = "throughput") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, kind)
    return parser.parse_args(argv)
