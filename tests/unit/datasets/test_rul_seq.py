"""The RUL sequence model (enginehub.datasets.seq): shapes, determinism and inputs on tiny synthetic
windows and fleets, in memory. Skipped when the optional `seq` extra (jax, optax) is not installed."""

from __future__ import annotations

import sys

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("pandas")

from enginehub.datasets import analysis, rul, seq, synthetic  # noqa: E402
from enginehub.datasets import labels as lab  # noqa: E402

NO_EXTRA = "the sequence model needs the optional seq extra: pip install 'enginehub[seq]'"


@pytest.fixture
def jax_extra() -> None:
    pytest.importorskip("jax", reason=NO_EXTRA)
    pytest.importorskip("optax", reason=NO_EXTRA)


def tiny_windows(n: int = 64, t: int = 10, f: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose windows' target is the mean of the last row's first column (learnable)."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n + t, f)).astype(np.float32)
    index = np.arange(n)[:, None] + np.arange(t)[None, :]
    targets = (0.5 + 0.3 * rows[index[:, -1], 0]).astype(np.float32)
    return np.vstack([rows, np.zeros((1, f), dtype=np.float32)]), index, targets


def test_window_index_gathers_the_same_windows_as_sliding_windows() -> None:
    units = np.repeat([1, 2, 3], [5, 2, 4])
    x = np.arange(len(units) * 2, dtype=float).reshape(-1, 2)
    for last_only in (False, True):
        for pad in ("repeat", "zero"):
            index, padded = lab.window_index(units, 3, last_only=last_only, pad=pad)
            ref = (lab.last_windows if last_only else lab.sliding_windows)(x, units, length=3, pad=pad)
            assert padded == ref.padded_units == 1
            assert np.array_equal(np.vstack([x, np.zeros((1, 2))])[index], ref.x)
    with pytest.raises(ValueError):
        lab.window_index(units, 0)


@pytest.mark.parametrize("arch", seq.ARCHITECTURES)
def test_networks_map_a_batch_of_windows_to_one_output_each(jax_extra: None, arch: str) -> None:
    params = seq.init_params(arch, n_in=4, hidden=8, dense=6, kernel=3, seed=1)
    x = np.random.default_rng(0).normal(size=(7, 10, 4)).astype(np.float32)
    out = np.asarray(seq.apply(arch, params, x))
    assert out.shape == (7,)
    assert np.isfinite(out).all()
    # the output depends on the window, not just on the batch position
    assert not np.allclose(out, out[0])
    # a batch of one gives the same value as inside a batch (no cross-talk between windows)
    assert np.asarray(seq.apply(arch, params, x[2:3]))[0] == pytest.approx(out[2], abs=1e-5)


@pytest.mark.parametrize("arch", seq.ARCHITECTURES)
def test_training_is_deterministic_for_a_seed_and_learns(jax_extra: None, arch: str) -> None:
    rows, index, targets = tiny_windows()
    cfg = seq.SeqConfig(arch=arch, hidden=8, dense=8, kernel=3, epochs=30, batch=16, seeds=(1,))
    first = seq.train_network(rows, index, targets, cfg, seed=3)
    again = seq.train_network(rows, index, targets, cfg, seed=3)
    other = seq.train_network(rows, index, targets, cfg, seed=4)
    p1, p2, p3 = (seq.predict_network(arch, p, rows, index) for p in (first, again, other))
    assert np.array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    untrained = seq.predict_network(arch, seq.init_params(arch, 4, 8, 8, 3, seed=3), rows, index)
    assert np.mean((p1 - targets) ** 2) < 0.5 * np.mean((untrained - targets) ** 2)


def test_seq_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="arch"):
        seq.SeqConfig(arch="transformer")
    with pytest.raises(ValueError, match="history_keep"):
        seq.SeqConfig(history_keep=("nope",))
    with pytest.raises(ValueError):
        seq.SeqConfig(epochs=0)


