"""Full RUL evaluation on the four C-MAPSS subsets, read back from an embedded SQLite sink.

    nice .venv/bin/python benchmarks/rul_eval.py [--subset all] [--seeds 3] [--jobs 2] [--out results.json]
    nice .venv/bin/python benchmarks/rul_eval.py --model gbm,seq,ensemble   # needs the seq extra

Runs the protocol of ``python -m enginehub.datasets.rul`` (docs/cmapss.md section 3: 14 sensors,
per-condition z-score, RUL cap 125, window 30, last test cycle against raw RUL_FD00x) with the full model
(``--model``: gbm, seq, ensemble or a comma-separated list of them), prints one JSON line per subset and
model, then a table next to the published baselines (docs/cmapss.md section 5a).
Takes a few minutes on 2 cores; lowers its own priority (nice 10).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from enginehub.datasets import analysis, cmapss, rul

#: (RMSE, score) per subset, docs/cmapss.md section 5a.
PUBLISHED = {
    "LSTM (Zheng 2017)": {
        "FD001": (16.14, 338),
        "FD002": (24.49, 4450),
        "FD003": (16.18, 852),
        "FD004": (28.17, 5550),
    },
    "DCNN (Li 2018)": {
        "FD001": (12.61, 273.7),
        "FD002": (22.36, 10412),
        "FD003": (12.64, 284.1),
        "FD004": (23.31, 12466),
    },
    "CNN (Babu 2016)": {
        "FD001": (18.45, 1287),
        "FD002": (30.29, 13570),
        "FD003": (19.82, 1596),
        "FD004": (29.16, 7886),
    },
    "AGCNN (Liu 2021)": {
        "FD001": (12.42, 226),
        "FD002": (19.43, 1492),
        "FD003": (13.39, 227),
        "FD004": (21.50, 3392),
    },
}
LABELS = {"gbm": "this (LightGBM)", "seq": "this (seq CNN)", "ensemble": "this (GBM+seq)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="all")
    parser.add_argument("--model", default="gbm", help="gbm, seq, ensemble, or a comma-separated list")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--dir", default=None, help=f"C-MAPSS directory (default ${cmapss.ENV_VAR})")
    parser.add_argument("--sink", default=None, help="sink URL (default: a temporary SQLite file)")
    parser.add_argument("--out", default=None, help="also write the results as a JSON list to this file")
    args = parser.parse_args()
    try:
        os.nice(10)
    except OSError:
        pass
    subsets = cmapss.SUBSETS if args.subset.lower() == "all" else (cmapss.check_subset(args.subset),)
    config = rul.ModelConfig(seeds=tuple(range(1, args.seeds + 1)), n_jobs=args.jobs)
    kinds = [k.strip() for k in args.model.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in rul.MODEL_KINDS]
    if unknown or not kinds:
        parser.error(f"--model: one or more of {rul.MODEL_KINDS}, got {args.model!r}")
    seq_config = None
    if set(kinds) & {"seq", "ensemble"}:
        from enginehub.datasets import seq

        seq_config = seq.SeqConfig(seeds=config.seeds)
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="enginehub-rul-bench-") as tmp:
        sink = args.sink or analysis.sqlite_url(Path(tmp) / "enginehub.db")
        for subset in subsets:
            for kind in kinds:
                result = rul.evaluate(
                    subset, sink, directory=args.dir, config=config, model_kind=kind, seq_config=seq_config
                )
                results[kind].append(result)
                sys.stdout.write(json.dumps(result) + "\n")
                sys.stdout.flush()
    lines = ["", f"{'model':<22}" + "".join(f"{s:>20}" for s in subsets)]
    for kind in kinds:
        lines.append(
            f"{LABELS[kind]:<22}" + "".join(f"{r['rmse']:>10.2f} /{r['score']:>8.0f}" for r in results[kind])
        )
    for name, table in PUBLISHED.items():
        lines.append(f"{name:<22}" + "".join(f"{table[s][0]:>10.2f} /{table[s][1]:>8.0f}" for s in subsets))
    lines.append(f"(RMSE / PHM08 score against raw RUL_FD00x; total {time.perf_counter() - started:.0f} s)")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps([r for k in kinds for r in results[k]], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
