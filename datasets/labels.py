"""RUL labels, sliding windows, the standard C-MAPSS preprocessing and the metrics (docs/cmapss.md 3-4).

All pure functions over `Row` lists and numpy arrays (numpy is the only dependency beyond the standard
library); rows must be in file order (unit-contiguous, cycles ascending), as `cmapss` and `synthetic`
give them.

- Labels: RUL_t = min(T_fail - t, R_max) with T_fail the unit's last training cycle (RUL 0 at the last
  row) and R_max = 125 by default (130 in Zheng et al. 2017). For test rows the RUL after the last
  cycle of unit u is the u-th line of RUL_FD00x.
- Sensors: the usual 14 (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21); `constant_sensors` measures
  which are (near-)constant, globally or within each operating condition.
- Operating conditions: setting 1 rounded to the nearest integer is 0, 10, 20, 25, 35 or 42 (kft) for
  conditions 1..6.
- Normalisation: z-score or min-max to [-1, 1], fitted on train only, globally or per operating
  condition (Babu et al. 2016 Eq. 3); a column with zero spread maps to 0 instead of dividing by zero.
- Windows: length N_tw = 30, stride 1 over each training unit, labelled with the RUL at their last
  cycle; at test time the last 30 cycles of each unit. Units shorter than the window are padded (repeat
  the first row, or zeros) and counted in `Windows.padded_units`; `mask` marks the real cycles.
- Metrics, with d_i = pred_i - true_i at the last test cycle: RMSE = sqrt(mean(d^2)); PHM08 score
  S = sum(exp(-d/13) - 1 if d < 0 else exp(d/10) - 1) (a sum; lower is better; late costs more).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from enginehub.datasets.schema import N_SENSORS, Row

LOG = logging.getLogger(__name__)

DEFAULT_CAP = 125
DEFAULT_WINDOW = 30
#: The 14 sensors most papers keep (drop 1, 5, 6, 10, 16, 18, 19).
DEFAULT_SENSORS: tuple[int, ...] = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
#: Rounded setting 1 (kft) of operating conditions 1..6.
CONDITION_ALTITUDES: tuple[int, ...] = (0, 10, 20, 25, 35, 42)
_CONDITION_OF = {alt: i for i, alt in enumerate(CONDITION_ALTITUDES, 1)}


# ---------------------------------------------------------------- labels


def _unit_runs(units: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of consecutive equal unit ids."""
    if units.ndim != 1:
        raise ValueError(f"units must be 1-D, got shape {units.shape}")
    if len(units) == 0:
        return []
    bounds = np.flatnonzero(np.r_[True, units[1:] != units[:-1], True])
    runs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    if len(runs) != len(set(units.tolist())):
        raise ValueError("rows are not unit-contiguous: a unit appears in two separate runs")
    return runs


def _check_cap(cap: int | None) -> None:
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be >= 0 or None, got {cap}")


def last_cycles(rows: Iterable[Row]) -> dict[int, int]:
    """{unit: its last cycle}."""
    out: dict[int, int] = {}
    for r in rows:
        out[r.unit] = max(r.cycle, out.get(r.unit, 0))
    return out


def rul_train(rows: Sequence[Row], cap: int | None = DEFAULT_CAP) -> np.ndarray:
    """Piecewise-linear RUL of run-to-failure rows: min(last cycle of the unit - cycle, cap); int64."""
    _check_cap(cap)
    last = last_cycles(rows)
    rul = np.array([last[r.unit] - r.cycle for r in rows], dtype=np.int64)
    return rul if cap is None else np.minimum(rul, cap)


def rul_test(rows: Sequence[Row], rul: Sequence[int], cap: int | None = None) -> np.ndarray:
    """RUL of every test row: rul[u - 1] + (last cycle of u - cycle), optionally capped; int64.

    `rul` is the RUL_FD00x list (one per test unit, in unit order); uncapped by default because the
    protocol scores against the raw test RUL (docs/cmapss.md section 3).
    """
    _check_cap(cap)
    last = last_cycles(rows)
    if last and (min(last) < 1 or max(last) > len(rul)):
        raise ValueError(f"test rows have units up to {max(last)} but {len(rul)} RUL values were given")
    out = np.array([rul[r.unit - 1] + last[r.unit] - r.cycle for r in rows], dtype=np.int64)
    return out if cap is None else np.minimum(out, cap)


def capped(values: Sequence[float] | np.ndarray, cap: int | None = DEFAULT_CAP) -> np.ndarray:
    """min(values, cap) as float64 (e.g. to cap the true test RUL under the capped-test protocol)."""
    _check_cap(cap)
    arr = np.asarray(values, dtype=np.float64)
    return arr if cap is None else np.minimum(arr, cap)


# ---------------------------------------------------------------- operating conditions and sensors


