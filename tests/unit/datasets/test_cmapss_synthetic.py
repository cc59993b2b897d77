"""The synthetic fleet against the real FD001/FD002 files, determinism, and its config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.datasets import cmapss, codecs, synthetic
from enginehub.datasets.schema import Row

CONDITION_OF = {0: 0, 10: 1, 20: 2, 25: 3, 35: 4, 42: 5}
FD001_CONDITION = synthetic.FD001_MODEL[0]


def matrix(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sensors [n, 21], life fraction [n], condition index [n]) of run-to-failure rows."""
    sensors = np.array([r.sensors for r in rows])
    cycles = np.array([r.cycle for r in rows], dtype=float)
    lengths = cmapss.unit_lengths(rows)
    life = np.array([lengths[r.unit] for r in rows], dtype=float)
    cond = np.array([CONDITION_OF[round(r.settings[0])] for r in rows])
    return sensors, cycles / life, cond


def trend(sensors: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Correlation of each sensor with the life fraction (0 for constant sensors)."""
    out = np.zeros(sensors.shape[1])
    for j in range(sensors.shape[1]):
        if np.ptp(sensors[:, j]) > 0:
            out[j] = np.corrcoef(sensors[:, j], frac)[0, 1]
    return out


@pytest.fixture(scope="module")
def fd001(cmapss_dir: Path) -> list[Row]:
    return cmapss.read_rows(cmapss_dir / "train_FD001.txt")


def test_one_condition_matches_fd001_means_trends_and_lifetimes(fd001: list[Row]) -> None:
    syn = synthetic.generate_fleet(units=100, conditions=1, seed=7)
    real_s, real_f, _ = matrix(fd001)
    syn_s, syn_f, _ = matrix(syn)
    real_std = real_s.std(axis=0)
    # Means: within a quarter of FD001's spread; constant sensors exactly equal.
    drift = np.abs(syn_s.mean(axis=0) - real_s.mean(axis=0))
    assert np.all(drift <= 0.25 * real_std + 1e-9), dict(enumerate(drift / (real_std + 1e-12), 1))
    constant = np.ptp(real_s, axis=0) == 0
    assert {j + 1 for j in np.flatnonzero(constant)} == {1, 5, 10, 16, 18, 19}
    assert np.all(np.ptp(syn_s, axis=0)[constant] == 0)
    # Trends: every sensor that trends in FD001 (|corr with life fraction| > 0.3) trends the same way.
    real_t, syn_t = trend(real_s, real_f), trend(syn_s, syn_f)
    trending = np.abs(real_t) > 0.3
    assert {j + 1 for j in np.flatnonzero(trending & (real_t > 0))} == {2, 3, 4, 8, 9, 11, 13, 14, 15, 17}
    assert {j + 1 for j in np.flatnonzero(trending & (real_t < 0))} == {7, 12, 20, 21}
    assert np.all(np.sign(syn_t[trending]) == np.sign(real_t[trending]))
    assert np.all(np.abs(syn_t[trending] - real_t[trending]) < 0.25), (real_t, syn_t)
    # Lifetimes: same shape as FD001's (128 / 199 / 362).
    life = sorted(cmapss.unit_lengths(syn).values())
    assert life[0] >= 128 and 170 <= life[50] <= 230 and 260 <= life[-1] <= 520
    # Settings: condition 1 (sea level), like FD001.
    settings = np.array([r.settings for r in syn])
    assert np.all(np.abs(settings[:, 0]) < 0.02) and np.all(settings[:, 2] == 100.0)


def test_six_conditions_match_fd002_per_condition(cmapss_dir: Path) -> None:
    real = cmapss.read_rows(cmapss_dir / "train_FD002.txt")
    syn = synthetic.generate_fleet(units=120, conditions=6, seed=3)
    real_s, _, real_c = matrix(real)
    syn_s, _, syn_c = matrix(syn)
    assert set(syn_c.tolist()) == set(range(6))
    real_share = np.bincount(real_c) / len(real_c)
    syn_share = np.bincount(syn_c) / len(syn_c)
    assert np.all(np.abs(real_share - syn_share) < 0.02), (real_share, syn_share)
    for c in range(6):
        r, s = real_s[real_c == c], syn_s[syn_c == c]
        spread = r.std(axis=0)
        drift = np.abs(s.mean(axis=0) - r.mean(axis=0))
        assert np.all(drift <= 0.3 * spread + 1e-9), (c, drift / (spread + 1e-12))
        # Sensors 1, 5, 18 and 19 are pure functions of the condition, in FD002 and here.
        for j in (0, 4, 17, 18):
            assert np.ptp(r[:, j]) == 0 and np.ptp(s[:, j]) == 0 and s[0, j] == r[0, j]


def test_deterministic_for_a_seed_and_independent_of_fleet_size() -> None:
    a = synthetic.generate_fleet(units=6, seed=11)
    assert a == synthetic.generate_fleet(units=6, seed=11)
    assert a != synthetic.generate_fleet(units=6, seed=12)
    five = synthetic.generate_fleet(units=5, seed=11)
    assert a[: len(five)] == five
    assert synthetic.unit_rows(synthetic.SyntheticConfig(seed=11), 6) == [r for r in a if r.unit == 6]
    assert list(synthetic.iter_fleet(units=6, seed=11)) == a
    six = synthetic.generate_fleet(units=3, conditions=6, seed=11)
    assert six == synthetic.generate_fleet(units=3, conditions=6, seed=11) and six[:5] != a[:5]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([1, 6]))
def test_rows_are_valid_cmapss_and_roundtrip_through_both_codecs(seed: int, conditions: int) -> None:
    rows = synthetic.generate_fleet(units=2, conditions=conditions, seed=seed)
    lengths = cmapss.unit_lengths(rows)
    assert list(lengths) == [1, 2] and all(n >= 128 for n in lengths.values())
    assert [(r.unit, r.cycle) for r in rows] == [(u, c) for u in (1, 2) for c in range(1, lengths[u] + 1)]
    for row in rows[:: max(1, len(rows) // 40)]:
        assert codecs.decode_line(codecs.encode_line(row)) == row
        assert codecs.decode_json(codecs.encode_json(row)) == row


def test_synthetic_file_passes_the_validator(tmp_path: Path) -> None:
    rows = synthetic.generate_fleet(units=3, seed=5)
    path = tmp_path / "train_FD001.txt"
    path.write_text("".join(codecs.encode_line(r) + "  \n" for r in rows))
    assert cmapss.read_rows(path) == rows


def test_degradation_is_exponential_from_initial_wear_to_one() -> None:
    assert synthetic.degradation(0, 200, 0.05) == pytest.approx(0.05)
    assert synthetic.degradation(200, 200, 0.05) == pytest.approx(1.0)
    d = [synthetic.degradation(t, 200, 0.05) for t in range(0, 201, 20)]
    steps = np.diff(d)
    assert np.all(steps > 0) and np.all(np.diff(steps) > 0)  # increasing and convex
    plan = synthetic.plan_unit(synthetic.SyntheticConfig(seed=1), 4)
    assert plan.unit == 4 and plan.life >= 128 and 0 <= plan.initial_wear <= 0.1
    assert plan == synthetic.plan_unit(synthetic.SyntheticConfig(seed=1, units=9), 4)


def test_generate_subset_is_cmapss_shaped() -> None:
    sub = synthetic.generate_subset(units=8, conditions=1, seed=2)
    assert sub.train_units == sub.test_units == len(sub.rul) == 8
    test_len = cmapss.unit_lengths(sub.test)
    config = synthetic.SyntheticConfig(units=8, seed=2)
    for unit, n in test_len.items():
        life = synthetic.plan_unit(config, unit, "test").life
        assert 1 <= n < life and sub.rul[unit - 1] == life - n
    assert sub.train == synthetic.generate_fleet(units=8, seed=2)
    assert sub.name == "synthetic-1c-seed2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "units must be an int >= 1"),
        ({"units": True}, "units must be an int >= 1"),
        ({"conditions": 3}, "conditions must be 1 or 6"),
        ({"initial_wear_max": 1.0}, "initial_wear_max"),
        ({"curvature": 0.0}, "curvature must be > 0"),
        ({"noise_scale": -1.0}, "noise_scale"),
        ({"conditions": 6, "models": synthetic.FD001_MODEL}, "1 condition models for 6 conditions"),
        (
            {"models": (synthetic.ConditionModel(1, ((0.0, 0.0),) * 3, ((1.0, 0.0, 0.0),) * 20),)},
            "condition model 1: needs 3 settings, 21 sensors",
        ),
        (
            {"models": (synthetic.ConditionModel(0, FD001_CONDITION.settings, FD001_CONDITION.sensors),)},
            "a weight > 0",
        ),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic.SyntheticConfig(**kwargs)
    with pytest.raises(ValueError, match="unit must be >= 1"):
        synthetic.plan_unit(synthetic.SyntheticConfig(), 0)


def test_custom_noise_free_model_follows_the_degradation_formula() -> None:
    flat = ((0.0, 0.0), (0.0, 0.0), (100.0, 0.0))
    sensors = ((500.0, 10.0, 0.0),) + ((1.0, 0.0, 0.0),) * 20
    model = synthetic.ConditionModel(weight=1, settings=flat, sensors=sensors)
    config = synthetic.SyntheticConfig(units=2, seed=5, models=(model,))
    plan = synthetic.plan_unit(config, 2)
    assert isinstance(plan, synthetic.UnitPlan)
    rows = synthetic.unit_rows(config, 2)
    assert len(rows) == plan.life and rows[-1].sensor(1) == 510.0  # base + delta at failure
    for row in rows[:: len(rows) // 7]:
        want = 500.0 + 10.0 * synthetic.degradation(row.cycle, plan.life, plan.initial_wear)
        assert row.sensor(1) == round(want, 2) and row.settings == (0.0, 0.0, 100.0)
    assert synthetic.unit_rows(config, 2, cycles=5) == rows[:5]
