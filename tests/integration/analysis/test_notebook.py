"""notebooks/exploration.ipynb executed top to bottom (nbclient + ipykernel) against the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook test needs nbformat (analysis extra)")
nbclient = pytest.importorskip("nbclient", reason="notebook test needs nbclient (analysis extra)")
pytest.importorskip("ipykernel", reason="notebook test needs ipykernel (analysis extra)")
pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

pytestmark = pytest.mark.integration

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "exploration.ipynb"


def test_exploration_notebook_runs_against_the_embedded_default(
    tmp_path: Path, cmapss_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINEHUB_CMAPSS_DIR", str(cmapss_dir))
    monkeypatch.delenv("ENGINEHUB_SINK", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders PNGs
    # the notebook keeps its SQLite file in a fresh temp dir (for the reader to query afterwards): under
    # pytest's tmp_path here, not ~17 MB left in /tmp per run
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), (
        "commit it unexecuted"
    )
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell (the asserts inside included)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the sensor-4 plots were not rendered"
    texts = "".join(o.get("text", "") for o in outputs)
    assert 'b."sensor 4" AS "sensor 4 (t - 1)"' in texts  # the original self-join was printed and run
    assert "100 units, 20631 rows -> windows (17731, 30, 14)" in texts
    assert [p.name for p in tmp_path.glob("enginehub-notebook-*/enginehub.db")] == ["enginehub.db"]
