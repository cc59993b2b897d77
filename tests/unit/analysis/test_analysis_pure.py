"""Pure parts of enginehub.datasets.analysis and .rul: SQL builders, windows, labels, scaler, metrics."""

from __future__ import annotations

import math

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
pytest.importorskip("sqlalchemy")

from enginehub.datasets import analysis, rul  # noqa: E402
from enginehub.datasets.schema import COLUMN_NAMES  # noqa: E402


def frame_of(lengths: dict[int, int], *, setting1: float = 0.0) -> pd.DataFrame:
    """Rows of units with the given lengths; sensor k of (unit u, cycle c) = 1000*u + 10*c + k."""
    rows = []
    for unit, n in lengths.items():
        for cycle in range(1, n + 1):
            sensors = [1000.0 * unit + 10.0 * cycle + k for k in range(1, 22)]
            rows.append([unit, cycle, setting1, 0.0, 100.0, *sensors])
    return pd.DataFrame(rows, columns=list(COLUMN_NAMES))


# -- metrics: the RUL module scores with enginehub.datasets.labels ---------------------------------------


def test_rul_scores_with_the_labels_metrics() -> None:
    assert rul.phm08_score([-13.0, 10.0], [0.0, 0.0]) == pytest.approx(2 * (math.e - 1))
    assert rul.rmse([3.0, -3.0], [0.0, 0.0]) == pytest.approx(3.0)


# -- SQL builders ---------------------------------------------------------------------------------------


def test_quote_ident_escapes_quotes() -> None:
    assert analysis.quote_ident("unit #") == '"unit #"'
    assert analysis.quote_ident('a"b') == '"a""b"'
    with pytest.raises(analysis.AnalysisError):
        analysis.quote_ident("")


def test_sensor_column_bounds() -> None:
    assert analysis.sensor_column(4) == "sensor 4"
    assert analysis.lag_column(4) == "sensor 4 (t - 1)"
    for bad in (0, 22):
        with pytest.raises(analysis.AnalysisError):
            analysis.sensor_column(bad)


def test_selfjoin_query_is_the_original_join() -> None:
    sql = analysis.lag_selfjoin_query("enginehub_events", 4)
    assert 'INNER JOIN "enginehub_events" b' in sql
    assert 'b."cycle #" = (a."cycle #" - 1)' in sql
    assert 'b."sensor 4" AS "sensor 4 (t - 1)"' in sql
    assert 'WHERE a."unit #" = :unit' in sql


def test_window_query_uses_lag_over_partition() -> None:
    sql = analysis.lag_window_query("t", 7)
    assert 'LAG("sensor 7") OVER (PARTITION BY "unit #" ORDER BY "cycle #") AS "sensor 7 (t - 1)"' in sql
    assert "JOIN" not in sql
    assert "DISTINCT" in analysis.lag_window_query("t", 7, dedup=True)


def test_crate_schema_qualifies_the_table() -> None:
    assert analysis.qualified_table("t", "crate://localhost:4200?schema=iot") == '"iot"."t"'
    assert analysis.qualified_table("t", "crate://localhost:4200") == '"t"'
    assert analysis.qualified_table("t", "sqlite:///x.db?schema=iot") == '"t"'


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(analysis.AnalysisError, match="unsupported sink URL"):
        analysis.make_engine("postgresql://localhost/x")


# -- labels and windows ---------------------------------------------------------------------------------


def test_rul_labels_match_the_labels_module() -> None:
    from enginehub.datasets import labels
    from enginehub.datasets.schema import make_row

    rows = [make_row(u, c, [0.0] * 24) for u, n in ((1, 140), (2, 7)) for c in range(1, n + 1)]
    frame = analysis.rows_to_frame(rows)
    np.testing.assert_array_equal(analysis.rul_labels(frame), labels.rul_train(rows))
    np.testing.assert_array_equal(analysis.rul_labels(frame, cap=None), labels.rul_train(rows, cap=None))


def test_rul_labels_piecewise_linear() -> None:
    frame = frame_of({1: 130, 2: 3})
    labels = analysis.rul_labels(frame, cap=125)
    assert labels[0] == 125  # 129 capped
    assert labels[129] == 0  # last cycle of unit 1
    assert list(labels[130:]) == [2, 1, 0]
    assert analysis.rul_labels(frame, cap=None)[0] == 129


def test_windows_slide_per_unit_and_pad_short_units() -> None:
    frame = frame_of({1: 5, 2: 2})
    labels = analysis.rul_labels(frame)
    wins = analysis.make_windows(frame, ["sensor 1", "sensor 2"], 3, labels=labels)
    assert wins.x.shape == (3 + 1, 3, 2)
    assert list(wins.units) == [1, 1, 1, 2]
    assert list(wins.cycles) == [3, 4, 5, 2]
    assert list(wins.y) == [2, 1, 0, 0]
    # window ending at unit 1 cycle 4: cycles 2..4 of sensor 1
    assert list(wins.x[1, :, 0]) == [1021.0, 1031.0, 1041.0]
    # unit 2 has 2 cycles: padded by repeating its first row
    assert list(wins.x[3, :, 1]) == [2012.0, 2012.0, 2022.0]
    unpadded = analysis.make_windows(frame, ["sensor 1"], 3, pad="skip")
    assert list(unpadded.units) == [1, 1, 1]


def test_last_only_windows_take_the_last_cycles() -> None:
    frame = frame_of({1: 5, 2: 4})
    wins = analysis.make_windows(frame, ["sensor 1"], 3, last_only=True)
    assert list(wins.units) == [1, 2]
    assert list(wins.cycles) == [5, 4]
    assert list(wins.x[1, :, 0]) == [2021.0, 2031.0, 2041.0]
    assert np.isnan(wins.y).all()


