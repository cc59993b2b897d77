"""``simulate`` self-hosted (harness up + ingest into SQLite, started by simulate): every message lands
exactly once with the right unit, cycle and sensor values."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("enginehub.harness.up", reason="harness up (the local stack) has not landed")

pytestmark = pytest.mark.integration

CMD = [sys.executable, "-m", "enginehub.simulator"]


def _train_rows(cmapss_dir: Path) -> dict[tuple[int, int], list[float]]:
    out = {}
    for line in (cmapss_dir / "train_FD001.txt").read_text().splitlines():
        f = line.split()
        out[(int(f[0]), int(f[1]))] = [float(x) for x in f[2:]]
    return out


def test_20_devices_200_per_s_10_s_every_message_once_with_correct_values(
    cmapss_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "run"
    proc = subprocess.run(
        [*CMD, "--units", "20", "--rate", "200", "--duration", "10", "--dataset", "FD001",
         "--cmapss-dir", str(cmapss_dir), "--data-dir", str(data), "--run-id", "sh",
         "--json", "--no-progress"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["failed"] == 0 and s["acked"] == s["sent"] == s["ingested"], s
    assert abs(s["sent"] - 2000) <= 25 and s["rate_achieved"] >= 0.99 * 200
    assert Path(s["db"]) == data / "events.db"

    con = sqlite3.connect(s["db"])
    cols = ", ".join(f'"sensor {i}"' for i in range(1, 22))
    rows = con.execute(
        f'SELECT id, "unit #", "cycle #", "setting 1", "setting 2", "setting 3", {cols}, payload, '
        "event_metadata FROM enginehub_events"
    ).fetchall()
    assert len(rows) == s["acked"]
    truth = _train_rows(cmapss_dir)
    seen = set()
    for row in rows:
        unit, cycle = row[1], row[2]
        assert (unit, cycle) not in seen
        seen.add((unit, cycle))
        assert 1 <= unit <= 20  # 10 s at 10 msg/s per device: no engine reaches its end yet
        assert row[3:27] == pytest.approx(truth[(unit, cycle)], abs=1e-6)
        assert row[27].split()[:2] == [str(unit), str(cycle)]
        assert f"sh-{unit}-{cycle}" in row[28]
    per_unit = {u: max(c for uu, c in seen if uu == u) for u, _ in seen}
    assert all(per_unit[u] == sum(1 for uu, _ in seen if uu == u) for u in per_unit)  # cycles 1..n, no gaps


def _admin(url: str, method: str = "GET", body: dict | None = None) -> dict:
    import urllib.request

    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def test_dropped_pubacks_through_the_whole_stack_leave_no_missing_and_no_duplicate_rows(
    tmp_path: Path,
) -> None:
    import asyncio

    from enginehub.simulator.credentials import HubTarget
    from enginehub.simulator.device import DevicePolicy, quiet_sdk_logging
    from enginehub.simulator.runner import FleetConfig, FleetRunner
    from enginehub.simulator.selfhost import SelfHost
    from enginehub.simulator.sources import load_source

    quiet_sdk_logging()
    host = SelfHost(tmp_path / "stack")
    info = await host.start()
    try:
        admin = info.raw["iothub_admin_url"]
        _admin(f"{admin}/faults", "PATCH", {"drop_pubacks": 4})
        cfg = FleetConfig(
            devices=tuple(HubTarget(info.hostname, info.group_key, info.gateway_host).devices(5)),
            rate=50.0, total_devices=5, duration=3.0, run_id="dp",
            ca_cert_pem=Path(info.ca_cert).read_text(),
            policy=DevicePolicy(send_timeout=1.0),
        )  # fmt: skip
        runner = FleetRunner(cfg, load_source("synthetic", units=10))
        stats = await runner.run()
        assert runner.fatal is None and stats.failed == 0 and stats.acked == stats.sent
        assert stats.timeouts >= 4  # the hub really withheld PUBACKs ...
        metrics = _admin(f"{admin}/metrics")
        assert metrics["dropped_pubacks"] == 4 and metrics["messages"] >= stats.acked + 4  # ... and kept both
        for _ in range(300):
            if host.ingested() >= stats.acked:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a late duplicate would land now
    finally:
        await host.stop()
    con = sqlite3.connect(host.db)
    rows = con.execute('SELECT id, "unit #", "cycle #" FROM enginehub_events').fetchall()
    keys = {(u, c) for _, u, c in rows}
    assert len(rows) == len(keys) == stats.acked  # no duplicate, none missing
    assert keys == {(u, c) for u in range(1, 6) for c in range(1, 1 + sum(1 for uu, _ in keys if uu == u))}


def test_sigint_self_hosted_drains_stops_the_stack_and_exits_0(tmp_path: Path) -> None:
    import signal
    import time

    data = tmp_path / "run"
    proc = subprocess.Popen(
        [*CMD, "--units", "5", "--rate", "50", "--duration", "120", "--dataset", "synthetic",
         "--data-dir", str(data), "--json", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        from enginehub.simulator.selfhost import count_rows

        while count_rows(data / "events.db") < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert s["interrupted"] is True and s["failed"] == 0
    assert s["ingested"] == s["acked"] == s["sent"] >= 50
    assert "Traceback" not in err
