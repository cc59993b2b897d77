"""enginehub.datasets.conditions: operating conditions from the settings, per-condition z-score, features."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from enginehub.datasets import conditions as C  # noqa: E402

#: The six FD002/FD004 conditions (docs/cmapss.md section 1), deliberately out of order.
CENTRES = [
    (35.0, 0.84, 100.0),
    (0.0, 0.0, 100.0),
    (42.0, 0.84, 100.0),
    (10.0, 0.25, 100.0),
    (25.0, 0.62, 60.0),
    (20.0, 0.70, 100.0),
]
ORDER = sorted(CENTRES)  # condition i + 1 is ORDER[i]


def noisy(ids: list[int], noise: list[tuple[float, float]]) -> np.ndarray:
    """Settings of the conditions ORDER[id - 1] with noise of the size found in the files."""
    out = []
    for c, (e1, e2) in zip(ids, noise, strict=True):
        a, m, t = ORDER[c - 1]
        out.append((a + e1, m + e2, t))
    return np.asarray(out)


noise_st = st.tuples(st.floats(-0.009, 0.009), st.floats(-0.0009, 0.0009))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), noise_st), min_size=1, max_size=80))
def test_fitted_map_recovers_conditions_numbered_by_altitude(
    rows: list[tuple[int, tuple[float, float]]],
) -> None:
    ids = [c for c, _ in rows]
    x = noisy(ids, [e for _, e in rows])
    cmap = C.fit_conditions(x)
    assert cmap.n_conditions == len(set(ids))
    got = cmap.assign(x)
    # numbering follows the centres' order, so it maps the seen ids monotonically
    seen = sorted(set(ids))
    assert [seen[g - 1] for g in got] == ids


@settings(max_examples=40, deadline=None)
@given(
    st.lists(noise_st, min_size=6, max_size=6), st.lists(st.tuples(st.integers(1, 6), noise_st), max_size=40)
)
def test_rows_of_any_sink_order_get_the_condition_of_their_cluster(
    train_noise: list[tuple[float, float]], test_rows: list[tuple[int, tuple[float, float]]]
) -> None:
    cmap = C.fit_conditions(noisy([1, 2, 3, 4, 5, 6], train_noise))
    test = noisy([c for c, _ in test_rows], [e for _, e in test_rows]) if test_rows else np.empty((0, 3))
    assert cmap.assign(test).tolist() == [c for c, _ in test_rows]
    # permuting the rows permutes the answer (row order, as a sink may return it, does not matter)
    perm = np.random.default_rng(0).permutation(len(test))
    assert cmap.assign(test[perm]).tolist() == [test_rows[i][0] for i in perm]


def test_the_six_conditions_are_numbered_as_in_the_docs() -> None:
    cmap = C.fit_conditions(np.asarray(CENTRES))
    assert cmap.assign(np.asarray(CENTRES)).tolist() == [5, 1, 6, 2, 4, 3]


def test_a_row_between_conditions_or_far_away_is_refused() -> None:
    cmap = C.fit_conditions(np.asarray(CENTRES))
    with pytest.raises(ValueError, match=r"row 1: settings .* match no fitted operating condition"):
        cmap.assign(np.asarray([(0.0, 0.0, 100.0), (15.0, 0.5, 100.0)]))
    with pytest.raises(ValueError, match="no fitted operating condition"):
        cmap.assign(np.asarray([(42.0, 0.84, 80.0)]))  # throttle of no condition
    single = C.fit_conditions(np.asarray([(0.001, 0.0002, 100.0), (-0.002, -0.0003, 100.0)]))
    assert single.n_conditions == 1
    with pytest.raises(ValueError, match="no fitted operating condition"):
        single.assign(np.asarray([(10.0, 0.25, 100.0)]))  # an FD002 row against an FD001 fit


def test_bad_settings_shapes_and_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        C.fit_conditions(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="finite"):
        C.fit_conditions(np.asarray([(0.0, np.nan, 100.0)]))
    with pytest.raises(ValueError, match="no rows"):
        C.fit_conditions(np.empty((0, 3)))
    with pytest.raises(ValueError, match="tolerance"):
        C.fit_conditions(np.zeros((1, 3)), tolerance=0.0)
    with pytest.raises(ValueError, match="lacks columns"):
        C.frame_settings(pd.DataFrame({"setting 1": [0.0]}))


def frame(ids: list[int], units: list[int], sensor: list[float]) -> pd.DataFrame:
    x = np.asarray([ORDER[c - 1] for c in ids])
    cycles = []
    for i, u in enumerate(units):
        cycles.append(1 if i == 0 or units[i - 1] != u else cycles[-1] + 1)
    return pd.DataFrame(
        {
            "unit #": units,
            "cycle #": cycles,
            "setting 1": x[:, 0],
            "setting 2": x[:, 1],
            "setting 3": x[:, 2],
            "sensor 2": sensor,
            "sensor 5": [14.62 if c == 1 else 5.0 for c in ids],  # constant within each condition
        }
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)),
        min_size=2,
        max_size=60,
    )
)
def test_scaler_is_a_z_score_within_each_condition(rows: list[tuple[int, float]]) -> None:
    ids = [c for c, _ in rows]
    train = frame(ids, [1] * len(ids), [v for _, v in rows])
    scaler = C.ConditionScaler.fit(train, ("sensor 2", "sensor 5"))
    out = scaler.transform(train)
    assert (out["sensor 5"] == 0.0).all()  # constant per condition: 0, not a division by zero
    assert out["unit #"].tolist() == train["unit #"].tolist()  # other columns untouched
    groups = scaler.conditions.assign(C.frame_settings(train))
    for g in np.unique(groups):
        block = out["sensor 2"].to_numpy()[groups == g]
        raw = train["sensor 2"].to_numpy()[groups == g]
        if np.ptp(raw) == 0:
            assert (block == 0.0).all()
        elif np.std(raw) > 1e-6 * max(1.0, np.abs(raw).max()):
            assert block.mean() == pytest.approx(0.0, abs=1e-6)
            assert block.std() == pytest.approx(1.0, rel=1e-6)


def test_scaler_uses_train_statistics_and_refuses_unseen_conditions() -> None:
    train = frame([1, 1, 6, 6], [1, 1, 1, 1], [10.0, 20.0, 100.0, 300.0])
    scaler = C.ConditionScaler.fit(train, ("sensor 2",))
    # fitted on 2 conditions only (of six): condition ids 1 and 2 in that fit
    test = frame([6, 1], [7, 7], [200.0, 25.0])
    assert scaler.transform_values(test)[:, 0].tolist() == pytest.approx([0.0, 2.0])
    with pytest.raises(ValueError, match="no fitted operating condition"):
        scaler.transform(frame([3], [1], [1.0]))
    with pytest.raises(ValueError, match="lacks columns"):
        scaler.transform(train.drop(columns=["sensor 2"]))


def test_condition_features_count_cycles_per_condition_and_since_a_change() -> None:
    units = np.asarray([1, 1, 1, 1, 2, 2])
    conds = np.asarray([1, 1, 3, 3, 3, 1])
    feats = C.condition_features(units, conds, 3)
    assert feats.shape == (6, 7)
    assert len(C.condition_feature_names(3)) == 7
    assert feats[:, :3].tolist()[2] == [0, 0, 1]  # one-hot of the current condition
    assert feats[3, 3:6].tolist() == [2, 0, 2]  # cycles so far in each condition
    assert feats[5, 3:6].tolist() == [1, 0, 1]  # unit 2 starts from zero
    assert feats[:, 6].tolist() == [1, 2, 1, 2, 1, 1]
    with pytest.raises(ValueError, match="conditions must be 1..3"):
        C.condition_features(units, np.asarray([1, 1, 1, 1, 1, 4]), 3)
    with pytest.raises(ValueError, match="one length"):
        C.condition_features(units, conds[:3], 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=50), st.integers(1, 4))
def test_condition_history_sums_to_the_cycle_number(conds: list[int], n_units: int) -> None:
    units = np.sort(np.arange(len(conds)) % n_units)
    feats = C.condition_features(units, np.asarray(conds), 6)
    hist = feats[:, 6:12]
    cycle = np.concatenate([np.arange(1, (units == u).sum() + 1) for u in np.unique(units)])
    assert hist.sum(axis=1).tolist() == cycle.tolist()
    assert (feats[:, 12] >= 1).all() and (feats[:, 12] <= cycle).all()
