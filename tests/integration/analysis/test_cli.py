"""`python -m enginehub.datasets.rul` (short training smoke run) and `python -m enginehub.datasets.plot`,
run as the contract says: a subprocess reading the C-MAPSS files and an embedded SQLite sink."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from enginehub.datasets import analysis, cmapss, rul  # noqa: E402

pytestmark = pytest.mark.integration

SMOKE = ("--train-units", "25", "--seeds", "1", "--estimators", "80")


@pytest.fixture
def lightgbm() -> None:
    pytest.importorskip("lightgbm", reason="the RUL model needs lightgbm (analysis extra)")


def run(module: str, *args: str, cmapss_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENGINEHUB_CMAPSS_DIR=str(cmapss_dir))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_rul_cli_smoke_training_beats_the_best_constant(cmapss_dir: Path, lightgbm: None) -> None:
    proc = run("enginehub.datasets.rul", "--subset", "FD001", "--json", *SMOKE, cmapss_dir=cmapss_dir)
    assert proc.returncode == 0, proc.stderr
    (out,) = json_lines(proc.stdout)
    assert {"subset", "rmse", "score", "train_rows", "test_units", "seconds"} <= set(out)
    assert out["subset"] == "FD001"
    assert out["test_units"] == 100
    train = cmapss.read_rows(cmapss_dir / "train_FD001.txt")
    assert out["train_rows"] == sum(1 for r in train if r.unit <= 25)
    true = np.asarray(cmapss.read_rul(cmapss_dir / "RUL_FD001.txt"), dtype=float)
    best_constant = float(true.std())  # RMSE of predicting the (oracle) mean RUL for every unit
    assert 0 < out["rmse"] < 0.75 * best_constant
    assert 0 < out["score"] < 1e5
    assert out["seconds"] > 0


def test_rul_cli_reads_train_and_test_rows_from_the_sink(
    tmp_path: Path, cmapss_dir: Path, lightgbm: None
) -> None:
    db = tmp_path / "sink.db"
    sink = analysis.sqlite_url(db)
    train_table, test_table = rul.table_names("FD001")
    rul.ensure_loaded(sink, "FD001", cmapss_dir, (train_table, test_table))
    with sqlite3.connect(db) as conn:
        conn.execute(f'DELETE FROM "{train_table}" WHERE "unit #" > 10')
        kept = conn.execute(f'SELECT COUNT(*) FROM "{train_table}"').fetchone()[0]
    proc = run(
        "enginehub.datasets.rul", "--subset", "FD001", "--sink", sink, "--json", *SMOKE, cmapss_dir=cmapss_dir
    )
    assert proc.returncode == 0, proc.stderr
    (out,) = json_lines(proc.stdout)
    assert out["train_rows"] == kept  # what the sink holds, not what the file holds
    with sqlite3.connect(db) as conn:
        conn.execute(f'DELETE FROM "{test_table}" WHERE "unit #" = 100')
    proc = run(
        "enginehub.datasets.rul", "--subset", "FD001", "--sink", sink, "--json", *SMOKE, cmapss_dir=cmapss_dir
    )
    assert proc.returncode == 2
    assert "99 test units" in proc.stderr and "RUL_FD001.txt has 100 lines" in proc.stderr


def test_rul_cli_refuses_an_unknown_subset(cmapss_dir: Path) -> None:
    proc = run("enginehub.datasets.rul", "--subset", "FD009", "--json", cmapss_dir=cmapss_dir)
    assert proc.returncode == 2
    assert "FD009" in proc.stderr


def test_plot_cli_writes_the_sensor_4_png(tmp_path: Path, cmapss_dir: Path) -> None:
    png = tmp_path / "sensor4.png"
    proc = run("enginehub.datasets.plot", "--out", str(png), "--json", cmapss_dir=cmapss_dir)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    unit1 = [r for r in cmapss.read_rows(cmapss_dir / "train_FD001.txt") if r.unit == 1]
    assert out == {"png": str(png), "unit": 1, "sensor": 4, "points": len(unit1)}
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_cli_reports_a_unit_that_is_not_in_the_sink(tmp_path: Path, cmapss_dir: Path) -> None:
    db = tmp_path / "s.db"
    analysis.load_rows_sqlite(db, cmapss.read_rows(cmapss_dir / "test_FD001.txt")[:50])
    png = tmp_path / "none.png"
    proc = run(
        "enginehub.datasets.plot",
        "--out",
        str(png),
        "--sink",
        analysis.sqlite_url(db),
        "--unit",
        "77",
        cmapss_dir=cmapss_dir,
    )
    assert proc.returncode == 2
    assert "no rows for unit 77" in proc.stderr
    assert not png.exists()


def test_rul_cli_all_prints_one_json_line_per_subset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[str, str]] = []

    def fake_evaluate(subset: str, sink: str, **kwargs: object) -> dict[str, object]:
        seen.append((subset, sink))
        return {"subset": subset, "rmse": 1.0, "score": 2.0, "train_rows": 3, "test_units": 4, "seconds": 0.1}

    monkeypatch.setattr(rul, "evaluate", fake_evaluate)
    assert rul.main(["--subset", "all", "--json"]) == 0
    lines = json_lines(capsys.readouterr().out)
    assert [line["subset"] for line in lines] == ["FD001", "FD002", "FD003", "FD004"]
    assert len({sink for _, sink in seen}) == 1 and seen[0][1].startswith("sqlite:///")  # one embedded db
