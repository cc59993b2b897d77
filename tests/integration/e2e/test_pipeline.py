"""The whole pipeline, every hop a real client library on loopback:

``simulate`` (azure-iot-device, MQTT/TLS) -> IoT Hub emulator -> Event Hubs emulator (built-in endpoint)
-> 2 ``ingest`` processes (azure-eventhub + BlobCheckpointStore on Azurite) -> SQLite, or CrateDB when one
is available (``cratedb`` marker, through the ``sink_url`` fixture of conftest.py). Every acknowledged
message is in the table exactly once, with values equal to the source C-MAPSS row (train_FD001: engine
u's cycle c)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from enginehub.harness.testing.produce import compare_table
from enginehub.harness.testing.sinks import read_rows
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration

UNITS = 4
RATE = 40.0  # messages/s in total
DURATION = 6.0  # seconds: ~240 messages


def test_fleet_to_table_every_message_exactly_once_with_source_values(
    iothub, azurite, checkpoint_container, ingest_node, fleet, fd001_rows, cmapss_dir: Path, sink_url: str
) -> None:
    run_id = f"e2e{uuid.uuid4().hex[:6]}"
    nodes = [
        ingest_node(
            name=f"node-{i}",
            owner_id=f"node-{i}",
            eventhub_connection_string=iothub.eventhub_connection_string,
            sink=sink_url,
            checkpoint_store=azurite.connection_string,
            checkpoint_container=checkpoint_container,
        )
        for i in range(2)
    ]
    run = fleet(UNITS, RATE, duration=DURATION, run_id=run_id, dataset="FD001", cmapss_dir=cmapss_dir)
    summary = run.result(timeout=DURATION + 90)
    assert summary["exit_code"] == 0, (summary, run.log_tail())
    assert summary["failed"] == 0 and summary["acked"] == summary["sent"] > DURATION * RATE / 2, summary

    def ours() -> dict[str, dict]:
        try:
            rows = read_rows(sink_url)
        except Exception:  # the table does not exist until the first batch
            return {}
        return {k: v for k, v in rows.items() if k.startswith(f"mid:{run_id}-")}

    def observed() -> str:
        logs = "\n".join(
            f"--- {n.name} ({'up' if n.running else n.returncode}):\n{n.log_tail(6)}" for n in nodes
        )
        owners = azurite.ownership(checkpoint_container)
        return f"{len(ours())} of {summary['acked']} rows; owners {owners}\n{logs}"

    table = wait_until(
        lambda: (t := ours()) and len(t) >= summary["acked"] and t, 60, observed, interval=0.25
    )

    # exactly once: each engine's cycles 1..n without a gap, as many rows as acknowledged messages
    by_unit: dict[int, list[int]] = {}
    for row in table.values():
        by_unit.setdefault(int(row["unit #"]), []).append(int(row["cycle #"]))
    assert sorted(by_unit) == list(range(1, UNITS + 1)), sorted(by_unit)
    for unit, cycles in by_unit.items():
        assert sorted(cycles) == list(range(1, len(cycles) + 1)), f"engine {unit}: gaps in {sorted(cycles)}"
    assert len(table) == summary["acked"], (len(table), summary)

    # values equal to the source rows, and the device identity carried through IoT Hub's system properties
    source = {(r.unit, r.cycle): r for r in fd001_rows}
    expected = {f"mid:{run_id}-{u}-{c}": source[(u, c)] for u, cs in by_unit.items() for c in cs}
    assert compare_table(table, expected) == []
    assert {row["device_id"] for row in table.values()} == {f"engine-{u:04d}" for u in range(1, UNITS + 1)}
    # both nodes took part: the 4 partitions are split between them
    owners = azurite.ownership(checkpoint_container)
    assert set(owners.values()) == {"node-0", "node-1"}, observed()
    assert all(n.running for n in nodes), observed()