def test_windows_refuse_mismatched_labels() -> None:
    frame = frame_of({1: 5})
    with pytest.raises(analysis.AnalysisError, match="labels"):
        analysis.make_windows(frame, ["sensor 1"], 3, labels=np.zeros(4))


# -- preprocessing and features -------------------------------------------------------------------------


def test_operating_conditions_from_setting_1() -> None:
    frame = pd.DataFrame({"setting 1": [0.0021, 9.998, 20.0041, 24.99, 35.003, 41.998, 42.0073]})
    assert list(rul.operating_conditions(frame)) == [1, 2, 3, 4, 5, 6, 6]
    with pytest.raises(ValueError, match="no C-MAPSS operating condition"):
        rul.operating_conditions(pd.DataFrame({"setting 1": [15.0]}))


def test_normaliser_is_per_condition_and_guards_constant_columns() -> None:
    a = frame_of({1: 6}, setting1=0.0)
    b = frame_of({2: 6}, setting1=42.0)
    frame = pd.concat([a, b], ignore_index=True)
    frame["sensor 1"] = 518.67  # constant: std 0 must not divide by zero
    norm = rul.Normaliser(("sensor 1", "sensor 2")).fit(frame)
    out = norm.transform(frame)
    for cond in (0, 1):
        block = out.iloc[cond * 6 : cond * 6 + 6]
        assert block["sensor 2"].mean() == pytest.approx(0.0, abs=1e-12)
        assert block["sensor 2"].std(ddof=0) == pytest.approx(1.0)
    assert (out["sensor 1"] == 0.0).all()
    unseen = frame_of({3: 2}, setting1=20.0)
    with pytest.raises(ValueError, match="not seen"):
        norm.transform(unseen)


def test_condition_history_counts_cycles_per_condition_per_unit() -> None:
    frame = frame_of({1: 3, 2: 2})
    frame.loc[1, "setting 1"] = 42.0
    hist = rul.condition_history(frame)
    assert hist.shape == (5, 6)
    assert list(hist[2]) == [2, 0, 0, 0, 0, 1]
    assert list(hist[4]) == [2, 0, 0, 0, 0, 0]  # unit 2 starts again from zero


def test_window_features_slopes_and_last_values() -> None:
    t = np.arange(30, dtype="float64")
    x = np.stack([np.stack([2.0 * t + 5.0, np.full(30, 7.0), (t - 14.5) ** 2], axis=1)])  # (1, 30, 3)
    feats = rul.window_features(x)
    assert feats.shape == (1, len(rul.WINDOW_FEATURES) * 3)

    def block(name: str) -> np.ndarray:
        i = rul.WINDOW_FEATURES.index(name)
        return feats[0, 3 * i : 3 * i + 3]

    assert list(block("last")[:2]) == [63.0, 7.0]
    assert block("mean5")[0] == pytest.approx(59.0)
    for name in ("slope5", "slope10", "slope20", "slope"):
        assert block(name)[:2] == pytest.approx([2.0, 0.0])
    assert block("std")[1] == 0.0 and block("min")[0] == 5.0 and block("max")[0] == 63.0
    assert 45.0 < block("ewm0.1")[0] < block("ewm0.3")[0] < 63.0  # recent cycles weigh more
    assert block("curvature")[:2] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert block("curvature")[2] > 0  # a parabola opening upwards


def test_history_features_use_only_the_unit_so_far() -> None:
    units = np.asarray([1] * 15 + [2] * 3)
    x = np.r_[np.arange(15, dtype="float64") * 2.0 + 7.0, [5.0, 5.0, 5.0]][:, None]  # (18, 1)
    feats = rul.history_features(x, units)
    assert feats.shape == (18, len(rul.HISTORY_FEATURES))
    base, drift, _ewm, slope = feats.T
    assert base[0] == 7.0 and base[4] == pytest.approx(np.mean(x[:5, 0]))
    assert base[14] == pytest.approx(np.mean(x[:10, 0]))  # the first 10 cycles only
    assert drift[14] == pytest.approx(np.mean(x[5:15, 0]) - np.mean(x[:10, 0]))
    assert slope[0] == 0.0 and slope[14] == pytest.approx(2.0)
    assert base[15:].tolist() == [5.0, 5.0, 5.0] and slope[15:].tolist() == [0.0, 0.0, 0.0]
    # a truncated unit gets exactly what the full unit had at the same cycle
    assert np.array_equal(rul.history_features(x[:9], units[:9]), feats[:9])


def test_finish_clips_and_snaps_to_the_cap() -> None:
    assert rul.finish(np.asarray([-3.0, 50.0, 119.0, 130.0]), 125).tolist() == [0.0, 50.0, 119.0, 125.0]
    assert rul.finish(np.asarray([50.0, 119.0]), 125, snap=118.0).tolist() == [50.0, 125.0]


def test_seed_stats_score_each_seed_and_give_mean_and_spread() -> None:
    truth = np.asarray([10.0, 150.0])
    each = np.asarray([[10.0, 125.0], [20.0, 125.0]])  # seed 1: errors 0, -25; seed 2: +10, -25
    stats = rul._seed_stats(each, truth, 125)
    r1, r2 = math.sqrt(25.0**2 / 2), math.sqrt((100 + 625) / 2)
    assert stats["seeds"] == 2
    assert stats["seed_rmse_mean"] == pytest.approx((r1 + r2) / 2, abs=1e-4)
    assert stats["seed_rmse_std"] == pytest.approx(abs(r1 - r2) / math.sqrt(2), abs=1e-4)
    assert stats["seed_rmse_capped_truth_mean"] == pytest.approx(math.sqrt(50.0) / 2, abs=1e-4)
    assert stats["seed_score_capped_truth_std"] > 0
