"""Model selection for the RUL model WITHOUT looking at the test set: held-out training units.

    nice .venv/bin/python benchmarks/rul_validate.py --subset FD001 [--splits 3] [--set num_leaves=31 ...]
    nice .venv/bin/python benchmarks/rul_validate.py --subset FD002 --model seq --set arch=lstm
    nice .venv/bin/python benchmarks/rul_validate.py --subset FD002 --model ensemble

A quarter of the training units (per split seed) is held out; each held-out trajectory is cut at
``--cuts`` random points, and the model trained on the other units predicts the RUL at the cut. With
``--cuts-like test`` (the default) the observed fraction of each life is drawn the way the subset's test
trajectories were cut (:class:`enginehub.datasets.rul.Truncation`, fitted on the test files' lengths and
the training lives; no test RUL is read); ``--cuts-like uniform`` cuts uniformly over the life (keeping
at least 31 cycles where possible), which makes the true RULs far longer than the test set's. Reported:
RMSE and the PHM08 score per prediction against the true RUL capped at 125 (the cap is shared by every
model, so this isolates the model's error from the protocol's floor, docs/cmapss.md section 3). Compare
variants by passing ``--set FIELD=VALUE`` (fields of ``enginehub.datasets.rul.ModelConfig``, or with
``--model seq`` of ``enginehub.datasets.seq.SeqConfig``; ``--seq-set`` sets those for ``--model
ensemble``).
``val_rmse_raw`` scores the same predictions against the uncapped truth of the cuts, and
``val_rmse_raw_snap<s>`` the same after :func:`enginehub.datasets.rul.finish` with ``snap=s`` for each
of ``--snaps`` (``picked_snap``: the lowest of them and of no snap, ``val_rmse_raw``).

``--model ensemble`` fits both models on each split and scores ``w * gbm + (1 - w) * seq`` for
w = 0, 0.25, ..., 1 (``val_rmse_capped_w<w>``): the weight is chosen here, never on the test set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pandas as pd

from enginehub.datasets import analysis, cmapss, rul


def split(
    subset: str, seed: int, directory: str | None, frac: float = 0.25, cuts: int = 4, like: str = "test"
):
    data = cmapss.load_subset(subset, directory)
    frame = analysis.rows_to_frame(data.train)
    units = frame[analysis.UNIT].unique()
    truncation = None
    if like == "test":
        lengths = analysis.rows_to_frame(data.test).groupby(analysis.UNIT).size()
        truncation = rul.Truncation.fit(lengths, frame.groupby(analysis.UNIT).size())
    rng = np.random.default_rng(seed)
    held = set(rng.choice(units, max(1, int(len(units) * frac)), replace=False).tolist())
    train = frame[~frame[analysis.UNIT].isin(held)].reset_index(drop=True)
    parts, truth, k = [], [], 0
    for _, group in frame[frame[analysis.UNIT].isin(held)].groupby(analysis.UNIT):
        life = len(group)
        for _ in range(cuts):
            if truncation is not None:
                keep = truncation.cut(life, rng)
            else:
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


def configure(config: Any, items: list[str], parser: argparse.ArgumentParser) -> Any:
    known = {f.name for f in fields(config)}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known:
            parser.error(f"unknown {type(config).__name__} field {name!r}: one of {sorted(known)}")
        parsed = parse_value(value)
        config = replace(config, **{name: tuple(parsed) if isinstance(parsed, list) else parsed})
    return config


WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--model", choices=("gbm", "seq", "ensemble"), default="gbm")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--cuts", type=int, default=4)
    parser.add_argument("--cuts-like", choices=("test", "uniform"), default="test")
    parser.add_argument("--snaps", default="100,105,110,115,120", help="snap values to score on raw truth")
    parser.add_argument("--seeds", type=int, default=1, help="models averaged per fit")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--seq-set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    try:
        os.nice(10)
    except OSError:
        pass
    seeds = tuple(range(1, args.seeds + 1))
    gbm_config = rul.ModelConfig(seeds=seeds)
    seq_config = None
    if args.model in ("seq", "ensemble"):
        from enginehub.datasets import seq

        seq.require_jax()
        seq_config = configure(seq.SeqConfig(seeds=seeds), args.seq_set, parser)
        if args.model == "seq":
            seq_config = configure(seq_config, args.set, parser)
    if args.model in ("gbm", "ensemble"):
        gbm_config = configure(gbm_config, args.set, parser)
    started = time.perf_counter()
    snaps = [float(v) for v in args.snaps.split(",") if v.strip()]
    capped_scores, raw_scores, by_weight = [], [], {w: [] for w in WEIGHTS}
    by_snap: dict[float, list[float]] = {v: [] for v in snaps}
    truths: list[np.ndarray] = []
    for seed in range(args.splits):
        train, held, truth = split(
            cmapss.check_subset(args.subset), seed, args.dir, cuts=args.cuts, like=args.cuts_like
        )
        capped = np.minimum(truth, rul.RUL_CAP)
        truths.append(truth)
        preds = {}
        if args.model in ("gbm", "ensemble"):
            preds["gbm"] = rul.RulModel(gbm_config).fit(train).predict_last(held)[1]
        if args.model in ("seq", "ensemble"):
            preds["seq"] = seq.SeqModel(seq_config).fit(train).predict_last(held)[1]
        if args.model == "ensemble":
            for w in WEIGHTS:
                by_weight[w].append(rul.rmse(w * preds["gbm"] + (1 - w) * preds["seq"], capped))
            weight = seq.ENSEMBLE_GBM_WEIGHT
            pred = weight * preds["gbm"] + (1 - weight) * preds["seq"]
        else:
            pred = preds[args.model]
        capped_scores.append((rul.rmse(pred, capped), rul.phm08_score(pred, capped) / len(capped)))
        raw_scores.append(rul.rmse(pred, truth))
        for v in snaps:
            by_snap[v].append(rul.rmse(rul.finish(pred, rul.RUL_CAP, v), truth))
    mean = np.mean(capped_scores, axis=0)
    result: dict[str, object] = {
        "subset": cmapss.check_subset(args.subset),
        "model": args.model,
        "val_rmse_capped": round(float(mean[0]), 3),
        "val_rmse_capped_splits": [round(float(v[0]), 3) for v in capped_scores],
        "val_score_per_unit_capped": round(float(mean[1]), 3),
        "val_rmse_raw": round(float(np.mean(raw_scores)), 3),
        "cuts_like": args.cuts_like,
        "val_mean_true_rul": round(float(np.mean(np.concatenate(truths))), 2),
        "splits": args.splits,
        "seeds": args.seeds,
        "set": args.set,
        "seq_set": args.seq_set,
        "seconds": round(time.perf_counter() - started, 1),
    }
    raw_by_snap = {None: float(np.mean(raw_scores))}
    for v in snaps:
        result[f"val_rmse_raw_snap{v:g}"] = round(float(np.mean(by_snap[v])), 3)
        raw_by_snap[v] = float(np.mean(by_snap[v]))
    result["picked_snap"] = min(raw_by_snap, key=lambda v: raw_by_snap[v])  # type: ignore[arg-type,return-value]
    if args.model == "ensemble":
        for w in WEIGHTS:
            result[f"val_rmse_capped_w{w}"] = round(float(np.mean(by_weight[w])), 3)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
