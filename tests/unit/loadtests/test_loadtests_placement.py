"""CPU placement of a load run: the plan (pure) and pinning a real process's threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enginehub.loadtests.placement import Placement, available_cpus, pin, plan

linux_affinity = pytest.mark.skipif(
    available_cpus() is None or not os.path.isdir("/proc/self/task"),
    reason="CPU affinity needs Linux sched_setaffinity and /proc",
)


def test_one_cpu_per_node_and_the_rest_for_everything_else():
    p = plan({0, 1, 2, 3}, 2)
    assert p == Placement((frozenset({0}), frozenset({1})), frozenset({2, 3}))
    assert p.describe() == {"nodes": [[0], [1]], "others": [2, 3]}
    assert p.node(1) == frozenset({1})


@pytest.mark.parametrize(("cpus", "nodes"), [({0, 1}, 2), ({0, 1}, 3), ({5}, 1), (None, 1), ({0, 1}, 0)])
def test_no_placement_without_a_cpu_left_over_for_the_rest(cpus, nodes):
    assert plan(cpus, nodes) is None


@given(st.sets(st.integers(0, 255), min_size=1, max_size=64), st.integers(1, 16))
def test_the_sets_are_disjoint_single_cpus_and_cover_the_machine(cpus, nodes):
    p = plan(cpus, nodes)
    if len(cpus) <= nodes:
        assert p is None
        return
    assert p is not None and len(p.nodes) == nodes
    assert all(len(s) == 1 for s in p.nodes)
    taken = [c for s in p.nodes for c in s]
    assert len(set(taken)) == nodes  # no two nodes share a CPU
    assert p.others and not p.others & set(taken)
    assert set(taken) | p.others == cpus


@linux_affinity
def test_pin_moves_every_thread_of_a_running_process():
    cpus = sorted(available_cpus() or ())
    target = {cpus[-1]}
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    code += "print('up', flush=True)\ntime.sleep(30)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"  # its thread runs
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) == 2
        if len(cpus) > 1:  # starts on every CPU: the pin must change something
            assert all(os.sched_getaffinity(t) == set(cpus) for t in tids)
        assert pin(proc.pid, target)
        assert all(os.sched_getaffinity(t) == target for t in tids)
    finally:
        proc.kill()
        proc.wait()


@linux_affinity
def test_pin_of_a_process_that_is_gone_says_so_instead_of_raising(caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert pin(proc.pid, sorted(available_cpus() or ())[:1]) is False
    assert "gone" in caplog.text
