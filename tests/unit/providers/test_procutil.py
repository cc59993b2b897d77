"""enginehub.harness.procutil without starting anything: the death-signal request, the signal mask around a
child's start, and the no-op elsewhere than Linux (the real processes: tests/integration/lifecycle)."""

from __future__ import annotations

import signal
import sys

import pytest

from enginehub.harness import procutil

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")


@linux
def test_supported_on_linux_and_the_request_reads_back() -> None:
    assert procutil.supported()
    before = procutil.get_pdeathsig()
    try:
        assert procutil.set_pdeathsig(signal.SIGUSR2)
        assert procutil.get_pdeathsig() == signal.SIGUSR2
        assert procutil.die_with_parent(signal.SIGUSR1)  # no parent pid given: only sets it
        assert procutil.get_pdeathsig() == signal.SIGUSR1
    finally:
        procutil.set_pdeathsig(before)
    assert procutil.get_pdeathsig() == before


@linux
def test_an_invalid_signal_is_refused_not_raised() -> None:
    before = procutil.get_pdeathsig()
    assert procutil.set_pdeathsig(10_000) is False
    assert procutil.get_pdeathsig() == before


@linux
def test_the_preexec_hook_is_made_for_popen() -> None:
    hook = procutil.pdeathsig_preexec(signal.SIGTERM)
    assert callable(hook)


def test_without_prctl_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procutil, "_PRCTL", None)
    assert not procutil.supported()
    assert procutil.set_pdeathsig(signal.SIGKILL) is False
    assert procutil.get_pdeathsig() == 0
    assert procutil.die_with_parent(signal.SIGKILL, parent_pid=-1) is False  # did not exit either
    assert procutil.pdeathsig_preexec() is None


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks here")
def test_stop_signals_are_blocked_only_inside_the_block() -> None:
    def blocked() -> set[int]:
        return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))

    before = blocked()
    assert not procutil.STOP_SIGNALS & before
    with procutil.stop_signals_blocked():
        assert blocked() >= procutil.STOP_SIGNALS
    assert blocked() == before


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks here")
def test_ignore_stop_signals_ignores_and_unblocks() -> None:
    saved = {sig: signal.getsignal(sig) for sig in procutil.STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, procutil.STOP_SIGNALS)
    try:
        procutil.ignore_stop_signals()
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in procutil.STOP_SIGNALS)
        assert not procutil.STOP_SIGNALS & set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