def operating_condition(settings: Sequence[float]) -> int:
    """Condition 1..6 of one row's settings: setting 1 rounded is 0, 10, 20, 25, 35 or 42 (kft)."""
    altitude = round(settings[0])
    try:
        return _CONDITION_OF[altitude]
    except KeyError:
        raise ValueError(
            f"setting 1 = {settings[0]!r} is no C-MAPSS operating condition (expected about "
            f"{', '.join(map(str, CONDITION_ALTITUDES))})"
        ) from None


def operating_conditions(rows: Iterable[Row]) -> np.ndarray:
    """The condition (1..6) of every row; int64."""
    return np.array([operating_condition(r.settings) for r in rows], dtype=np.int64)


def sensor_matrix(rows: Sequence[Row], sensors: Sequence[int] = DEFAULT_SENSORS) -> np.ndarray:
    """(n_rows, len(sensors)) float64 of the chosen sensors (1-based numbers, in the given order)."""
    for s in sensors:
        if not 1 <= s <= N_SENSORS:
            raise ValueError(f"sensor numbers are 1..{N_SENSORS}, got {s}")
    idx = [s - 1 for s in sensors]
    if not rows:
        return np.empty((0, len(idx)))
    return np.array([r.sensors for r in rows], dtype=np.float64)[:, idx]


def constant_sensors(
    rows: Sequence[Row], max_distinct: int = 1, by_condition: bool = False
) -> tuple[int, ...]:
    """Sensor numbers with at most `max_distinct` distinct values (within every condition if `by_condition`).

    FD001: (1, 5, 10, 16, 18, 19) are exactly constant; with max_distinct=2 sensor 6 joins (21.60/21.61).
    FD002/FD004 by condition: 1, 5, 18, 19 are constant; 6, 10, 16 take at most 3 values.
    """
    if max_distinct < 1:
        raise ValueError(f"max_distinct must be >= 1, got {max_distinct}")
    if not rows:
        raise ValueError("no rows")
    x = np.array([r.sensors for r in rows], dtype=np.float64)
    groups = operating_conditions(rows) if by_condition else np.zeros(len(rows), dtype=np.int64)
    out = []
    for j in range(N_SENSORS):
        if all(len(np.unique(x[groups == g, j])) <= max_distinct for g in np.unique(groups)):
            out.append(j + 1)
    return tuple(out)


# ---------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Scaler:
    """Column statistics fitted on train: y = (x - offset[c]) / scale[c] (+ shift), c the row's condition.

    `conditions` lists the condition ids the statistics were fitted for (a single 0 when global).
    """

    conditions: tuple[int, ...]
    offset: np.ndarray  # (n_conditions, n_features)
    scale: np.ndarray  # (n_conditions, n_features); 1 where the fitted spread was 0
    shift: float = 0.0
    zero_spread: np.ndarray | None = None  # (n_conditions, n_features) bool: columns mapped to 0

    def transform(self, x: np.ndarray, conditions: np.ndarray | None = None) -> np.ndarray:
        """Apply the fitted statistics; per-condition scalers need the rows' conditions."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.offset.shape[1]:
            raise ValueError(f"expected (n, {self.offset.shape[1]}) features, got shape {x.shape}")
        index = self._index(len(x), conditions)
        out: np.ndarray = (x - self.offset[index]) / self.scale[index] + self.shift
        if self.zero_spread is not None:
            out[self.zero_spread[index]] = 0.0
        return out

    def _index(self, n: int, conditions: np.ndarray | None) -> np.ndarray:
        if self.conditions == (0,):
            return np.zeros(n, dtype=np.int64)
        if conditions is None:
            raise ValueError("this scaler was fitted per operating condition: pass the rows' conditions")
        conditions = np.asarray(conditions)
        if conditions.shape != (n,):
            raise ValueError(f"{conditions.shape} conditions for {n} rows")
        lookup = {c: i for i, c in enumerate(self.conditions)}
        unknown = sorted(set(conditions.tolist()) - set(lookup))
        if unknown:
            raise ValueError(
                f"conditions {unknown} were not seen when fitting (fitted: {list(self.conditions)})"
            )
        return np.array([lookup[c] for c in conditions.tolist()], dtype=np.int64)


def _groups(x: np.ndarray, conditions: np.ndarray | None) -> tuple[tuple[int, ...], list[np.ndarray]]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (n, features) array, got shape {x.shape}")
    if conditions is None:
        return (0,), [x]
    conditions = np.asarray(conditions)
    if conditions.shape != (len(x),):
        raise ValueError(f"{conditions.shape} conditions for {len(x)} rows")
    ids = tuple(int(c) for c in np.unique(conditions))
    return ids, [x[conditions == c] for c in ids]


def fit_zscore(x: np.ndarray, conditions: np.ndarray | None = None) -> Scaler:
    """Z-score statistics (mean, population std) per column, per condition when `conditions` is given."""
    ids, parts = _groups(x, conditions)
    mean = np.stack([p.mean(axis=0) for p in parts])
    std = np.stack([p.std(axis=0) for p in parts])
    zero = np.stack([np.ptp(p, axis=0) == 0 for p in parts])  # std of a constant column can be 1e-15
    return Scaler(ids, mean, np.where(zero, 1.0, std), 0.0, zero)


def fit_minmax(x: np.ndarray, conditions: np.ndarray | None = None) -> Scaler:
    """Min-max statistics mapping each column's train range to [-1, 1] (per condition when given)."""
    ids, parts = _groups(x, conditions)
    lo = np.stack([p.min(axis=0) for p in parts])
    hi = np.stack([p.max(axis=0) for p in parts])
    span = hi - lo
    zero = span == 0
    return Scaler(ids, lo, np.where(zero, 1.0, span / 2.0), -1.0, zero)


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """Samples for a sequence model: x[i] is (length, n_features) ending at cycle `cycles[i]` of `units[i]`.

    `y[i]` is the label at that last cycle (NaN without labels); `mask[i]` is False on padded steps;
    `padded_units` counts the units shorter than the window (padded to one window each).
    """

    x: np.ndarray  # (n, length, n_features) float64
    y: np.ndarray  # (n,) float64
    units: np.ndarray  # (n,) int64
    cycles: np.ndarray  # (n,) int64
    mask: np.ndarray  # (n, length) bool
    padded_units: int

    def __len__(self) -> int:
        return len(self.units)


