"""RUL labels, preprocessing, windows and metrics: on the real files and as properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.datasets import cmapss
from enginehub.datasets import labels as L
from enginehub.datasets.schema import Row

# subset: test units < 30 cycles, shortest test unit, true RUL range, units with true RUL > 125,
# and the capped "oracle" RMSE / score for caps 125 and 130 -- docs/cmapss.md sections 1 and 3.
DOC = {
    "FD001": (0, 31, (7, 145), 11, (3.74, 14.6), (2.40, 7.0)),
    "FD002": (6, 21, (6, 194), 57, (18.32, 2010), (16.31, 1351)),
    "FD003": (0, 38, (6, 145), 15, (4.71, 22.7), (3.19, 11.2)),
    "FD004": (11, 19, (6, 195), 67, (19.53, 2130), (17.35, 1430)),
}


@pytest.fixture(scope="module", params=list(DOC))
def subset(request: pytest.FixtureRequest, cmapss_dir: Path) -> cmapss.Subset:
    return cmapss.load_subset(request.param, cmapss_dir)


def test_test_windows_padding_and_oracle_metrics(subset: cmapss.Subset) -> None:
    short, shortest, rul_range, over_125, oracle125, oracle130 = DOC[subset.name]
    units, cycles = L.rows_arrays(subset.test)
    x = L.sensor_matrix(subset.test)
    w = L.last_windows(x, units, cycles=cycles)
    assert len(w) == subset.test_units and w.padded_units == short
    assert w.x.shape == (subset.test_units, 30, 14)
    assert int((~w.mask).any(axis=1).sum()) == short
    assert 30 - int(w.mask.sum(axis=1).min()) == max(0, 30 - shortest)
    assert np.array_equal(w.units, np.arange(1, subset.test_units + 1))
    assert np.array_equal(w.cycles, [L.last_cycles(subset.test)[u] for u in range(1, subset.test_units + 1)])
    assert len(L.last_windows(x, units, pad="skip")) == subset.test_units - short
    assert L.last_windows(x, units, length=shortest).padded_units == 0
    assert L.last_windows(x, units, length=shortest + 1).padded_units >= 1
    rul = np.array(subset.rul)
    assert (rul.min(), rul.max()) == rul_range and int((rul > 125).sum()) == over_125
    for cap, (want_rmse, want_score) in ((125, oracle125), (130, oracle130)):
        oracle = L.capped(rul, cap)
        assert L.rmse(oracle, rul) == pytest.approx(want_rmse, abs=0.005)
        assert L.phm08_score(oracle, rul) == pytest.approx(want_score, abs=0.5)


def test_train_labels_and_windows(subset: cmapss.Subset) -> None:
    y = L.rul_train(subset.train)
    lengths = cmapss.unit_lengths(subset.train)
    units, cycles = L.rows_arrays(subset.train)
    assert y.max() == 125 and y.min() == 0
    assert int((y == 0).sum()) == subset.train_units  # RUL 0 at each unit's last row
    assert np.array_equal(
        L.rul_train(subset.train, cap=None), [lengths[u] - c for u, c in zip(units, cycles, strict=True)]
    )
    w = L.sliding_windows(L.sensor_matrix(subset.train, (2, 11)), units, y, cycles)  # 2 sensors: small x
    assert len(w) == sum(n - 29 for n in lengths.values()) and w.padded_units == 0  # lives >= 128
    i = len(w) // 2
    assert w.y[i] == y[np.flatnonzero((units == w.units[i]) & (cycles == w.cycles[i]))[0]]


# subset: unit 1's train life, its number of test cycles, its true RUL after the last test cycle.
UNIT1 = {"FD001": (192, 31, 112), "FD002": (149, 258, 18), "FD003": (259, 233, 44), "FD004": (321, 230, 22)}


def test_unit1_label_values(subset: cmapss.Subset) -> None:
    life, test_cycles, true_rul = UNIT1[subset.name]
    assert L.rul_train(subset.train, cap=None)[0] == life - 1  # RUL 0 at the failure cycle
    assert L.rul_train(subset.train)[0] == min(life - 1, 125)
    assert L.rul_train(subset.train, cap=130)[0] == min(life - 1, 130)
    yt = L.rul_test(subset.test, subset.rul)
    assert yt[test_cycles - 1] == true_rul and yt[0] == true_rul + test_cycles - 1
    assert L.rul_test(subset.test, subset.rul, cap=125)[0] == min(125, true_rul + test_cycles - 1)


# subset: exactly constant sensors, <= 2 values, constant within each condition, <= 3 values per condition,
# rows per operating condition (docs/cmapss.md sections 1 and 2).
SENSORS = {
    "FD001": ((1, 5, 10, 16, 18, 19), (1, 5, 6, 10, 16, 18, 19), None, None, [20631]),
    "FD002": ((), (16, 19), (1, 5, 18, 19), (1, 5, 6, 10, 16, 18, 19), [8044, 8096, 8122, 8002, 8037, 13458]),
    "FD003": ((1, 5, 16, 18, 19), (1, 5, 16, 18, 19), None, None, [24720]),
    "FD004": ((), (16, 19), (1, 5, 18, 19), (1, 5, 16, 18, 19), [9238, 9224, 9091, 9139, 9162, 15395]),
}


def test_constant_sensors_and_conditions(subset: cmapss.Subset) -> None:
    exact, two, per_condition, three_per_condition, counts = SENSORS[subset.name]
    assert L.constant_sensors(subset.train) == exact
    assert L.constant_sensors(subset.train, max_distinct=2) == two
    if per_condition is not None:
        assert L.constant_sensors(subset.train, by_condition=True) == per_condition
        assert L.constant_sensors(subset.train, max_distinct=3, by_condition=True) == three_per_condition
    if subset.name == "FD001":
        assert set(L.DEFAULT_SENSORS) == set(range(1, 22)) - set(two)
    assert np.bincount(L.operating_conditions(subset.train))[1:].tolist() == counts


def test_zscore_fitted_on_train_per_condition(subset: cmapss.Subset) -> None:
    per_condition = len(SENSORS[subset.name][4]) == 6
    x = L.sensor_matrix(subset.train, range(1, 22))
    cond = L.operating_conditions(subset.train) if per_condition else None
    scaler = L.fit_zscore(x, cond)
    z = scaler.transform(x, cond)
    assert np.all(np.isfinite(z))
    for c in np.unique(cond) if cond is not None else [None]:
        part = z if c is None else z[cond == c]
        assert np.allclose(part.mean(axis=0), 0, atol=1e-6)
        assert np.allclose(part.std(axis=0)[[j - 1 for j in L.DEFAULT_SENSORS]], 1.0)
        assert np.all(part[:, [0, 4, 18 - 1]] == 0)  # constant (per condition) -> 0, not NaN
    test_cond = L.operating_conditions(subset.test) if per_condition else None
    zt = scaler.transform(L.sensor_matrix(subset.test, range(1, 22)), test_cond)
    assert np.all(np.isfinite(zt)) and abs(float(zt[:, 1].mean())) < 0.5  # train statistics apply to test


def test_minmax_maps_train_range_to_minus_one_one() -> None:
    x = np.array([[0.0, 5.0, 2.0], [10.0, 5.0, 4.0], [5.0, 5.0, 3.0]])
    s = L.fit_minmax(x)
    assert isinstance(s, L.Scaler) and s.conditions == (0,) and s.shift == -1.0
    out = s.transform(x)
    assert out[:, 0].tolist() == [-1.0, 1.0, 0.0] and out[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert s.transform(np.array([[20.0, 7.0, 2.0]])).tolist() == [[3.0, 0.0, -1.0]]
    per = L.fit_minmax(x, np.array([1, 1, 2]))
    assert per.transform(x, np.array([1, 1, 2]))[:, 0].tolist() == [-1.0, 1.0, 0.0]


def test_scaler_errors() -> None:
    x = np.ones((4, 2))
    per = L.fit_zscore(x, np.array([1, 1, 2, 2]))
    with pytest.raises(ValueError, match="pass the rows' conditions"):
        per.transform(x)
    with pytest.raises(ValueError, match=r"conditions \[3\] were not seen"):
        per.transform(x, np.array([1, 2, 3, 1]))
    with pytest.raises(ValueError, match="conditions for 4 rows"):
        per.transform(x, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"expected \(n, 2\) features"):
        per.transform(np.ones((4, 3)), np.array([1, 1, 2, 2]))
    with pytest.raises(ValueError, match="non-empty"):
        L.fit_zscore(np.empty((0, 2)))
    with pytest.raises(ValueError, match="conditions for 4 rows"):
        L.fit_minmax(x, np.array([1]))


def test_operating_condition_and_sensor_errors() -> None:
    assert (
        L.operating_condition((42.0049, 0.84, 100.0)) == 6 and L.operating_condition((-0.0007, 0, 100)) == 1
    )
    with pytest.raises(ValueError, match="no C-MAPSS operating condition"):
        L.operating_condition((15.0, 0.5, 100.0))
    with pytest.raises(ValueError, match="sensor numbers are 1..21"):
        L.sensor_matrix([], (0, 2))
    assert L.sensor_matrix([], (2, 3)).shape == (0, 2)
    with pytest.raises(ValueError, match="max_distinct"):
        L.constant_sensors([], 0)
    with pytest.raises(ValueError, match="no rows"):
        L.constant_sensors([])


def test_label_errors() -> None:
    rows = [Row(1, c, (0.0, 0.0, 100.0), (1.0,) * 21) for c in (1, 2)] + [
        Row(2, 1, (0.0, 0.0, 100.0), (1.0,) * 21)
    ]
    with pytest.raises(ValueError, match="units up to 2 but 1 RUL values"):
        L.rul_test(rows, [5])
    with pytest.raises(ValueError, match="cap must be >= 0"):
        L.rul_train(rows, cap=-1)
    assert L.rul_train(rows).tolist() == [1, 0, 0]
    assert L.rul_test(rows, [5, 7]).tolist() == [6, 5, 7]
    assert L.capped([1.0, 200.0], None).tolist() == [1.0, 200.0]


# ---------------------------------------------------------------- windows as properties


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(
    st.lists(st.integers(1, 12), min_size=1, max_size=6),
    st.integers(1, 8),
    st.integers(1, 3),
    st.sampled_from(["repeat", "zero", "skip"]),
)
def test_window_counts_and_contents(lengths: list[int], length: int, stride: int, pad: str) -> None:
    units = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    cycles = np.concatenate([np.arange(1, n + 1) for n in lengths])
    x = np.c_[units * 100 + cycles, -cycles].astype(float)
    y = cycles * 2.0
    w = L.sliding_windows(x, units, y, cycles, length=length, stride=stride, pad=pad)  # type: ignore[arg-type]
    short = sum(n < length for n in lengths)
    full = sum((n - length) // stride + 1 for n in lengths if n >= length)
    assert w.padded_units == (0 if pad == "skip" else short)
    assert len(w) == full + w.padded_units and w.x.shape == (len(w), length, 2)
    for i in range(len(w)):
        real = w.x[i][w.mask[i]]
        assert real[-1, 0] == w.units[i] * 100 + w.cycles[i] and w.y[i] == 2 * w.cycles[i]
        assert np.array_equal(np.diff(real[:, 0]), np.ones(len(real) - 1))  # consecutive cycles of one unit
        if not w.mask[i].all():
            fill = w.x[i][~w.mask[i]]
            assert np.all(fill == (real[0] if pad == "repeat" else 0.0))
    last = L.last_windows(x, units, y, cycles, length=length, pad=pad)  # type: ignore[arg-type]
    assert len(last) == len(lengths) - (short if pad == "skip" else 0)
    assert all(
        c == n for c, n in zip(last.cycles, [n for n in lengths if pad != "skip" or n >= length], strict=True)
    )


def test_window_errors() -> None:
    x, units = np.zeros((4, 2)), np.array([1, 1, 2, 1])
    with pytest.raises(ValueError, match="not unit-contiguous"):
        L.sliding_windows(x, units)
    with pytest.raises(ValueError, match="length and stride must be >= 1"):
        L.sliding_windows(x, np.array([1, 1, 2, 2]), length=0)
    with pytest.raises(ValueError, match="pad must be"):
        L.last_windows(x, np.array([1, 1, 2, 2]), pad="mirror")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one unit id per row"):
        L.sliding_windows(x, np.array([1, 1]))
    with pytest.raises(ValueError, match="one entry per row"):
        L.sliding_windows(x, np.array([1, 1, 2, 2]), y=np.zeros(3))
    empty = L.sliding_windows(np.empty((0, 3)), np.array([], dtype=int))
    assert isinstance(empty, L.Windows) and len(empty) == 0
    assert empty.x.shape == (0, 30, 3) and empty.padded_units == 0


# ---------------------------------------------------------------- metrics


def test_metric_reference_values() -> None:
    e = math.e - 1
    assert L.phm08_score([-13.0], [0.0]) == pytest.approx(e) and L.phm08_score(
        [10.0], [0.0]
    ) == pytest.approx(e)
    assert L.phm08_score([90.0, 110.0], [100.0, 100.0]) == pytest.approx(2.876387, abs=1e-6)
    assert L.phm08_score([5.0], [5.0]) == 0.0
    assert L.phm08_terms([0.0, 20.0], [10.0, 10.0]).tolist() == pytest.approx([math.expm1(10 / 13), e])
    assert L.rmse([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert L.rmse([0.0, 0.0], [3.0, -4.0]) == pytest.approx(math.sqrt(12.5))


@settings(deadline=None)  # shared CI cores: no per-example time limit
@given(st.lists(st.floats(-200, 200), min_size=1, max_size=20), st.floats(0.1, 50))
def test_late_costs_more_than_early(errors: list[float], shift: float) -> None:
    true = np.zeros(len(errors))
    d = np.abs(errors) + shift
    assert L.phm08_score(d, true) > L.phm08_score(-d, true) > 0
    assert L.rmse(d, true) == pytest.approx(L.rmse(-d, true))


@pytest.mark.parametrize(
    ("pred", "true", "message"),
    [([1.0], [1.0, 2.0], "same length"), ([], [], "no predictions"), ([math.nan], [1.0], "finite")],
)
def test_metric_errors(pred: list[float], true: list[float], message: str) -> None:
    for metric in (L.rmse, L.phm08_score):
        with pytest.raises(ValueError, match=message):
            metric(pred, true)


def test_prepare_runs_the_standard_protocol(subset: cmapss.Subset) -> None:
    short = DOC[subset.name][0]
    sensors = (2, 7, 11)  # three of the 14: the same code path at a fifth of the memory
    p = L.prepare(subset.train, subset.test, subset.rul, sensors=sensors)
    lengths = cmapss.unit_lengths(subset.train)
    assert isinstance(p, L.Prepared) and p.sensors == sensors and p.cap == 125
    assert p.per_condition is (subset.name in ("FD002", "FD004"))
    assert p.train.x.shape == (sum(n - 29 for n in lengths.values()), 30, 3) and p.train.y.max() == 125
    assert p.test.x.shape == (subset.test_units, 30, 3) and p.test.padded_units == short
    assert np.array_equal(p.test.y, subset.rul)  # the raw true RUL at the last test cycle
    # Statistics come from train only: refitting on train gives the same scaler.
    x = L.sensor_matrix(subset.train, sensors)
    refit = L.fit_zscore(x, L.operating_conditions(subset.train) if p.per_condition else None)
    assert np.array_equal(refit.offset, p.scaler.offset) and np.array_equal(refit.scale, p.scaler.scale)
    assert abs(float(p.train.x[:, -1, :].mean())) < 0.5 and np.all(np.isfinite(p.test.x))


def test_prepare_options_and_errors(cmapss_dir: Path) -> None:
    train = cmapss.read_rows(cmapss_dir / "train_FD001.txt")[:600]
    test = cmapss.read_rows(cmapss_dir / "test_FD001.txt")[:200]
    rul = cmapss.read_rul(cmapss_dir / "RUL_FD001.txt")
    p = L.prepare(train, test, rul, sensors=(2, 3), cap=None, length=10, scaling="minmax")
    assert p.train.x.shape[1:] == (10, 2) and p.train.x.min() >= -1.0 and p.train.x.max() <= 1.0
    assert p.train.y.max() > 125 and p.test.padded_units == 0 and not p.per_condition
    forced = L.prepare(train, test, rul, per_condition=True)
    assert forced.per_condition and forced.scaler.conditions == (1,)
    assert forced.sensors == L.DEFAULT_SENSORS and forced.train.x.shape[1:] == (30, 14)
    with pytest.raises(ValueError, match="scaling must be"):
        L.prepare(train, test, rul, scaling="robust")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train and test rows are both needed"):
        L.prepare(train, [], rul)
