"""The local stack a load run needs, as child processes: the Event Hubs emulator and ``ingest`` nodes.

Each runs in its own process so it gets its own core (one Python process is one core at most).
``EmulatorProcess`` starts ``python -m enginehub.loadtests serve-eventhubs`` (an ``EventHubsEmulator`` on a
free loopback port; it prints one JSON line with the connection string once it accepts connections).
``IngestNode`` starts ``python -m enginehub.ingest`` with a file checkpoint store shared by all nodes.
Both end only their own child, by pid: ``kill9()`` (SIGKILL), ``terminate()`` (SIGTERM, graceful), and
``stop()`` (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------ emulator entry point (child)
async def serve_eventhubs(
    hub: str, partitions: int, consumer_groups: list[str], data_dir: str | None, port: int
) -> None:
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EventHubsEmulator

    config = EmulatorConfig.simple(hubs=[hub], partitions=partitions, consumer_groups=consumer_groups)
    emulator = EventHubsEmulator(config, data_dir=data_dir, port=port, http_port=None)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(  # noqa: T201 - the one JSON line the parent reads
        json.dumps(
            {
                "eventhubs_connection_string": emulator.connection_string,
                "eventhub_name": hub,
                "partitions": partitions,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        LOG.info("emulator stats: %s", dict(emulator.stats))
        await emulator.stop()


# ------------------------------------------------------------------------------------ child processes
class Child:
    """A child process whose output goes to a log file; ended only by its own pid."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self, stdout: int | None = None) -> Child:
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in _closed()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            text=True,
            env=self.env,
        )
        LOG.info("started %s (pid %s): %s", self.name, self.proc.pid, " ".join(self.argv[:4]))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.alive():
            self.terminate()
            if self.wait(timeout) is None:
                LOG.warning("%s (pid %s) did not stop in %.0f s: SIGKILL", self.name, self.pid, timeout)
                self.kill9()
        self._closed()
        return self.proc.returncode

    def _closed(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class EmulatorProcess(Child):
    def __init__(
        self,
        workdir: Path,
        hub: str = "eh1",
        partitions: int = 4,
        consumer_groups: tuple[str, ...] = ("baseline",),
        persist: bool = True,
    ) -> None:
        argv = [sys.executable, "-m", "enginehub.loadtests", "serve-eventhubs", "--hub", hub]
        argv += ["--partitions", str(partitions)]
        for group in consumer_groups:
            argv += ["--consumer-group", group]
        if persist:
            argv += ["--data-dir", str(workdir / "eventhubs-data")]
        super().__init__("eventhubs-emulator", argv, workdir / "emulator.log")
        self.info: dict[str, Any] = {}

    def start(self, stdout: int | None = None, timeout: float = 60.0) -> EmulatorProcess:
        super().start(stdout=subprocess.PIPE)
        assert self.proc is not None and self.proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(0.2):
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.info = json.loads(line)
                return self
            if not self.alive():
                break
        self.stop(5)
        raise RuntimeError(f"the Event Hubs emulator did not start: {self.log_tail()}")

    @property
    def connection_string(self) -> str:
        return str(self.info["eventhubs_connection_string"])

    @property
    def eventhub(self) -> str:
        return str(self.info["eventhub_name"])


@dataclass(frozen=True)
class IngestSettings:
    batch_size: int = 500
    batch_wait: float = 0.2
    prefetch: int = 2000
    load_balancing_interval: float = 1.5
    ownership_expiry: float = 5.0


class IngestNode(Child):
    def __init__(
        self,
        workdir: Path,
        owner_id: str,
        connection_string: str,
        eventhub: str,
        sink: str,
        checkpoint_dir: Path,
        settings: IngestSettings = IngestSettings(),
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "enginehub.ingest",
            "--eventhub-connection-string",
            connection_string,
            "--eventhub",
            eventhub,
            "--sink",
            sink,
            "--checkpoint-dir",
            str(checkpoint_dir),
            "--owner-id",
            owner_id,
            "--load-balancing-interval",
            str(settings.load_balancing_interval),
            "--ownership-expiry",
            str(settings.ownership_expiry),
            "--batch-size",
            str(settings.batch_size),
            "--batch-wait",
            str(settings.batch_wait),
            "--prefetch",
            str(settings.prefetch),
            "--log-interval",
            "5",
        ]
        super().__init__(f"ingest {owner_id}", argv, workdir / f"ingest-{owner_id}.log")
        self.owner_id = owner_id


# ----------------------------------------------------------------------------- checkpoint store reading
def read_ownership(checkpoint_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """partition id -> {owner_id, last_modified_time} from a FileCheckpointStore directory (one hub)."""
    out: dict[str, dict[str, Any]] = {}
    for path in glob.glob(os.path.join(os.fspath(checkpoint_dir), "*", "*", "*", "ownership", "*.json")):
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            continue  # being replaced right now; read again at the next poll
        pid = str(data.get("partition_id", Path(path).stem))
        out[pid] = data
    return out


def owners(checkpoint_dir: str | os.PathLike[str]) -> dict[str, str]:
    return {p: str(d.get("owner_id") or "") for p, d in read_ownership(checkpoint_dir).items()}


def wait_all_owned(
    checkpoint_dir: str | os.PathLike[str],
    partitions: int,
    live: set[str],
    timeout: float,
    balanced: bool = True,
) -> dict[str, str]:
    """Poll until every partition has an owner among ``live`` (and, if ``balanced``, every live node owns
    ``P // nodes`` or one more); raise with what was seen on timeout."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = owners(checkpoint_dir)
        if len(seen) >= partitions and all(o in live for o in seen.values()):
            counts = [sum(1 for o in seen.values() if o == node) for node in live]
            if not balanced or max(counts) - min(counts) <= 1:
                return seen
        time.sleep(0.1)
    raise TimeoutError(f"partitions not all owned by {sorted(live)} within {timeout} s; ownership {seen}")
