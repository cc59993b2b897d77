"""Operating conditions of C-MAPSS rows: identify them from the three settings, normalise each sensor per
condition, and derive condition-aware features (docs/cmapss.md sections 1 and 3).

Pure functions over numpy arrays (and pandas frames of table rows as read back from any sink: the
columns ``"unit #"``, ``"cycle #"``, ``"setting 1..3"``, ``"sensor N"``); no I/O.

- **Identification.** The three settings form tight clusters: six in FD002/FD004, one in FD001/FD003.
  :func:`fit_conditions` finds them in training rows by clustering (rounding setting 1 to an integer,
  setting 2 to 2 decimals and setting 3 to an integer groups every C-MAPSS row exactly; the clusters are
  then numbered by their centre, altitude first, so the six FD002/FD004 conditions are 1..6 in the
  order of docs/cmapss.md section 1). :meth:`ConditionMap.assign` gives any row (train or test) the
  nearest fitted centre, measured in units of each setting's spread between centres, and refuses a row
  farther than ``tolerance`` from every centre (a clear ValueError, not a silent guess).
- **Normalisation.** :class:`ConditionScaler`: z-score of each sensor per condition, statistics fitted on
  training rows only (Babu et al. 2016 Eq. 3); a sensor that is constant within a condition maps to 0;
  a condition not seen in training is refused.
- **Features.** :func:`condition_features`: the one-hot of the current condition, the cycles spent so far
  in each condition (Babu et al. 2016's operating-condition history), and the cycles since the condition
  last changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from enginehub.datasets import labels as lab

LOG = logging.getLogger(__name__)

UNIT = "unit #"
CYCLE = "cycle #"
SETTING_COLUMNS: tuple[str, ...] = ("setting 1", "setting 2", "setting 3")
#: Decimals each setting is rounded to when clustering (noise in the files is below half of these steps).
ROUNDING: tuple[int, ...] = (0, 2, 0)
#: A row farther than this from every fitted centre (in units of the per-setting scale) is refused.
DEFAULT_TOLERANCE = 0.25


def _settings(x: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"settings must be (n, 3), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("settings must be finite")
    return arr


@dataclass(frozen=True)
class ConditionMap:
    """Fitted operating conditions: ``centres[i]`` are the mean settings of condition ``i + 1``."""

    centres: np.ndarray  # (k, 3)
    scale: np.ndarray  # (3,) distance unit per setting
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def n_conditions(self) -> int:
        return len(self.centres)

    def assign(self, settings: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Condition 1..k of each row (int64): its nearest centre; ValueError naming the first row too
        far from every centre."""
        x = _settings(settings)
        if len(x) == 0:
            return np.empty(0, dtype=np.int64)
        d = np.abs(x[:, None, :] - self.centres[None, :, :]) / self.scale  # (n, k, 3)
        dist = d.max(axis=2)
        nearest = dist.argmin(axis=1)
        best = dist[np.arange(len(x)), nearest]
        far = np.flatnonzero(best > self.tolerance)
        if len(far):
            i = int(far[0])
            raise ValueError(
                f"row {i}: settings {x[i].tolist()} match no fitted operating condition "
                f"(nearest {nearest[i] + 1} at {best[i]:.3g} > tolerance {self.tolerance}; "
                f"{len(far)} such rows)"
            )
        return (nearest + 1).astype(np.int64)


def fit_conditions(
    settings: np.ndarray | Sequence[Sequence[float]], tolerance: float = DEFAULT_TOLERANCE
) -> ConditionMap:
    """Cluster training settings into operating conditions (see the module docstring)."""
    x = _settings(settings)
    if len(x) == 0:
        raise ValueError("no rows to fit operating conditions on")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    keys = np.stack([np.round(x[:, j], ROUNDING[j]) for j in range(3)], axis=1) + 0.0  # -0.0 -> 0.0
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)  # sorted lexicographically
    inverse = inverse.reshape(-1)
    centres = np.stack([x[inverse == i].mean(axis=0) for i in range(len(uniq))])
    # Distance unit per setting: the rounding step, or the smallest gap between distinct centres when
    # larger (so a noisy row still lands on its own cluster and a row halfway between two is refused).
    steps = np.array([10.0**-r for r in ROUNDING])
    scale = steps.copy()
    for j in range(3):
        vals = np.unique(np.round(centres[:, j], ROUNDING[j]))
        if len(vals) > 1:
            scale[j] = max(steps[j], float(np.min(np.diff(vals))))
    LOG.debug("fitted %d operating conditions on %d rows", len(centres), len(x))
    return ConditionMap(centres=centres, scale=scale, tolerance=tolerance)


def frame_settings(frame: pd.DataFrame) -> np.ndarray:
    """(n, 3) settings of a frame of table rows."""
    missing = [c for c in SETTING_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    return frame[list(SETTING_COLUMNS)].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class ConditionScaler:
    """Per-condition z-score of ``columns``, fitted on training rows; conditions from ``conditions``."""

    conditions: ConditionMap
    columns: tuple[str, ...]
    scaler: lab.Scaler

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: Sequence[str], conditions: ConditionMap | None = None
    ) -> ConditionScaler:
        """Fit the condition map (unless given) and the per-condition statistics on training rows."""
        cmap = conditions or fit_conditions(frame_settings(frame))
        cond = cmap.assign(frame_settings(frame))
        x = _columns(frame, columns)
        return cls(cmap, tuple(columns), lab.fit_zscore(x, cond))

    def transform_values(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, len(columns)) normalised values of ``frame``'s rows."""
        cond = self.conditions.assign(frame_settings(frame))
        return self.scaler.transform(_columns(frame, self.columns), cond)

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with ``columns`` normalised."""
        out = frame.copy()
        out[list(self.columns)] = self.transform_values(frame)
        return out


def _columns(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    return frame[list(columns)].to_numpy(dtype=np.float64)


#: Names of the columns :func:`condition_features` returns for k conditions, in order.
def condition_feature_names(k: int) -> tuple[str, ...]:
    return (
        tuple(f"condition {i}" for i in range(1, k + 1))
        + tuple(f"cycles in condition {i}" for i in range(1, k + 1))
        + ("cycles since condition change",)
    )


def condition_features(units: np.ndarray, conditions: np.ndarray, k: int) -> np.ndarray:
    """(n, 2k + 1) float64 per row, rows in unit-contiguous cycle order: one-hot of the row's condition,
    the cycles spent so far (this row included) in each condition, and the cycles since the condition
    last changed (1 on a row whose condition differs from the previous row of its unit)."""
    units = np.asarray(units)
    cond = np.asarray(conditions, dtype=np.int64)
    if units.ndim != 1 or cond.shape != units.shape:
        raise ValueError(f"units and conditions must be 1-D of one length, got {units.shape}, {cond.shape}")
    if len(cond) and (cond.min() < 1 or cond.max() > k):
        raise ValueError(f"conditions must be 1..{k}, got {cond.min()}..{cond.max()}")
    n = len(cond)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), cond - 1] = 1.0
    hist = np.zeros((n, k))
    since = np.zeros(n)
    for start, stop in lab._unit_runs(units):
        hist[start:stop] = np.cumsum(onehot[start:stop], axis=0)
        c = cond[start:stop]
        change = np.r_[True, c[1:] != c[:-1]]
        idx = np.arange(stop - start)
        last_change = np.maximum.accumulate(np.where(change, idx, 0))
        since[start:stop] = idx - last_change + 1
    return np.concatenate([onehot, hist, since[:, None]], axis=1)