def window_index(
    units: np.ndarray,
    length: int = DEFAULT_WINDOW,
    stride: int = 1,
    last_only: bool = False,
    pad: Literal["repeat", "zero", "skip"] = "repeat",
) -> tuple[np.ndarray, int]:
    """The windows of :func:`sliding_windows` / :func:`last_windows` as row indices, without the gather:
    ((n_windows, length) int64 matrix, padded-unit count). Index ``len(units)`` stands for a zero row
    (``pad="zero"``); ``x_padded[index]`` with ``x_padded = np.vstack([x, zeros((1, F))])`` gives the
    windows (a sequence model gathers its batches this way instead of holding every window in memory)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length} and {stride}")
    if pad not in ("repeat", "zero", "skip"):
        raise ValueError(f"pad must be 'repeat', 'zero' or 'skip', got {pad!r}")
    units = np.asarray(units)
    offsets = np.arange(length, dtype=np.int64)
    blocks: list[np.ndarray] = []
    padded = 0
    for start, stop in _unit_runs(units):
        n = stop - start
        if n < length:
            if pad == "skip":
                continue
            padded += 1
            fill = start if pad == "repeat" else len(units)
            blocks.append(np.r_[np.full(length - n, fill, dtype=np.int64), np.arange(start, stop)][None, :])
            continue
        starts = np.array([stop - length]) if last_only else np.arange(start, stop - length + 1, stride)
        blocks.append(starts[:, None] + offsets)
    index = np.concatenate(blocks) if blocks else np.empty((0, length), dtype=np.int64)
    return index, padded


def _windows(
    x: np.ndarray,
    units: np.ndarray,
    cycles: np.ndarray | None,
    y: np.ndarray | None,
    length: int,
    stride: int,
    last_only: bool,
    pad: Literal["repeat", "zero", "skip"],
) -> Windows:
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length} and {stride}")
    if pad not in ("repeat", "zero", "skip"):
        raise ValueError(f"pad must be 'repeat', 'zero' or 'skip', got {pad!r}")
    x = np.asarray(x, dtype=np.float64)
    units = np.asarray(units)
    if x.ndim != 2 or len(x) != len(units):
        raise ValueError(f"x must be (n, features) with one unit id per row: {x.shape} vs {units.shape}")
    cyc = np.arange(len(x)) if cycles is None else np.asarray(cycles)
    lab = np.full(len(x), np.nan) if y is None else np.asarray(y, dtype=np.float64)
    if cyc.shape != units.shape or lab.shape != units.shape:
        raise ValueError(f"cycles/labels must have one entry per row ({len(units)})")
    # One (n_windows, length) matrix of row indices, then a single gather; index len(x) is a zero row.
    index, padded = window_index(units, length, stride, last_only, pad)
    ends = index[:, -1]
    # Padding steps: the zero row, or a repeated first row (equal to the next step's index).
    mask = index != len(x)
    mask[:, :-1] &= index[:, :-1] != index[:, 1:]
    padded_x = np.vstack([x, np.zeros((1, x.shape[1]))])
    return Windows(
        x=padded_x[index],
        y=lab[ends],
        units=units[ends].astype(np.int64),
        cycles=cyc[ends].astype(np.int64),
        mask=mask,
        padded_units=padded,
    )


def sliding_windows(
    x: np.ndarray,
    units: np.ndarray,
    y: np.ndarray | None = None,
    cycles: np.ndarray | None = None,
    length: int = DEFAULT_WINDOW,
    stride: int = 1,
    pad: Literal["repeat", "zero", "skip"] = "repeat",
) -> Windows:
    """All windows of `length` rows (stride `stride`) inside each unit, labelled with `y` at their last row.

    A unit with n >= length rows gives floor((n - length) / stride) + 1 windows; a shorter one gives one
    padded window ("repeat" its first row or "zero"; counted in padded_units) or none with pad="skip".
    """
    return _windows(x, units, cycles, y, length, stride, False, pad)


def last_windows(
    x: np.ndarray,
    units: np.ndarray,
    y: np.ndarray | None = None,
    cycles: np.ndarray | None = None,
    length: int = DEFAULT_WINDOW,
    pad: Literal["repeat", "zero", "skip"] = "repeat",
) -> Windows:
    """The last `length` rows of each unit (the test protocol: one sample per unit), short units padded."""
    return _windows(x, units, cycles, y, length, 1, True, pad)


def rows_arrays(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """(units, cycles) of the rows as int64 arrays, to pass next to a feature matrix."""
    return (
        np.array([r.unit for r in rows], dtype=np.int64),
        np.array([r.cycle for r in rows], dtype=np.int64),
    )


# ---------------------------------------------------------------- metrics


def _diff(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"pred and true must be 1-D of the same length, got {p.shape} and {t.shape}")
    if len(p) == 0:
        raise ValueError("no predictions")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("pred and true must be finite")
    return p - t


def rmse(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """sqrt(mean((pred - true)^2))."""
    d = _diff(pred, true)
    return math.sqrt(float(np.mean(d * d)))


def phm08_terms(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-unit PHM08 penalties s_i: exp(-d/13) - 1 if d < 0 (early), exp(d/10) - 1 if d >= 0 (late)."""
    d = _diff(pred, true)
    return np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))


