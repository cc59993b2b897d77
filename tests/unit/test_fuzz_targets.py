"""CI's short profile of the fuzz targets (``make fuzz`` runs each for 100,000 cases): every decoder that
takes bytes from the network or from users raises only its declared errors. No I/O."""

from __future__ import annotations

import logging

import pytest

from enginehub.harness.testing.fuzz import TARGETS, run

CI_CASES = 300


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_fuzz_target_short_profile(target, caplog) -> None:
    caplog.set_level(logging.ERROR)
    cases, _ = run(target, CI_CASES)
    assert cases >= CI_CASES // 2  # hypothesis may stop early on a small input space, not at nothing
