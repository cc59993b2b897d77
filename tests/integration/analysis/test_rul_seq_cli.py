"""`python -m enginehub.datasets.rul --model seq|ensemble`: one epoch on a few training units read back
from an embedded SQLite sink, run as a subprocess. Skipped without the optional `seq` extra (jax, optax)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("pandas")
NO_EXTRA = "the sequence model needs the optional seq extra: pip install 'enginehub[seq]'"
pytest.importorskip("jax", reason=NO_EXTRA)
pytest.importorskip("optax", reason=NO_EXTRA)

from enginehub.datasets import cmapss  # noqa: E402

pytestmark = pytest.mark.integration

TINY = ("--subset", "FD001", "--train-units", "20", "--seeds", "1", "--epochs", "1", "--json")


def run(*args: str, cmapss_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENGINEHUB_CMAPSS_DIR=str(cmapss_dir))
    return subprocess.run(
        [sys.executable, "-m", "enginehub.datasets.rul", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def only_line(stdout: str) -> dict:
    (line,) = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
    return line


@pytest.mark.parametrize(
    ("kind", "extra", "name"),
    [("seq", (), "seq-cnn-jax"), ("ensemble", ("--estimators", "60"), "ensemble-lightgbm+seq-cnn-jax")],
)
def test_one_epoch_on_a_tiny_subset_scores_every_test_unit(
    cmapss_dir: Path, kind: str, extra: tuple[str, ...], name: str
) -> None:
    if kind == "ensemble":
        pytest.importorskip("lightgbm", reason="the ensemble needs lightgbm (analysis extra)")
    proc = run(*TINY, "--model", kind, *extra, cmapss_dir=cmapss_dir)
    assert proc.returncode == 0, proc.stderr
    out = only_line(proc.stdout)
    assert out["model"] == name
    assert out["test_units"] == 100
    train = cmapss.read_rows(cmapss_dir / "train_FD001.txt")
    assert out["train_rows"] == sum(1 for r in train if r.unit <= 20)  # rows read back from the sink
    true = np.asarray(cmapss.read_rul(cmapss_dir / "RUL_FD001.txt"), dtype=float)
    # even one epoch must beat predicting 0 for every unit, and score against both truths
    assert 0 < out["rmse"] < float(np.sqrt(np.mean(true**2)))
    assert 0 < out["rmse_capped_truth"] <= out["rmse"] + 1e-9
    assert out["seeds"] == 1 and out["seed_rmse_std"] == 0.0
