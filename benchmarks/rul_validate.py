"""Model selection for the RUL model WITHOUT looking at the test set: held-out training units.

    nice .venv/bin/python benchmarks/rul_validate.py --subset FD001 [--splits 3] [--set num_leaves=31 ...]

A quarter of the training units (per split seed) is held out; each held-out trajectory is cut at
``--cuts`` random points (keeping at least 31 cycles where possible), like the truncated test
trajectories, and the model trained on the other units predicts the RUL at the cut. Reported: RMSE and
the PHM08 score per prediction against the true RUL capped at 125 (the cap is shared by every model, so
this isolates the model's error from the protocol's floor, docs/cmapss.md section 3). Compare variants by
passing ``--set FIELD=VALUE`` (fields of ``enginehub.datasets.rul.ModelConfig``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace

import numpy as np
import pandas as pd

from enginehub.datasets import analysis, cmapss, rul


def split(subset: str, seed: int, directory: str | None, frac: float = 0.25, cuts: int = 4):
    data = cmapss.load_subset(subset, directory)
    frame = analysis.rows_to_frame(data.train)
    units = frame[analysis.UNIT].unique()
    rng = np.random.default_rng(seed)
    held = set(rng.choice(units, max(1, int(len(units) * frac)), replace=False).tolist())
    train = frame[~frame[analysis.UNIT].isin(held)].reset_index(drop=True)
    parts, truth, k = [], [], 0
    for _, group in frame[frame[analysis.UNIT].isin(held)].groupby(analysis.UNIT):
        life = len(group)
        for _ in range(cuts):
            keep = int(rng.integers(min(31, life - 1), life))
            k += 1
            cut = group.iloc[:keep].copy()
            cut[analysis.UNIT] = k
            parts.append(cut)
            truth.append(life - keep)
    return train, pd.concat(parts, ignore_index=True), np.asarray(truth, dtype="float64")


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--cuts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="models averaged per fit")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    try:
        os.nice(10)
    except OSError:
        pass
    config = rul.ModelConfig(seeds=tuple(range(1, args.seeds + 1)))
    known = {f.name for f in fields(rul.ModelConfig)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in known:
            parser.error(f"unknown ModelConfig field {name!r}: one of {sorted(known)}")
        config = replace(config, **{name: parse_value(value)})
    started = time.perf_counter()
    scores = []
    for seed in range(args.splits):
        train, held, truth = split(cmapss.check_subset(args.subset), seed, args.dir, cuts=args.cuts)
        _, pred = rul.RulModel(config).fit(train).predict_last(held)
        capped = np.minimum(truth, config.cap)
        scores.append((rul.rmse(pred, capped), rul.phm08_score(pred, capped) / len(capped)))
    mean = np.mean(scores, axis=0)
    result = {
        "subset": cmapss.check_subset(args.subset),
        "val_rmse_capped": round(float(mean[0]), 3),
        "val_score_per_unit_capped": round(float(mean[1]), 3),
        "splits": args.splits,
        "set": args.set,
        "seconds": round(time.perf_counter() - started, 1),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
