"""kill -9 a process while it appends to a data dir; reopen and check that nothing acked is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore

pytestmark = pytest.mark.integration

BATCH = 5
PARTITIONS = 2

# The child appends batches forever (bounded) and prints one line per batch once append() returned.
CHILD = r"""
import json, sys
from pathlib import Path
from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore

store = EventHubsStore(EmulatorConfig.simple(partitions=%(partitions)d, policies={"p": "k"}),
                       data_dir=Path(sys.argv[1]), )
hub = store.hub("eh1")
for b in range(200_000):
    pid = str(b %% %(partitions)d)
    items = [(("batch-%%d-event-%%d;" %% (b, i)).encode() * (1 + b %% 7), "key-%%d" %% i if i %% 2 else None)
             for i in range(%(batch)d)]
    events = hub.partitions[pid].append(items)
    print(json.dumps([pid, b, events[0].sequence_number, events[0].offset, events[-1].offset]), flush=True)
""" % {"partitions": PARTITIONS, "batch": BATCH}  # noqa: UP031


def expected_payload(b: int, i: int) -> bytes:
    return (f"batch-{b}-event-{i};").encode() * (1 + b % 7)


def test_kill_9_while_appending_loses_nothing_acked(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[list] = []
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 2000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(json.loads(line))
        if len(acked) < 2000:
            stderr = proc.stderr.read() if proc.poll() is not None else "(still running)"
            pytest.fail(f"child acked only {len(acked)} batches in 60 s; stderr: {stderr}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Acks still in the pipe were printed after append() returned: they count too.
        for line in proc.stdout.read().splitlines():
            try:
                acked.append(json.loads(line))
            except ValueError:
                pass  # a line cut by the kill
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    store = EventHubsStore(
        EmulatorConfig.simple(partitions=PARTITIONS, policies={"p": "k"}), data_dir=data_dir
    )
    try:
        hub = store.hub("eh1")
        for pid in hub.partition_ids:
            p = hub.partitions[pid]
            # Whole batches only: the child was killed between (or during) writes.
            assert (p.last_sequence_number + 1) % BATCH == 0
            events = []
            seq = 0
            while True:
                page = p.read(seq, 1000)
                if not page:
                    break
                events.extend(page)
                seq = page[-1].sequence_number + 1
            assert [e.sequence_number for e in events] == list(range(p.last_sequence_number + 1))
            by_seq = {e.sequence_number: e for e in events}
            mine = [a for a in acked if a[0] == pid]
            for _, b, first_seq, first_offset, last_offset in mine:
                assert by_seq[first_seq].offset == first_offset
                assert by_seq[first_seq + BATCH - 1].offset == last_offset
                for i in range(BATCH):
                    e = by_seq[first_seq + i]
                    assert e.payload == expected_payload(b, i), (pid, b, i)
                    assert e.partition_key == (f"key-{i}" if i % 2 else None)
            # At most one batch past the last ack (appended, killed before the print reached us).
            assert len(events) <= (len(mine) + 1) * BATCH
        # The reopened store keeps appending right after the last stored batch.
        p0 = hub.partitions["0"]
        nxt = p0.append([(b"after-restart", None)])[0]
        assert nxt.sequence_number == p0.last_sequence_number
        assert nxt.offset > max(a[4] for a in acked if a[0] == "0")
    finally:
        store.close()
