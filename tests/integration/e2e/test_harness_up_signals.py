"""``harness up`` (with Azurite, its child process) stopped the ways supervisors stop it (issue 17):
SIGTERM/SIGINT to its pid or its whole process group -> exit 0 with Azurite stopped and nothing left;
``kill -9`` -> Azurite (in a session of its own, so no group signal reaches it) dies with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enginehub.harness.providers.base import azurite_missing
from enginehub.harness.testing.processes import descendants, group_members, kill_running, running
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def harness_up(
    tmp_path: Path,
) -> Iterator[Callable[[], tuple[subprocess.Popen[str], dict[str, Any], list[int]]]]:
    missing = azurite_missing()
    if missing:
        pytest.skip(missing)
    from enginehub.harness.iothub.testing import free_loopback_ip

    started: list[tuple[subprocess.Popen[str], list[int]]] = []
    err_path = tmp_path / "up.err"

    def start() -> tuple[subprocess.Popen[str], dict[str, Any], list[int]]:
        cmd = [sys.executable, "-m", "enginehub.harness", "up", "--json", "--eventhubs-port", "0",
               "--host", free_loopback_ip()]  # fmt: skip
        with open(err_path, "ab") as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                start_new_session=True,
            )  # fmt: skip
        kids: list[int] = []
        started.append((proc, kids))
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(90)
        assert box and box[0].strip(), f"no JSON line (exit {proc.poll()}): {err_path.read_text()[-2000:]}"
        info = json.loads(box[0])
        assert "storage_connection_string" in info, "Azurite did not start"
        kids += descendants(proc.pid)
        assert kids, "no Azurite child process"
        return proc, info, kids

    yield start
    for proc, kids in started:  # only our own processes, by pid
        kill_running([proc.pid, *kids])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.stdout.close()


@pytest.mark.parametrize(
    ("sig", "target"),
    [(signal.SIGTERM, "group"), (signal.SIGINT, "group"), (signal.SIGTERM, "pid")],
    ids=["term-group", "int-group", "term-pid"],
)
def test_a_signal_to_pid_or_group_stops_azurite_and_exits_0(harness_up, sig: int, target: str) -> None:
    proc, _, kids = harness_up()
    if target == "group":
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    assert proc.wait(30) == 0
    wait_until(lambda: not any(running(p) for p in kids), 10, lambda: [p for p in kids if running(p)])
    assert not group_members(proc.pid)


def test_kill_9_of_harness_up_leaves_no_azurite(harness_up) -> None:
    proc, _, kids = harness_up()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_until(
        lambda: not any(running(p) for p in kids),
        10,
        lambda: f"still running: {[p for p in kids if running(p)]}",
    )
