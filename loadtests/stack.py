"""The local stack a load run needs, as child processes (each gets its own core): the Event Hubs emulator
(``harness.providers.eventhubs.EventHubsProcess``) and ``ingest`` nodes (``harness.testing.processes``),
plus reading partition ownership from the file checkpoint store the nodes share.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginehub.harness.providers.eventhubs import EventHubsProcess
from enginehub.harness.testing.processes import IngestNode, start_ingest_node
from enginehub.ingest.eventloop import DEFAULT_LOOP

LOG = logging.getLogger(__name__)


def start_emulator(
    workdir: Path, hub: str = "eh1", partitions: int = 4, consumer_groups: tuple[str, ...] = ("baseline",)
) -> EventHubsProcess:
    """Our emulator in a child process, persisting to ``workdir/eventhubs-data`` (the ``harness`` default)."""
    emulator = EventHubsProcess(
        data_dir=workdir / "eventhubs-data",
        hubs=(hub,),
        partitions=partitions,
        consumer_groups=consumer_groups,
    )
    emulator.start()
    return emulator


class HarnessUp:
    """``harness up --json --no-azurite`` as a child (Event Hubs + IoT Hub emulators) on a free 127.x.y.z.

    ``start()`` returns its JSON line (docs/architecture.md keys); ``stop()`` sends SIGTERM to that pid and
    waits (SIGKILL after ``timeout``)."""

    def __init__(self, workdir: Path, partitions: int = 4, startup_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.partitions = partitions
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.log_path = workdir / "harness-up.log"

    def start(self) -> dict[str, Any]:
        from enginehub.harness.iothub.testing import free_loopback_ip

        host = free_loopback_ip()
        cmd = [sys.executable, "-m", "enginehub.harness", "up", "--json", "--no-azurite", "--host", host]
        cmd += ["--eventhubs-port", "0", "--partitions", str(self.partitions)]
        cmd += ["--data-dir", str(self.workdir / "stack-data")]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
            )
        box: list[str] = []
        assert self.proc.stdout is not None
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.startup_timeout)
        if not box or not box[0].startswith("{"):
            self.stop(5)
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("harness up did not report ready:\n" + "\n".join(tail))
        self.info = json.loads(box[0])
        return self.info

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class IngestSettings:
    batch_size: int = 500
    batch_wait: float = 0.2
    prefetch: int = 2000
    load_balancing_interval: float = 1.5
    ownership_expiry: float = 5.0
    #: where a partition without checkpoint starts (``ingest --starting-position``)
    starting_position: str = "earliest"
    #: ``ingest --event-loop`` (the SDK baseline runs on the same loop)
    event_loop: str = DEFAULT_LOOP
    #: ``ingest --lag-interval`` (0: the SDK's per-event runtime metric; the baseline receives alike)
    lag_interval: float = 0.0


def start_node(
    workdir: Path,
    owner_id: str,
    connection_string: str,
    eventhub: str,
    sink: str,
    checkpoint_dir: Path,
    settings: IngestSettings = IngestSettings(),
) -> IngestNode:
    """One ``ingest`` process (public CLI) sharing ``checkpoint_dir`` with the others."""
    return start_ingest_node(
        workdir,
        name=f"ingest-{owner_id}",
        eventhub_connection_string=connection_string,
        sink=sink,
        eventhub=eventhub,
        checkpoint_dir=checkpoint_dir,
        owner_id=owner_id,
        load_balancing_interval=settings.load_balancing_interval,
        ownership_expiry=settings.ownership_expiry,
        extra=[
            "--batch-size",
            str(settings.batch_size),
            "--batch-wait",
            str(settings.batch_wait),
            "--prefetch",
            str(settings.prefetch),
            "--starting-position",
            settings.starting_position,
            "--event-loop",
            settings.event_loop,
            "--lag-interval",
            str(settings.lag_interval),
        ],
    )


def stop_node(node: IngestNode, timeout: float = 30.0) -> int | None:
    """SIGTERM (graceful) and wait; SIGKILL after ``timeout``. Returns the exit code."""
    if not node.running:
        return node.returncode
    try:
        return node.terminate(timeout)
    except AssertionError as exc:
        LOG.warning("%s", exc)
        return node.returncode


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
