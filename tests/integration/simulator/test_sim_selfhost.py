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
