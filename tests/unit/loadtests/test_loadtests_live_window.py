"""The live baseline's window arithmetic: events per wall-clock bucket -> events in the steady window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enginehub.loadtests.baseline import BUCKET_S, events_in_window, live_rate


def test_whole_buckets_inside_count_whole_and_outside_not_at_all():
    # buckets of 1 s: [10, 11) has 5, [11, 12) has 7, [12, 13) has 100 (after the window)
    buckets = {10: 5, 11: 7, 12: 100}
    assert events_in_window(buckets, 10.0, 12.0, width=1.0) == 12
    assert events_in_window(buckets, 13.0, 20.0, width=1.0) == 0


def test_a_bucket_cut_by_an_edge_counts_for_the_part_inside():
    buckets = {10: 10, 11: 10}
    assert events_in_window(buckets, 10.5, 11.25, width=1.0) == pytest.approx(5 + 2.5)


def test_live_rate_adds_every_process_and_divides_by_the_window():
    a = {"bucket_s": 0.5, "buckets": {"20": 100, "21": 100, "22": 100}}  # [10, 11.5)
    b = {"bucket_s": 0.5, "buckets": {"20": 50, "21": 50}}  # [10, 11)
    assert live_rate([a, b], (10.0, 11.0)) == pytest.approx((200 + 100) / 1.0)
    assert live_rate([a, b], (11.0, 11.0)) is None  # an empty window has no rate


def test_the_default_bucket_width_is_what_a_process_reports_without_saying():
    k = int(100.0 / BUCKET_S)
    assert live_rate([{"buckets": {str(k): 30}}], (100.0, 100.0 + BUCKET_S)) == pytest.approx(30 / BUCKET_S)


@given(
    counts=st.dictionaries(st.integers(0, 199), st.integers(0, 1000), max_size=40),
    cut=st.floats(0, 20, allow_nan=False),
)
def test_two_adjacent_windows_add_up_to_their_union(counts, cut):
    # no event counted twice or lost at the shared edge, wherever it cuts a bucket
    whole = events_in_window(counts, 0.0, 20.0)
    parts = events_in_window(counts, 0.0, cut) + events_in_window(counts, cut, 20.0)
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-6)
    assert whole == pytest.approx(sum(counts.values()))  # buckets 0..199 of 0.1 s tile [0, 20)
