"""rul.Truncation: validation cuts drawn the way the test trajectories were cut (pure, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("pandas")

from enginehub.datasets import rul  # noqa: E402


def fleet(a: float, b: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train lives, test lives, test lengths) with test lengths = round(U * life), U ~ Beta(a, b)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(128, 363, n)
    test = rng.integers(128, 363, n)
    lengths = np.maximum(1, np.round(rng.beta(a, b, n) * test)).astype(int)
    return train, test, lengths


@pytest.mark.parametrize(("a", "b"), [(2.7, 1.5), (1.5, 0.9), (4.0, 4.0)])
def test_fit_recovers_the_fraction_distribution_from_lengths_alone(a: float, b: float) -> None:
    train, _, lengths = fleet(a, b, 40_000)
    fitted = rul.Truncation.fit(lengths, train)
    assert fitted.mean == pytest.approx(a / (a + b), abs=0.01)
    assert fitted.a == pytest.approx(a, rel=0.1)
    assert fitted.b == pytest.approx(b, rel=0.1)
    assert fitted.min_cycles == lengths.min()


def test_cuts_reproduce_the_true_rul_distribution_of_the_test_set() -> None:
    train, test, lengths = fleet(2.7, 1.5, 20_000, seed=1)
    fitted = rul.Truncation.fit(lengths, train)
    rng = np.random.default_rng(2)
    rul_val = np.array([life - fitted.cut(int(life), rng) for life in train])
    rul_test = test - lengths
    assert rul_val.mean() == pytest.approx(rul_test.mean(), rel=0.03)
    assert np.percentile(rul_val, 90) == pytest.approx(np.percentile(rul_test, 90), rel=0.05)
    # a uniform cut over the life, the old validation, is far off the test set's RULs
    uniform = np.array([life - rng.integers(1, life) for life in train])
    assert uniform.mean() > 1.2 * rul_test.mean()


@given(
    life=st.integers(2, 600),
    min_cycles=st.integers(1, 400),
    a=st.floats(0.2, 20),
    b=st.floats(0.2, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_cut_keeps_at_least_one_cycle_and_leaves_at_least_one(
    life: int, min_cycles: int, a: float, b: float, seed: int
) -> None:
    keep = rul.Truncation(a=a, b=b, min_cycles=min_cycles).cut(life, np.random.default_rng(seed))
    assert 1 <= keep <= life - 1
    assert keep >= min(min_cycles, life - 1)


@pytest.mark.parametrize(
    ("lengths", "lives"),
    [
        ([10], [200, 300]),  # too few test lengths
        ([10, 20], [1, 300]),  # a life of one cycle
        ([300, 300], [200, 200]),  # longer than the lives: not a fraction
        ([100, 100], [200, 200]),  # no spread at all
    ],
)
def test_fit_refuses_lengths_that_are_not_fractions_of_lives(lengths: list[int], lives: list[int]) -> None:
    with pytest.raises(ValueError):
        rul.Truncation.fit(lengths, lives)


def test_a_unit_of_one_cycle_cannot_be_cut() -> None:
    with pytest.raises(ValueError, match="cannot be cut"):
        rul.Truncation(a=2.0, b=1.0, min_cycles=5).cut(1, np.random.default_rng(0))
