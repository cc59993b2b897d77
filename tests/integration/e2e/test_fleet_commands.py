"""The fleet obeys the cloud: ``simulate --commands`` against the session hub, driven only through the
official azure-iot-hub registry manager (``iothub_service`` fixture), its telemetry ingested into SQLite.

``maintenance`` on one engine: its cycles restart at 1 (a fresh engine number) while the others continue;
a desired ``sendIntervalS`` changes another engine's rate without a restart; every acknowledged message is
in the table exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from enginehub.harness.testing.sinks import read_rows
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


def _call(rm: Any, device: str, name: str, payload: Any = None) -> Any:
    return rm.invoke_device_method(
        device, CloudToDeviceMethod(method_name=name, payload=payload, response_timeout_in_seconds=5)
    )


def test_maintenance_restarts_one_engine_while_the_others_continue(
    iothub, iothub_service, fleet, ingest_node, tmp_path: Path, cmapss_dir: Path
) -> None:
    units, rate, duration = 3, 15.0, 10.0  # 5 msg/s per engine
    run_id = f"cmd{uuid.uuid4().hex[:6]}"
    sink = f"sqlite:///{tmp_path / 'events.db'}"
    node = ingest_node(
        eventhub_connection_string=iothub.eventhub_connection_string,
        sink=sink,
        checkpoint_dir=tmp_path / "checkpoints",
    )
    run = fleet(
        units, rate, duration=duration, run_id=run_id, dataset="FD001", cmapss_dir=cmapss_dir, commands=True
    )

    def state(device: str) -> dict[str, Any] | None:
        try:
            result = _call(iothub_service, device, "getState")
        except HttpOperationError as exc:  # 404 until the device is connected and subscribed
            if exc.response.status_code != 404:
                raise
            return None
        return result.payload if result.status == 200 else None

    wait_until(
        lambda: (s := state("engine-0002")) and s["cycle"] >= 5 and s,
        20,
        lambda: f"engine-0002 state {state('engine-0002')}; fleet log:\n{run.log_tail()}",
    )
    done = _call(iothub_service, "engine-0002", "maintenance")
    assert done.status == 200, done.payload
    old, new, cycles = done.payload["previousEngine"], done.payload["engine"], done.payload["previousCycles"]
    assert (old, new) == (2, 2 + units) and cycles >= 5 and done.payload["cycle"] == 0

    # a desired property: engine-0001 sends every 0.1 s (10 msg/s instead of 5) from now on
    twin = iothub_service.get_twin("engine-0001")
    iothub_service.update_twin(
        "engine-0001", Twin(properties=TwinProperties(desired={"sendIntervalS": 0.1})), twin.etag
    )
    wait_until(
        lambda: iothub_service.get_twin("engine-0001").properties.reported.get("sendIntervalS") == 0.1,
        10,
        lambda: iothub_service.get_twin("engine-0001").properties.reported,
    )
    assert _call(iothub_service, "engine-0001", "getState").payload["rate"] == pytest.approx(10.0)
    unknown = _call(iothub_service, "engine-0003", "selfDestruct")
    assert unknown.status == 404 and "unknown method" in unknown.payload["error"]

    summary = run.result(timeout=duration + 60)
    assert summary["exit_code"] == 0 and summary["failed"] == 0, (summary, run.log_tail())
    assert "told to do maintenance: engine 2" in run.log_path.read_text()  # simulate logs its orders

    table = wait_until(
        lambda: (t := read_rows(sink, message_id_prefix=f"{run_id}-")) and len(t) >= summary["acked"] and t,
        60,
        lambda: (
            f"{len(read_rows(sink, message_id_prefix=f'{run_id}-'))} of {summary['acked']} rows; "
            f"ingest log:\n{node.log_tail(10)}"
        ),
        interval=0.25,
    )
    assert len(table) == summary["acked"]  # exactly once
    cycles_of: dict[tuple[str, int], list[int]] = {}
    for row in table.values():
        cycles_of.setdefault((row["device_id"], int(row["unit #"])), []).append(int(row["cycle #"]))
    for key, cs in cycles_of.items():
        assert sorted(cs) == list(range(1, len(cs) + 1)), f"{key}: gaps in {sorted(cs)}"
    assert set(cycles_of) == {
        ("engine-0001", 1),
        ("engine-0002", 2),
        ("engine-0002", new),
        ("engine-0003", 3),
    }
    # the maintained engine: its old unit stops where maintenance found it, the fresh one starts at 1
    assert len(cycles_of[("engine-0002", 2)]) == cycles
    assert len(cycles_of[("engine-0002", new)]) >= 5
    # the others continued past that point without a restart
    assert len(cycles_of[("engine-0003", 3)]) > cycles + 5
    # the desired interval took effect: engine 1 sent clearly more than engine 3 (same start and rate before)
    assert len(cycles_of[("engine-0001", 1)]) > 1.3 * len(cycles_of[("engine-0003", 3)])
