"""Self-hosting: the local stack and an ingest consumer into an embedded SQLite file, for ``simulate``
without a hub connection string.

Both are started through their public contracts (docs/architecture.md), as child processes:

- ``harness up --json --no-azurite --host 127.0.0.x`` (IoT Hub + Event Hubs emulators; its one JSON
  line gives the hub name, gateway, group key, CA file and the built-in endpoint's connection string);
- ``ingest --eventhub-connection-string … --sink sqlite:///…/events.db --checkpoint-dir …``.

Child processes rather than threads in this process: the SDK clients already use most of one core
(~1 ms CPU per message), so the emulators and the consumer get the other core instead of sharing the
GIL. Stopping sends SIGTERM (the consumer finishes its batch and checkpoints) and waits, then kills.
Each child runs in its own session (a signal to our process group does not reach it: we stop them in
order) and gets SIGTERM from the kernel if we die (``PR_SET_PDEATHSIG``), so ``kill -9`` of ``simulate``
leaves no stack or consumer behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from enginehub.harness.procutil import pdeathsig_preexec
from enginehub.simulator.net import free_loopback_host

LOG = logging.getLogger(__name__)

TABLE = "enginehub_events"
HARNESS = "import sys; from enginehub.harness.cli import main; sys.exit(main())"
INGEST = "import sys; from enginehub.ingest.cli import main; sys.exit(main())"


class SelfHostError(RuntimeError):
    """The local stack or the consumer could not start or died; the message is one sentence."""


@dataclass
class StackInfo:
    hostname: str
    gateway_host: str
    group_key: str
    ca_cert: str
    eventhub_connection_string: str
    raw: dict[str, object] = field(default_factory=dict)


def count_rows(db: Path, table: str = TABLE, run_id: str | None = None) -> int:
    """Rows in `table` of the SQLite file (0 while the file or table does not exist yet).

    With `run_id`, only the rows of that run: the consumer's identity key is ``mid:<message id>`` and
    our message ids start with ``<run_id>-``, so a reused --data-dir does not count older runs.
    """
    if not db.exists():
        return 0
    sql, args = f'SELECT count(*) FROM "{table}"', ()
    if run_id is not None:
        sql += " WHERE id >= ? AND id < ?"
        args = (f"mid:{run_id}-", f"mid:{run_id}.")  # '.' sorts right after '-'
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            return int(con.execute(sql, args).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


class SelfHost:
    """Start/stop the stack and the consumer; ``ingested()`` counts rows in the database."""

    def __init__(
        self, data_dir: Path | None = None, *, partitions: int = 4, log_dir: Path | None = None
    ) -> None:
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="enginehub-simulate-"))
        self.data_dir = data_dir.resolve()
        self.db = self.data_dir / "events.db"
        self.partitions = partitions
        self.log_dir = log_dir or self.data_dir
        self.harness: asyncio.subprocess.Process | None = None
        self.ingest: asyncio.subprocess.Process | None = None
        self.info: StackInfo | None = None

    @property
    def sink_url(self) -> str:
        return f"sqlite:///{self.db}"

    async def start(self, timeout: float = 60.0) -> StackInfo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host = free_loopback_host()
        args = ["up", "--json", "--no-azurite", "--host", host, "--eventhubs-port", "0"]
        args += ["--partitions", str(self.partitions), "--data-dir", str(self.data_dir / "stack")]
        self.harness = await self._spawn(HARNESS, args, "harness.log", stdout=True)
        line = await self._first_line(self.harness, timeout, "harness up")
        try:
            data = json.loads(line)
            self.info = StackInfo(
                hostname=data["iothub_hostname"],
                gateway_host=data.get("iothub_gateway_host") or host,
                group_key=data["device_group_key"],
                ca_cert=data["ca_cert"],
                eventhub_connection_string=data["iothub_eventhub_connection_string"],
                raw=data,
            )
        except (ValueError, KeyError, TypeError) as exc:
            await self.stop()
            raise SelfHostError(f"harness up printed an unexpected line ({exc}): {line[:200]!r}") from None
        ingest_args = [
            "--eventhub-connection-string", self.info.eventhub_connection_string,
            "--sink", self.sink_url,
            "--checkpoint-dir", str(self.data_dir / "checkpoints"),
        ]  # fmt: skip
        self.ingest = await self._spawn(INGEST, ingest_args, "ingest.log")
        await asyncio.sleep(0.2)
        if self.ingest.returncode is not None:
            await self.stop()
            raise SelfHostError(f"the ingest consumer exited at once; see {self.log_dir / 'ingest.log'}")
        return self.info

    async def _spawn(
        self, code: str, args: list[str], log_name: str, *, stdout: bool = False
    ) -> asyncio.subprocess.Process:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout else log,
                stderr=log,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
                preexec_fn=pdeathsig_preexec(signal.SIGTERM),  # and if we are killed, they stop
            )  # fmt: skip
        finally:
            log.close()

    async def _first_line(self, proc: asyncio.subprocess.Process, timeout: float, what: str) -> str:
        assert proc.stdout is not None
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop()
            raise SelfHostError(
                f"{what} printed nothing within {timeout:.0f} s; see {self.log_dir}"
            ) from None
        if not raw:
            await proc.wait()
            tail = _tail(self.log_dir / "harness.log")
            await self.stop()
            raise SelfHostError(f"{what} exited with code {proc.returncode}: {tail}")
        return raw.decode("utf-8", "replace").strip()

    def ingested(self, run_id: str | None = None) -> int:
        return count_rows(self.db, run_id=run_id)

    def alive(self) -> str | None:
        """None while both children run, else which one died."""
        for name, proc in (("harness", self.harness), ("ingest", self.ingest)):
            if proc is not None and proc.returncode is not None:
                return f"{name} exited with code {proc.returncode}; see {self.log_dir / (name + '.log')}"
        return None

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the consumer, then the stack; kill what does not exit within `timeout`."""
        for proc in (self.ingest, self.harness):
            if proc is None or proc.returncode is not None:
                continue
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                LOG.warning("child %d did not stop within %.0f s: killing it", proc.pid, timeout)
                proc.kill()
                await proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
