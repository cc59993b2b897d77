"""``simulate`` (self-hosted, two worker processes) stopped the ways supervisors stop it (issue 17):
SIGTERM/SIGINT to its whole process group must end as the documented Ctrl-C does (drain, every message
acked and ingested, exit 0, nothing left running), and ``kill -9`` must leave no worker, stack or
consumer behind (they die with it: ``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enginehub.harness.testing.processes import descendants, group_members, kill_running, running
from enginehub.harness.testing.waiting import wait_until
from enginehub.simulator.selfhost import count_rows

pytest.importorskip("enginehub.harness.up", reason="harness up (the local stack) has not landed")

pytestmark = pytest.mark.integration


class Simulate:
    """``simulate`` self-hosted as the leader of a new session (pgid = pid); stdout/stderr to files."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.out, self.err = data.with_suffix(".out"), data.with_suffix(".err")
        cmd = [sys.executable, "-m", "enginehub.simulator", "--units", "4", "--rate", "40", "--duration",
               "120", "--workers", "2", "--dataset", "synthetic", "--data-dir", str(data), "--json",
               "--no-progress"]  # fmt: skip
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid = self.proc.pid
        self.seen: set[int] = set()  # every descendant observed, to check (and clean up) by pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")[-2000:] if self.err.exists() else ""

    def wait_running(self) -> None:
        """Until rows arrive and every process is up: 2 workers + the stack + the consumer + its worker."""
        db = self.data / "events.db"

        def ready() -> bool:
            self.seen.update(descendants(self.pid))
            return count_rows(db) >= 20 and len(descendants(self.pid)) >= 5

        seen = lambda: f"{count_rows(db)} rows, children {descendants(self.pid)}\n{self.stderr()}"  # noqa: E731
        wait_until(ready, 90, seen)
        self.seen.update(descendants(self.pid))

    def alive(self) -> list[int]:
        return [p for p in self.seen if running(p)]

    def cleanup(self) -> None:
        kill_running([self.pid, *self.alive()])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[Simulate]:
    sim = Simulate(tmp_path / "run")
    yield sim
    sim.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_a_signal_to_the_process_group_drains_ingests_everything_and_exits_0(
    simulate: Simulate, sig: int
) -> None:
    simulate.wait_running()
    os.killpg(simulate.pid, sig)
    code = simulate.proc.wait(120)
    assert code == 0, simulate.stderr()
    s = json.loads(simulate.out.read_text().strip().splitlines()[-1])
    assert s["interrupted"] is True and s["failed"] == 0, s
    assert s["ingested"] == s["acked"] == s["sent"] >= 20, s
    assert "worker" not in (s.get("error") or ""), s
    wait_until(lambda: not simulate.alive(), 10, lambda: f"still running: {simulate.alive()}")
    assert not group_members(simulate.pid)


def test_kill_9_leaves_no_worker_stack_or_consumer_behind(simulate: Simulate) -> None:
    simulate.wait_running()
    os.kill(simulate.pid, signal.SIGKILL)
    simulate.proc.wait(10)
    wait_until(
        lambda: not simulate.alive(),
        15,
        lambda: (
            "still running: "
            + ", ".join(f"{p} {Path(f'/proc/{p}/cmdline').read_bytes()[:120]!r}" for p in simulate.alive())
        ),
    )
