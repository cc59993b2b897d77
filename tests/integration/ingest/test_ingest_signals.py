"""`ingest` stopped the ways supervisors stop it (issue 17): SIGTERM/SIGINT to its pid alone and to its
whole process group (systemd's KillMode=control-group, ``timeout``, a shell's job control), and ``kill -9``.

Real processes: the Event Hubs emulator, the SDK producer, an ``ingest`` node in a session of its own (so
that its group can be signalled with ``os.killpg``) with its sink worker, SQLite and the file checkpoint
store. A graceful stop finishes the batches in flight, checkpoints, releases ownership and exits 0 with no
process of its group left; a second node then finishes the job: exactly N rows, every partition without a
gap and checkpointed at its last sequence number. ``kill -9`` of the node leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from enginehub.harness.testing.processes import child_pids, group_members, kill_running, running
from enginehub.harness.testing.waiting import wait_until
from enginehub.ingest.checkpoint_file import FileCheckpointStore
from enginehub.ingest.testing import (
    PARTITIONS,
    consumer_args,
    list_checkpoints,
    list_ownership,
    message_id,
    namespace,
    produce,
    row_count,
    seed_line,
    sqlite_query,
)

pytestmark = pytest.mark.integration

N = 2000


class Node:
    """``python -m enginehub.ingest`` as the leader of a new session (pgid = pid)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "enginehub.ingest", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def signal(self, sig: int, target: str) -> None:
        if target == "group":
            os.killpg(self.pid, sig)
        else:
            os.kill(self.pid, sig)

    def cleanup(self) -> None:
        """SIGKILL whatever of our own is still running (by pid), and reap the node."""
        kill_running([*child_pids(self.pid), self.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    started: list[Node] = []

    def start(args: list[str]) -> Node:
        node = Node(args, tmp_path / f"ingest-{len(started)}.log")
        started.append(node)
        return node

    yield start
    for node in started:
        node.cleanup()


def _events(n: int) -> list[tuple[str, str]]:
    return [(seed_line(1 + i % 10, 1 + i // 10), message_id(1 + i % 10, 1 + i // 10)) for i in range(n)]


def _per_partition(db: Path) -> dict[str, tuple[int, int]]:
    """partition id -> (rows, highest sequence number) in the sink."""
    rows = sqlite_query(
        db,
        "SELECT json_extract(partition_context, '$.partition_id'), count(*), "
        "max(json_extract(event_metadata, '$.sequence_number')) FROM enginehub_events GROUP BY 1",
    )
    return {str(pid): (count, top) for pid, count, top in rows}


def _checkpointed(store: Any, ns: str) -> dict[str, int]:
    return {p: c["sequence_number"] for p, c in list_checkpoints(store, ns).items()}


def _assert_graceful(node: Node, store: Any, ns: str, db: Path) -> None:
    code = node.proc.wait(45)
    assert code == 0, f"exit code {code}; log:\n{node.tail()}"
    left = wait_until(lambda: not group_members(node.pid) or None, 5, lambda: group_members(node.pid))
    assert left, "process group still has members"
    # every batch written was checkpointed, the one in flight at the signal included
    written = {p: top for p, (_, top) in _per_partition(db).items()}
    assert _checkpointed(store, ns) == written, node.tail()
    owners = {o["partition_id"]: o["owner_id"] for o in list_ownership(store, ns)}
    assert owners and not any(owners.values()), owners  # released


@pytest.mark.parametrize(
    ("sig", "target"),
    [
        (signal.SIGTERM, "group"),  # issue 17: the sink worker died of it, the node exited 1
        (signal.SIGINT, "group"),
        (signal.SIGTERM, "pid"),
        (signal.SIGINT, "pid"),
    ],
    ids=["term-group", "int-group", "term-pid", "int-pid"],
)
def test_a_graceful_stop_by_pid_or_group_exits_0_checkpointed_and_a_successor_ends_with_exactly_n(
    emulator, nodes, tmp_path: Path, sig: int, target: str
) -> None:
    produce(emulator.connection_string, _events(N))
    db, ckpt = tmp_path / "ingest.db", tmp_path / "ckpt"
    args = consumer_args(emulator, db, "--checkpoint-dir", str(ckpt), "--batch-size", "50")
    store, ns = FileCheckpointStore(ckpt), namespace(emulator)
    node = nodes(args)
    wait_until(lambda: row_count(db) > 0, 60, lambda: f"{row_count(db)} rows; log:\n{node.tail()}")
    assert len(child_pids(node.pid)) == 1, "the sink worker is not running"
    node.signal(sig, target)  # while the node is ingesting (a batch in flight, most likely)
    _assert_graceful(node, store, ns, db)
    assert "sink worker exited" not in node.log.read_text()

    successor = nodes(args)
    wait_until(lambda: row_count(db) >= N, 60, lambda: f"{row_count(db)} rows; log:\n{successor.tail()}")
    successor.signal(sig, target)
    _assert_graceful(successor, store, ns, db)
    assert sqlite_query(db, "SELECT count(*), count(DISTINCT id) FROM enginehub_events") == [(N, N)]
    parts = _per_partition(db)
    assert len(parts) == PARTITIONS and sum(c for c, _ in parts.values()) == N
    assert all(top == count - 1 for count, top in parts.values()), parts  # no gap, none doubled
    assert _checkpointed(store, ns) == {p: count - 1 for p, (count, _) in parts.items()}


def test_kill_9_of_the_node_leaves_no_sink_worker(emulator, nodes, tmp_path: Path) -> None:
    produce(emulator.connection_string, _events(200))
    db = tmp_path / "ingest.db"
    node = nodes(consumer_args(emulator, db, "--checkpoint-dir", str(tmp_path / "ckpt")))
    wait_until(lambda: row_count(db) > 0, 60, lambda: f"{row_count(db)} rows; log:\n{node.tail()}")
    (worker,) = child_pids(node.pid)
    os.kill(node.pid, signal.SIGKILL)
    node.proc.wait(10)
    wait_until(lambda: not running(worker), 5, lambda: f"sink worker {worker} still running")
    assert not group_members(node.pid)
