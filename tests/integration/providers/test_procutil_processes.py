"""enginehub.harness.procutil with real processes: a child started with the preexec hook (any program: here
``sleep``) dies with the parent that started it, a Python child that finds its parent gone at start-up
exits at once, and a child started with the stop signals blocked does not die of a SIGTERM sent while it
is starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from enginehub.harness.testing.processes import kill_running, running
from enginehub.harness.testing.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only"),
]

PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys
    from enginehub.harness.procutil import pdeathsig_preexec
    hook = pdeathsig_preexec(signal.SIGTERM) if sys.argv[1] == "hook" else None
    child = subprocess.Popen(["sleep", "120"], preexec_fn=hook, start_new_session=True)
    print(child.pid, flush=True)
    signal.pause()
    """
)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    mine: list[int] = []
    yield mine
    kill_running(mine)  # our own processes only, by pid


@pytest.mark.parametrize("hook", ["hook", "none"])
def test_a_child_started_with_the_hook_dies_with_its_parent(pids: list[int], hook: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, hook], stdout=subprocess.PIPE, text=True)
    pids.append(parent.pid)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    pids.append(child)
    assert running(child)
    parent.kill()
    parent.wait(10)
    parent.stdout.close()
    if hook == "hook":
        wait_until(lambda: not running(child), 5, lambda: f"sleep {child} still running")
    else:  # the control: without the hook the orphan stays (so the test above can fail)
        wait_until(lambda: running(child), 1, lambda: "the orphan died without the hook")
        os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_gone_already_exits_at_once() -> None:
    code = "import os; from enginehub.harness.procutil import die_with_parent; "
    code += "die_with_parent(9, os.getpid()); print('alive')"
    # our own pid is never our parent's: as if the parent had died before the request
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "alive" not in done.stdout
    code = "import os; from enginehub.harness.procutil import die_with_parent; "
    code += "print(die_with_parent(9, os.getppid()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "True"


def test_a_sigterm_while_the_child_starts_waits_for_its_handlers() -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys
        os.kill(os.getpid(), signal.SIGTERM)  # a group SIGTERM before the child's handlers exist
        from enginehub.harness.procutil import ignore_stop_signals
        ignore_stop_signals()
        print("survived", flush=True)
        """
    )
    from enginehub.harness.procutil import stop_signals_blocked

    with stop_signals_blocked():
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and out.strip() == "survived"
    unblocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert unblocked.returncode == -signal.SIGTERM  # the control: without the block it dies of it