def phm08_score(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> float:
    """PHM08 score S = sum of `phm08_terms` (Saxena et al. 2008 eq. 11): a sum over units, lower is better."""
    return float(np.sum(phm08_terms(pred, true)))


# ---------------------------------------------------------------- the whole standard protocol


@dataclass(frozen=True)
class Prepared:
    """A subset ready for a sequence model: train windows (capped RUL labels), one test window per unit
    (labelled with the raw true RUL), and the scaler fitted on train."""

    train: Windows
    test: Windows
    scaler: Scaler
    sensors: tuple[int, ...]
    per_condition: bool
    cap: int | None


def prepare(
    train: Sequence[Row],
    test: Sequence[Row],
    rul: Sequence[int],
    sensors: Sequence[int] = DEFAULT_SENSORS,
    cap: int | None = DEFAULT_CAP,
    length: int = DEFAULT_WINDOW,
    per_condition: bool | None = None,
    scaling: Literal["zscore", "minmax"] = "zscore",
) -> Prepared:
    """docs/cmapss.md section 3 in one call: keep `sensors`, normalise with statistics fitted on train
    only (per operating condition when the train rows span several conditions, unless `per_condition`
    says otherwise), window train units (stride 1, label = capped RUL at the last cycle) and take the
    last `length` cycles of each test unit (short units padded by repeating their first row; counted in
    `test.padded_units`), labelled with the raw RUL from RUL_FD00x (cap it with `capped` if wanted).
    """
    if scaling not in ("zscore", "minmax"):
        raise ValueError(f"scaling must be 'zscore' or 'minmax', got {scaling!r}")
    if not train or not test:
        raise ValueError("train and test rows are both needed")
    x_train, x_test = sensor_matrix(train, sensors), sensor_matrix(test, sensors)
    c_train = operating_conditions(train)
    if per_condition is None:
        per_condition = len(np.unique(c_train)) > 1
    c_test = operating_conditions(test) if per_condition else None
    fit = fit_zscore if scaling == "zscore" else fit_minmax
    scaler = fit(x_train, c_train if per_condition else None)
    units_train, cycles_train = rows_arrays(train)
    units_test, cycles_test = rows_arrays(test)
    train_windows = sliding_windows(
        scaler.transform(x_train, c_train if per_condition else None),
        units_train,
        rul_train(train, cap).astype(np.float64),
        cycles_train,
        length=length,
    )
    test_windows = last_windows(
        scaler.transform(x_test, c_test),
        units_test,
        rul_test(test, rul).astype(np.float64),
        cycles_test,
        length=length,
    )
    LOG.debug(
        "prepared %d train windows, %d test windows (%d padded)",
        len(train_windows),
        len(test_windows),
        test_windows.padded_units,
    )
    return Prepared(train_windows, test_windows, scaler, tuple(sensors), per_condition, cap)
