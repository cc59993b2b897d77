"""The original exploration plot — one sensor of one engine over its cycles — saved to PNG.

``python -m enginehub.datasets.plot --out sensor4.png [--sink URL] [--table T] [--unit 1] [--sensor 4]``

The rows come from the sink through :func:`enginehub.datasets.analysis.sensor_lag` (the LAG() form of the
original "sensor 4 (t - 1)" query; ``--method selfjoin`` runs the 2018 self-join instead). Without
``--sink``, ``train_FD001.txt`` (``--subset``, ``--dir``) is first loaded into a temporary embedded SQLite
file, as the RUL command does. ``--lag`` also draws the ``(t - 1)`` column. Prints the PNG path (or a
JSON line with ``--json``). Uses matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after selecting the backend
import pandas as pd  # noqa: E402

from enginehub.datasets import analysis, cmapss  # noqa: E402

LOG = logging.getLogger(__name__)


def plot_sensor(
    frame: pd.DataFrame, sensor: int, out: str | Path, *, lag: bool = False, title: str = ""
) -> Path:
    """Draw ``sensor N`` (and ``sensor N (t - 1)`` when ``lag``) against the cycle; write a PNG."""
    col = analysis.sensor_column(sensor)
    fig, ax = plt.subplots(figsize=(21, 5))  # the original notebook's figure size
    try:
        ax.plot(frame[analysis.CYCLE], frame[col], label=col)
        if lag:
            ax.plot(
                frame[analysis.CYCLE], frame[analysis.lag_column(sensor)], label=analysis.lag_column(sensor)
            )
            ax.legend()
        ax.set_title(title or f"Sensor {sensor}")
        ax.set_xlabel("cycle")
        ax.set_ylabel(col)
        out = Path(out)
        fig.savefig(out, format="png", dpi=80)
    finally:
        plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m enginehub.datasets.plot", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument(
        "--sink", default=None, help="sqlite:///PATH or crate://HOST:4200 (default: embedded SQLite)"
    )
    parser.add_argument("--table", default=analysis.DEFAULT_TABLE, help="table (default enginehub_events)")
    parser.add_argument("--unit", type=int, default=1, help="engine unit (default 1)")
    parser.add_argument("--sensor", type=int, default=4, help="sensor number 1..21 (default 4)")
    parser.add_argument("--method", choices=("window", "selfjoin"), default="window", help="lag query form")
    parser.add_argument("--lag", action="store_true", help="also draw the (t - 1) column")
    parser.add_argument("--subset", default="FD001", help="train file loaded without --sink (default FD001)")
    parser.add_argument("--dir", default=None, help=f"C-MAPSS directory (default ${cmapss.ENV_VAR})")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="enginehub-plot-") as tmp:
            sink = args.sink
            if sink is None:
                db = Path(tmp) / "enginehub.db"
                name = cmapss.check_subset(args.subset)
                rows = cmapss.read_rows(cmapss.resolve_dir(args.dir) / cmapss.file_name("train", name))
                analysis.load_rows_sqlite(db, rows, args.table, source=f"{name}-train")
                sink = analysis.sqlite_url(db)
            frame = analysis.sensor_lag(
                sink, args.unit, sensor=args.sensor, table=args.table, method=args.method
            )
            if frame.empty:
                sys.stderr.write(f"error: no rows for unit {args.unit} in table {args.table}" + "\n")
                return 2
            out = plot_sensor(frame, args.sensor, args.out, lag=args.lag)
    except (analysis.AnalysisError, cmapss.CmapssError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}" + "\n")
        return 2
    if args.json:
        line = json.dumps({"png": str(out), "unit": args.unit, "sensor": args.sensor, "points": len(frame)})
    else:
        line = str(out)
    sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
