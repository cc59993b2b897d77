"""Failover: 3 ingest processes share a hub through Azurite checkpoints; one is killed with SIGKILL
mid-stream, then a second is stopped with SIGTERM. The partitions are re-owned within the bounds the
configured load-balancing interval and ownership expiry imply, and the table ends exactly complete."""

from __future__ import annotations

import time
import uuid

import pytest
from e2e_helpers import balanced

from enginehub.harness.testing.produce import StreamProducer, compare_table, expected_rows
from enginehub.harness.testing.sinks import count_rows, read_rows
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration

ROWS = 2400
RATE = 150.0  # events/s: the stream lasts ~16 s, long enough for both failovers
LB_INTERVAL = 1.0  # --load-balancing-interval (the SDK adds up to 20 % jitter)
EXPIRY = 4.0  # --ownership-expiry
SLACK = 3.0  # scheduling on a shared 2-core runner
# A crashed owner's partitions become claimable EXPIRY after its last renewal (<= EXPIRY after the kill);
# the survivors' next balancing cycle (<= LB_INTERVAL * 1.2) claims them.
CRASH_BOUND = EXPIRY + LB_INTERVAL * 1.2 + SLACK
# SIGTERM releases ownership (owner id ""): claimable at once, claimed at the next cycle; the node first
# finishes its batch in flight (batch wait 0.5 s).
GRACEFUL_BOUND = 0.5 + LB_INTERVAL * 1.2 + SLACK


def test_kill_one_then_stop_one_partitions_reowned_in_bounds_table_exact(
    eventhub, azurite, checkpoint_container, ingest_node, fd001_rows, sink_url: str
) -> None:
    rows = fd001_rows[:ROWS]
    run_id = f"fo{uuid.uuid4().hex[:6]}"
    sink = sink_url
    nodes = {
        name: ingest_node(
            name=name,
            owner_id=name,
            eventhub_connection_string=eventhub.connection_string,
            sink=sink,
            checkpoint_store=azurite.connection_string,
            checkpoint_container=checkpoint_container,
            load_balancing_interval=LB_INTERVAL,
            ownership_expiry=EXPIRY,
        )
        for name in ("node-a", "node-b", "node-c")
    }

    def owners() -> dict[str, str]:
        return azurite.ownership(checkpoint_container)

    def observed() -> str:
        logs = "\n".join(
            f"--- {n} ({'up' if p.running else p.returncode}):\n{p.log_tail(6)}" for n, p in nodes.items()
        )
        return (
            f"owners {owners()}, rows {count_rows(sink)}, {producer.describe() if producer else ''}\n{logs}"
        )

    producer = None
    live = set(nodes)
    wait_until(lambda: balanced(owners(), eventhub.partitions, live), 90, observed, interval=0.2)

    producer = StreamProducer(eventhub.connection_string, rows, run_id, rate=RATE).start()
    wait_until(lambda: count_rows(sink) >= ROWS // 5, 60, observed, interval=0.2)

    # crash: the node owning most partitions
    now = owners()
    victim = max(live, key=lambda n: sum(o == n for o in now.values()))
    victim_parts = sorted(p for p, o in now.items() if o == victim)
    t0 = time.monotonic()
    nodes[victim].kill()
    live.discard(victim)
    wait_until(
        lambda: balanced(owners(), eventhub.partitions, live), CRASH_BOUND + 30, observed, interval=0.1
    )
    crash_takeover = time.monotonic() - t0
    print(f"crash takeover of partitions {victim_parts}: {crash_takeover:.2f} s (bound {CRASH_BOUND:.1f} s)")

    # graceful stop of a second node while the stream still runs
    assert not producer.done, f"the stream ended before the graceful stop: {producer.describe()}"
    now = owners()
    leaver = sorted(live)[0]
    leaver_parts = sorted(p for p, o in now.items() if o == leaver)
    t1 = time.monotonic()
    assert nodes[leaver].terminate(timeout=30) == 0, nodes[leaver].log_tail()
    live.discard(leaver)
    wait_until(
        lambda: balanced(owners(), eventhub.partitions, live), GRACEFUL_BOUND + 30, observed, interval=0.1
    )
    graceful_takeover = time.monotonic() - t1
    print(f"graceful takeover of {leaver_parts}: {graceful_takeover:.2f} s (bound {GRACEFUL_BOUND:.1f} s)")

    producer.join(120)
    wait_until(lambda: count_rows(sink) >= ROWS, 60, observed, interval=0.2)
    problems = compare_table(read_rows(sink), expected_rows(rows, run_id))
    assert not problems, problems
    assert crash_takeover <= CRASH_BOUND, (
        f"crash takeover {crash_takeover:.2f} s > {CRASH_BOUND} s\n{observed()}"
    )
    assert graceful_takeover <= GRACEFUL_BOUND, (
        f"graceful takeover {graceful_takeover:.2f} s > {GRACEFUL_BOUND} s\n{observed()}"
    )
    (survivor,) = live
    assert nodes[survivor].running, nodes[survivor].log_tail()
