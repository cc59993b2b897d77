"""Which model of the test set's truncation reproduces the test trajectories' LENGTHS (inputs only)?

    .venv/bin/python benchmarks/rul_truncation_fit.py [--subset all] [--dir DIR] [--show-test-truth]

The validation cuts of ``rul_validate.py --cuts-like test`` model the observed fraction of a life,
U = t / L, as a Beta independent of the life (:class:`enginehub.datasets.rul.Truncation`, model A). The
alternative (model B) is a remaining life R = L - t independent of the life, a Gamma whose mean and
variance follow from the same inputs: E[R] = E[L] - E[t], Var[R] = Var[t] - Var[L] (B is impossible where
Var[t] < Var[L]). Each model draws lives from the training lives, cuts them, and is scored by the
two-sample Kolmogorov-Smirnov distance between its simulated lengths and the test files' lengths: the
smaller fits the inputs better. No RUL label is read unless ``--show-test-truth`` asks for the test
truth's spread as a diagnostic, printed after the choice; it must never feed a choice.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from scipy import stats

from enginehub.datasets import analysis, cmapss, rul


def _spread(rul_values: np.ndarray, cap: int) -> dict[str, float]:
    return {
        "mean": round(float(rul_values.mean()), 1),
        "sd": round(float(rul_values.std()), 1),
        "p95": round(float(np.percentile(rul_values, 95)), 1),
        "share_above_cap": round(float(np.mean(rul_values > cap)), 3),
    }


def fit(subset: str, directory: str | None, draws: int, seed: int, cap: int, truth: bool) -> dict:
    data = cmapss.load_subset(subset, directory)
    lives = analysis.rows_to_frame(data.train).groupby(analysis.UNIT).size().to_numpy().astype("float64")
    lengths = analysis.rows_to_frame(data.test).groupby(analysis.UNIT).size().to_numpy().astype("float64")
    rng = np.random.default_rng(seed)
    life = rng.choice(lives, draws)
    beta = rul.Truncation.fit(lengths, lives)
    t_a = np.clip(np.round(rng.beta(beta.a, beta.b, draws) * life), 1, life - 1)
    out: dict = {
        "subset": subset,
        "lives": {"mean": round(float(lives.mean()), 1), "sd": round(float(lives.std()), 1)},
        "test_lengths": {"mean": round(float(lengths.mean()), 1), "sd": round(float(lengths.std()), 1)},
        "beta": {
            "ks": round(float(stats.ks_2samp(lengths, t_a).statistic), 4),
            "rul": _spread(life - t_a, cap),
        },
        "gamma": None,
    }
    mean_r, var_r = lives.mean() - lengths.mean(), lengths.var() - lives.var()
    if mean_r > 0 and var_r > 0:
        t_b = np.clip(np.round(life - rng.gamma(mean_r**2 / var_r, var_r / mean_r, draws)), 1, life - 1)
        out["gamma"] = {
            "ks": round(float(stats.ks_2samp(lengths, t_b).statistic), 4),
            "rul": _spread(life - t_b, cap),
        }
    scores = {k: out[k]["ks"] for k in ("beta", "gamma") if out[k] is not None}
    out["better_fit"] = min(scores, key=scores.__getitem__)
    if truth:  # a diagnostic only, after the choice
        out["test_truth"] = _spread(np.asarray(data.rul, dtype="float64"), cap)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="all", help="FD001..FD004 or all (default all)")
    parser.add_argument("--dir", default=None, help=f"C-MAPSS directory (default ${cmapss.ENV_VAR})")
    parser.add_argument("--draws", type=int, default=200_000, help="simulated cuts per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cap", type=int, default=125, help="RUL cap for the share above it (default 125)")
    parser.add_argument("--show-test-truth", action="store_true", help="also print the test truth's spread")
    args = parser.parse_args()
    subsets = cmapss.SUBSETS if args.subset.lower() == "all" else (cmapss.check_subset(args.subset),)
    try:
        for subset in subsets:
            print(json.dumps(fit(subset, args.dir, args.draws, args.seed, args.cap, args.show_test_truth)))
    except cmapss.CmapssError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
