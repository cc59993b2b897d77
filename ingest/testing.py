"""Helpers for tests and benchmarks: events with known ids, C-MAPSS payloads, the real SDK producer,
`ingest` consumer processes, polling with a deadline, and read-back from SQLite / checkpoint stores."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from enginehub.ingest.model import EventRecord
from enginehub.ingest.payloads import JSON_FIELDS

LOG = logging.getLogger(__name__)


def seed_values(unit: int, cycle: int) -> list[float]:
    """26 deterministic values: unit, cycle, 3 settings, 21 sensors."""
    settings = [round(0.0001 * unit, 4), round(-0.0002 * cycle, 4), 100.0]
    sensors = [round(500.0 + s + unit * 0.01 + cycle * 0.001, 4) for s in range(1, 22)]
    return [float(unit), float(cycle), *settings, *sensors]


def seed_line(unit: int, cycle: int) -> str:
    values = seed_values(unit, cycle)
    head = f"{unit} {cycle} "
    return head + " ".join(repr(v) for v in values[2:]) + " "


def json_payload(unit: int, cycle: int) -> str:
    values = seed_values(unit, cycle)
    obj: dict[str, Any] = dict(zip(JSON_FIELDS, values, strict=True))
    obj["unit"], obj["cycle"] = unit, cycle
    return json.dumps(obj)


def message_id(unit: int, cycle: int) -> str:
    return f"engine-{unit}-cycle-{cycle}"


def make_event(
    seq: int,
    body: bytes | str | None = None,
    *,
    partition_id: str = "0",
    message_id: str | None = None,
    device_id: str | None = "engine-1",
    eventhub: str = "eh1",
    consumer_group: str = "$Default",
    properties: dict[str, Any] | None = None,
) -> EventRecord:
    if body is None:
        body = seed_line(1, seq + 1)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return EventRecord(
        eventhub=eventhub,
        consumer_group=consumer_group,
        partition_id=partition_id,
        sequence_number=seq,
        offset=str(seq * 100),
        enqueued_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seq),
        body=body,
        message_id=message_id,
        device_id=device_id,
        properties=dict(properties or {}),
    )


# -- end-to-end helpers (real SDK, real processes) -----------------------------------------------------------
EVENTHUB = "eh1"
PARTITIONS = 4


def namespace(emu: Any) -> str:
    """The SDK's fully_qualified_namespace for this emulator (host:port, as in checkpoint blob names)."""
    return f"{emu.host}:{emu.port}"


def produce(
    connection_string: str, items: Sequence[tuple[bytes | str, str | None]], batch: int = 200
) -> None:
    """Send (body, message id) pairs with the real SDK producer (no partition key: spread over partitions)."""
    from azure.eventhub import EventData, EventHubProducerClient

    with EventHubProducerClient.from_connection_string(
        connection_string, eventhub_name=EVENTHUB, retry_total=0
    ) as producer:
        for start in range(0, len(items), batch):
            data = producer.create_batch()
            for body, mid in items[start : start + batch]:
                event = EventData(body)
                if mid is not None:
                    event.message_id = mid
                data.add(event)
            producer.send_batch(data)


def poll(
    condition: Callable[[], bool], timeout: float, describe: Callable[[], str], interval: float = 0.2
) -> float:
    """Wait until ``condition()``; return the seconds it took; on timeout fail with what was observed."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not reached within {timeout:.0f} s; observed: {describe()}")
        time.sleep(interval)


def sqlite_query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # table not created yet
            return []


def row_count(path: Path, table: str = "enginehub_events") -> int:
    got = sqlite_query(path, f"SELECT count(*) FROM {table}")
    return got[0][0] if got else 0


class ConsumerProcess:
    """One `python -m enginehub.ingest` process; output goes to a log file shown on failure."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in wait()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "enginehub.ingest", *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()


def consumer_args(emu: Any, db: Path, *extra: str) -> list[str]:
    return [
        "--eventhub-connection-string",
        emu.connection_string,
        "--eventhub",
        EVENTHUB,
        "--sink",
        f"sqlite:///{db}",
        "--log-interval",
        "2",
        *extra,
    ]


async def _with_store(store: Any, fn: Callable[[Any], Any]) -> Any:
    """``store`` is a checkpoint store, or a zero-argument factory of one (needed for the blob store, whose
    HTTP session is bound to the event loop that first used it: one fresh store per ``asyncio.run``)."""
    if callable(store) and not hasattr(store, "list_ownership"):
        store = store()
        if hasattr(store, "__aenter__"):
            async with store:
                return await fn(store)
    return await fn(store)


def list_ownership(store: Any, ns: str) -> list[dict[str, Any]]:
    async def go(s: Any) -> list[dict[str, Any]]:
        return list(await s.list_ownership(ns, EVENTHUB, "$Default"))

    return asyncio.run(_with_store(store, go))


def list_checkpoints(store: Any, ns: str) -> dict[str, dict[str, Any]]:
    async def go(s: Any) -> dict[str, dict[str, Any]]:
        return {c["partition_id"]: c for c in await s.list_checkpoints(ns, EVENTHUB, "$Default")}

    return asyncio.run(_with_store(store, go))


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make a file unwritable for everyone, root included: ``chattr +i`` when we are root (chmod does not
    stop root), else ``chmod 0444``; RuntimeError when neither is possible."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            raise RuntimeError("running as root without chattr: cannot make a file unwritable for root")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"chattr +i not permitted here ({done.stderr.strip()})")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
