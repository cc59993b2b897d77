"""CPU placement of a load run: each ingest node's receiving process on a CPU of its own.

Why: the receiving process (the SDK's AMQP decode and ``EventData``) is the pipeline's bottleneck, and the
SDK receive baseline it is compared with reads with a CPU to itself (the emulator only sends meanwhile).
Under load the same machine also runs the load generator, the emulator's ingest and the sink workers;
left to the scheduler they take turns on every CPU, and the receiving process got 80-95 % of one (2-core
development machine, 2026-11-27). In a deployment the load generator and the hub are not on the
consumer's machine at all. So, when the machine has more CPUs than there are nodes, node ``i`` gets CPU
``i`` and everything else (sink workers, emulator, Locust, the runner) the CPUs left over; the bare SDK
processes of a baseline, which stand in for the nodes, get the nodes' CPUs. The sink workers are part of
the pipeline and share the leftover CPUs with the load generator: a handicap for the pipeline, not a help.

``--cpu-placement off`` leaves everything to the scheduler. Linux only (``os.sched_setaffinity`` and
``/proc/<pid>/task``); elsewhere :func:`plan` returns None and nothing is pinned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """The CPUs of each node's receiving process (index = node), and of every other process."""

    nodes: tuple[frozenset[int], ...]
    others: frozenset[int]

    def node(self, index: int) -> frozenset[int]:
        return self.nodes[index % len(self.nodes)]

    def describe(self) -> dict[str, list[list[int]] | list[int]]:
        """For the JSON result: ``{"nodes": [[0]], "others": [1]}``."""
        return {"nodes": [sorted(cpus) for cpus in self.nodes], "others": sorted(self.others)}


def available_cpus() -> set[int] | None:
    """The CPUs this process may run on, or None where the OS cannot pin processes."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None or not hasattr(os, "sched_setaffinity"):
        return None
    return set(getter(0))


def plan(cpus: Iterable[int] | None, nodes: int) -> Placement | None:
    """One CPU per node (the lowest-numbered ones) and the rest for everything else; None when there are
    not more CPUs than nodes (nothing would be left for the emulator and the load generator)."""
    if cpus is None or nodes < 1:
        return None
    ordered = sorted(set(cpus))
    if len(ordered) <= nodes:
        return None
    return Placement(tuple(frozenset({c}) for c in ordered[:nodes]), frozenset(ordered[nodes:]))


def pin(pid: int, cpus: Iterable[int], what: str | None = None) -> bool:
    """Every thread of ``pid`` onto ``cpus`` (threads and processes it starts later inherit them), logged
    as ``what`` when given. False, with a warning, when the process is gone or the OS refuses; a load run
    goes on without."""
    wanted = set(cpus)
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    ok = False
    for tid in tids:
        try:
            os.sched_setaffinity(tid, wanted)
            ok = True
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as exc:
            LOG.warning("could not pin pid %d (thread %d) to CPUs %s: %s", pid, tid, sorted(wanted), exc)
            return False
    if not ok:
        LOG.warning("could not pin pid %d to CPUs %s: it is gone", pid, sorted(wanted))
    elif what:
        LOG.info("%s (pid %d) on CPUs %s", what, pid, sorted(wanted))
    return ok


def parse_cpu_ticks(text: str) -> dict[int, tuple[int, int]]:
    """Busy and total ticks per CPU from the text of ``/proc/stat`` (its ``cpuN`` lines: user nice system
    idle iowait irq softirq steal ...; idle and iowait are not busy, guest time is inside user already)."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in rest.split()[:8]]
        ticks += [0] * (8 - len(ticks))
        idle = ticks[3] + ticks[4]
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def cpu_ticks() -> dict[int, tuple[int, int]] | None:
    """:func:`parse_cpu_ticks` of this machine now, or None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            return parse_cpu_ticks(f.read())
    except OSError:
        return None


def busy_shares(
    before: dict[int, tuple[int, int]] | None, after: dict[int, tuple[int, int]] | None
) -> dict[str, float] | None:
    """How busy each CPU was between two :func:`cpu_ticks` readings (0..1, keys the CPU numbers as text,
    for JSON): 1.0 on both CPUs of a saturated 2-core load run says no CPU was left to spare."""
    if not before or not after:
        return None
    shares = {}
    for cpu, (busy1, total1) in sorted(after.items()):
        busy0, total0 = before.get(cpu, (busy1, total1))
        if total1 > total0:
            shares[str(cpu)] = round((busy1 - busy0) / (total1 - total0), 3)
    return shares


class CpuSampler:
    """:func:`cpu_ticks` every ``interval`` s in a daemon thread, so that the busy shares of a window known
    only afterwards (a load run's steady window) can be read: :meth:`shares` uses the last reading at or
    before the window's start and the first at or after its end."""

    def __init__(self, interval: float = 1.0, clock=None, read=None) -> None:  # noqa: ANN001 - seams
        import threading
        import time

        self.interval = interval
        self._clock = clock or time.time
        self._read = read or cpu_ticks
        self._samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def sample(self) -> None:
        ticks = self._read()
        if ticks:
            self._samples.append((self._clock(), ticks))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def shares(self, t0: float, t1: float) -> dict[str, float] | None:
        before = [s for t, s in self._samples if t <= t0]
        after = [s for t, s in self._samples if t >= t1]
        if not before or not after:
            return None
        return busy_shares(before[-1], after[0])