def test_without_the_extra_the_model_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now raises ImportError
    assert not seq.available()
    with pytest.raises(analysis.AnalysisError, match=r"enginehub\[seq\]"):
        seq.require_jax()
    # evaluate refuses before touching any sink or file
    with pytest.raises(analysis.AnalysisError, match=r"enginehub\[seq\]"):
        rul.evaluate("FD001", "sqlite:////nonexistent/x.db", model_kind="seq")
    with pytest.raises(analysis.AnalysisError, match="model must be"):
        rul.evaluate("FD001", "sqlite:////nonexistent/x.db", model_kind="svm")


@pytest.mark.parametrize("conditions", [1, 6])
def test_seq_model_fits_a_tiny_fleet_and_predicts_each_unit(jax_extra: None, conditions: int) -> None:
    train = analysis.rows_to_frame(synthetic.generate_fleet(units=8, conditions=conditions, seed=5))
    test = analysis.rows_to_frame(synthetic.generate_fleet(units=3, conditions=conditions, seed=6))
    test = test[test[analysis.CYCLE] <= 40].reset_index(drop=True)
    cfg = seq.SeqConfig(hidden=8, dense=8, epochs=1, batch=64, seeds=(1, 2), max_steps=64 * 4)
    model = seq.SeqModel(cfg).fit(train)
    units, each = model.predict_last_each(test)
    assert units.tolist() == [1, 2, 3]
    assert each.shape == (2, 3)
    assert ((each >= 0) & (each <= cfg.cap)).all()
    _, mean = model.predict_last(test)
    assert np.allclose(mean, rul.finish(each.mean(axis=0), cfg.cap))
    again = seq.SeqModel(cfg).fit(train).predict_last_each(test)[1]
    assert np.array_equal(each, again)
    # the multi-condition inputs carry the condition features (one-hot, cycles per condition, since)
    width = model._matrix(train).shape[1]
    k = len(cfg.sensors) + 1  # sensors and the health indicator
    expected = k + 1 + 2 * k + (2 * model.prep.scaler.conditions.n_conditions + 1 if conditions > 1 else 0)
    assert width == expected


def test_ensemble_is_the_weighted_average_of_both_models_seed_by_seed(jax_extra: None) -> None:
    pytest.importorskip("lightgbm", reason="the ensemble needs lightgbm (analysis extra)")
    train = analysis.rows_to_frame(synthetic.generate_fleet(units=8, conditions=1, seed=5))
    test = analysis.rows_to_frame(synthetic.generate_fleet(units=3, conditions=1, seed=6))
    gbm = rul.ModelConfig(n_estimators=20, seeds=(1, 2))
    cfg = seq.SeqConfig(hidden=8, dense=8, epochs=1, batch=64, seeds=(1, 2), max_steps=64 * 2)
    model = seq.EnsembleModel(gbm, cfg, weight=0.75).fit(train)
    units, each = model.predict_last_each(test)
    _, a = model.gbm.predict_last_each(test)
    _, b = model.seq.predict_last_each(test)
    assert units.tolist() == [1, 2, 3]
    assert np.allclose(each, rul.finish(0.75 * a + 0.25 * b, cfg.cap))
    assert not np.allclose(a, b)  # two different models, so the weight matters
    snap = float(np.median(each))
    snapped = seq.EnsembleModel(gbm, cfg, weight=0.75, snap=snap)
    snapped.gbm, snapped.seq = model.gbm, model.seq  # the same fitted parts
    _, s_each = snapped.predict_last_each(test)
    assert np.allclose(s_each, rul.finish(each, cfg.cap, snap))
    assert (s_each[each >= snap] == cfg.cap).all() and np.array_equal(s_each[each < snap], each[each < snap])
    with pytest.raises(ValueError, match="weight"):
        seq.EnsembleModel(gbm, cfg, weight=1.5)
    with pytest.raises(ValueError, match="seeds"):
        seq.EnsembleModel(gbm, seq.SeqConfig(seeds=(1,)))
