"""The baseline an ``auto`` throughput run is judged on: the mean of the ones before and after the load."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enginehub.loadtests.baseline import bracketed

rates = st.floats(min_value=1.0, max_value=1e6, allow_nan=False)


def test_the_mean_of_the_two_sides():
    # a faster minute before the load (25,000) and a slower one after it (19,000): judged on 22,000
    assert bracketed(25_000.0, 19_000.0) == 22_000.0


@pytest.mark.parametrize(
    ("before", "after", "expected"), [(20_000.0, None, 20_000.0), (None, 18_000.0, 18_000.0)]
)
def test_one_side_missing_leaves_the_other(before, after, expected):
    assert bracketed(before, after) == expected


@pytest.mark.parametrize(("before", "after"), [(None, None), (0.0, None), (None, 0.0), (0.0, 0.0)])
def test_no_rate_on_either_side_is_no_baseline(before, after):
    assert bracketed(before, after) is None


@given(rates, rates)
def test_it_lies_between_the_two_and_does_not_depend_on_their_order(a, b):
    m = bracketed(a, b)
    assert m is not None
    assert min(a, b) - 0.05 <= m <= max(a, b) + 0.05  # rounded to 0.1
    assert m == bracketed(b, a)
