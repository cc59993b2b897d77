"""Child processes the fixtures start through the public CLIs: ``ingest`` nodes and ``simulate`` fleets.

Each child writes its output to a log file; ``log_tail()`` goes into every timeout message. Stopping is by
PID only: ``terminate()`` (SIGTERM, the graceful path the CLIs document) or ``kill()`` (SIGKILL, a crash).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def cpu_seconds(pid: int | None) -> float | None:
    """user+system CPU seconds of a live process (Linux /proc); None when unavailable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def child_pids(pid: int) -> list[int]:
    """Live child pids of a process (an ingest node's sink worker), from Linux /proc; [] elsewhere."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren, ... of a process (Linux /proc; [] elsewhere), parents first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = child_pids(todo.pop(0))
        out += kids
        todo += kids
    return out


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from Linux /proc; [] elsewhere."""
    out: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def running(pid: int) -> bool:
    """True while a process exists and has not exited (a zombie waiting to be reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_running(pids: Iterable[int]) -> None:
    """SIGKILL each of these pids that is still running (a test's clean-up of its own processes, by pid)."""
    for pid in pids:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class ChildProcess:
    """A started CLI child with its log file."""

    name: str
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL (a crash: no drain, no checkpoint, ownership left to expire)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait up to ``timeout``; AssertionError with the log when it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout:.0f} s of SIGTERM; log:\n"
                f"{self.log_tail()}"
            ) from None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) still running after {timeout:.0f} s; log:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 25) -> str:
        return _tail(self.log_path, lines)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None) -> ChildProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=log_dir
        )
    LOG.info("started %s (pid %d): %s", name, proc.pid, " ".join(_redact(cmd)))
    return ChildProcess(name, cmd, log_path, proc)


def _redact(cmd: list[str]) -> list[str]:
    return [("<secret>" if "SharedAccessKey=" in a or "AccountKey=" in a else a) for a in cmd]


# ------------------------------------------------------------------------------------------------- ingest
@dataclass
class IngestNode(ChildProcess):
    """One ``ingest`` consumer process; ``owner_id`` is its name in the checkpoint store."""

    owner_id: str = ""

    def claimed_partitions(self) -> list[str]:
        """Partitions this node logged as claimed (``partition N claimed by ...``), in order."""
        out = []
        for line in self.log_text().splitlines():
            if " claimed by " in line and "partition " in line:
                out.append(line.split("partition ", 1)[1].split()[0])
        return out


def ingest_command(
    eventhub_connection_string: str,
    sink: str,
    *,
    eventhub: str | None = None,
    consumer_group: str = "$Default",
    checkpoint_store: str | None = None,
    checkpoint_container: str | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    owner_id: str | None = None,
    load_balancing_interval: float | None = None,
    ownership_expiry: float | None = None,
    table: str | None = None,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The ``ingest`` command line (``python -m enginehub.ingest``) for these options."""
    cmd = [
        sys.executable,
        "-m",
        "enginehub.ingest",
        "--eventhub-connection-string",
        eventhub_connection_string,
    ]
    cmd += ["--sink", sink, "--consumer-group", consumer_group, "--log-interval", "2"]
    if eventhub:
        cmd += ["--eventhub", eventhub]
    if checkpoint_store:
        cmd += ["--checkpoint-store", checkpoint_store, "--checkpoint-container", str(checkpoint_container)]
    if checkpoint_dir:
        cmd += ["--checkpoint-dir", str(checkpoint_dir)]
    if owner_id:
        cmd += ["--owner-id", owner_id]
    if load_balancing_interval is not None:
        cmd += ["--load-balancing-interval", str(load_balancing_interval)]
    if ownership_expiry is not None:
        cmd += ["--ownership-expiry", str(ownership_expiry)]
    if table:
        cmd += ["--table", table]
    return cmd + list(extra)


def start_ingest_node(log_dir: Path, name: str | None = None, **options: Any) -> IngestNode:
    owner_id = options.pop("owner_id", None) or f"node-{uuid.uuid4().hex[:8]}"
    name = name or owner_id
    cmd = ingest_command(owner_id=owner_id, **options)
    child = spawn(name, cmd, log_dir)
    return IngestNode(child.name, child.cmd, child.log_path, child.proc, child.started_at, owner_id=owner_id)


# -------------------------------------------------------------------------------------------------- fleet
@dataclass
class FleetRun(ChildProcess):
    """One ``simulate --json`` run; ``result()`` waits for it and returns the JSON summary."""

    stdout_path: Path | None = None

    def result(self, timeout: float) -> dict[str, Any]:
        code = self.wait(timeout)
        assert self.stdout_path is not None
        lines = [ln for ln in self.stdout_path.read_text(errors="replace").splitlines() if ln.startswith("{")]
        if not lines:
            raise AssertionError(
                f"simulate exited {code} without a JSON summary; stdout:\n{_tail(self.stdout_path)}\n"
                f"stderr:\n{self.log_tail()}"
            )
        summary = json.loads(lines[-1])
        summary["exit_code"] = code
        return summary


def simulate_command(
    units: int,
    rate: float,
    *,
    duration: float | None = None,
    iothub_connection_string: str | None = None,
    group_key: str | None = None,
    gateway_host: str | None = None,
    ca_cert: str | None = None,
    dataset: str | None = None,
    cmapss_dir: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    stop_at_end: bool = False,
    commands: bool = False,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    cmd = [sys.executable, "-m", "enginehub.simulator", "--units", str(units), "--rate", str(rate), "--json"]
    cmd += ["--no-progress"]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    if iothub_connection_string:
        cmd += ["--iothub-connection-string", iothub_connection_string]
    if group_key:
        cmd += ["--group-key", group_key]
    if gateway_host:
        cmd += ["--gateway-host", gateway_host]
    if ca_cert:
        cmd += ["--ca-cert", str(ca_cert)]
    if dataset:
        cmd += ["--dataset", dataset]
    if cmapss_dir:
        cmd += ["--cmapss-dir", str(cmapss_dir)]
    if run_id:
        cmd += ["--run-id", run_id]
    if stop_at_end:
        cmd += ["--stop-at-end"]
    if commands:
        cmd += ["--commands"]
    return cmd + list(extra)


def start_fleet(log_dir: Path, name: str, **options: Any) -> FleetRun:
    cmd = simulate_command(**options)
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, log_path = log_dir / f"{name}.out", log_dir / f"{name}.log"
    with open(stdout_path, "wb") as out, open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=log_dir)
    LOG.info("started fleet %s (pid %d): %s", name, proc.pid, " ".join(_redact(cmd)))
    return FleetRun(name, cmd, log_path, proc, stdout_path=stdout_path)
