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

# (units, messages/s in total, seconds): the default run sends ~240 messages; the slow one ~6 000
SIZES = [
    pytest.param((4, 40.0, 6.0), id="4x40"),
    pytest.param((20, 200.0, 30.0), id="20x200", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("size", SIZES)
def test_fleet_to_table_every_message_exactly_once_with_source_values(
    size: tuple[int, float, float],
    iothub,
    azurite,
    checkpoint_container,
    ingest_node,
    fleet,
    fd001_rows,
    cmapss_dir: Path,
    sink_url: str,
) -> None:
    units, rate, duration = size
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
    run = fleet(units, rate, duration=duration, run_id=run_id, dataset="FD001", cmapss_dir=cmapss_dir)
    summary = run.result(timeout=duration + 90)
    assert summary["exit_code"] == 0, (summary, run.log_tail())
    assert summary["failed"] == 0 and summary["acked"] == summary["sent"] > duration * rate / 2, summary

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

    print(f"pipeline {units}x{rate:g}/s: {summary['acked']} acked at {summary['rate_achieved']:.1f} msg/s")
    # exactly once: each engine's cycles 1..n without a gap, as many rows as acknowledged messages.
    # Device d (1-based) replays engine d, then (when its engine's run ends) engine d + units, ...
    by_unit: dict[int, list[int]] = {}
    for row in table.values():
        by_unit.setdefault(int(row["unit #"]), []).append(int(row["cycle #"]))
    assert set(range(1, units + 1)) <= set(by_unit), sorted(by_unit)
    assert all(u <= units or u - units in by_unit for u in by_unit), sorted(by_unit)
    for unit, cycles in by_unit.items():
        assert sorted(cycles) == list(range(1, len(cycles) + 1)), f"engine {unit}: gaps in {sorted(cycles)}"
    assert len(table) == summary["acked"], (len(table), summary)

    # values equal to the source rows (engine u replays FD001 unit ((u - 1) % 100) + 1, labelled u), and
    # the device identity carried through IoT Hub's system properties
    source = {(r.unit, r.cycle): r for r in fd001_rows}
    expected = {
        f"mid:{run_id}-{u}-{c}": source[((u - 1) % 100 + 1, c)]._replace(unit=u)
        for u, cs in by_unit.items()
        for c in cs
    }
    assert compare_table(table, expected) == []
    wrong_device = [
        k for k, r in table.items() if r["device_id"] != f"engine-{(int(r['unit #']) - 1) % units + 1:04d}"
    ]
    assert not wrong_device, wrong_device[:5]
    # both nodes took part: the 4 partitions are split between them
    owners = azurite.ownership(checkpoint_container)
    assert set(owners.values()) == {"node-0", "node-1"}, observed()
    assert all(n.running for n in nodes), observed()
