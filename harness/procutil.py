"""Child processes that die with their parent, and children that leave the stop to their parent.

Two rules every CLI of ours follows for the processes it starts (issue 17):

- **No orphan.** A child asks the kernel for a signal when its parent dies (Linux ``PR_SET_PDEATHSIG``),
  so that ``kill -9`` of a CLI does not leave its workers, its Azurite or its self-hosted stack running.
  The request is made in the child (:func:`die_with_parent`, first thing in a Python child we wrote, or
  :func:`pdeathsig_preexec` as ``preexec_fn`` of ``subprocess.Popen``, which survives ``exec``, so it
  works for Node as well), and right after it the child checks that its parent is still the process that
  started it: a parent that died before the request would otherwise never be signalled.
- **The parent drives the stop.** Ctrl-C and ``kill -TERM -<pgid>`` (systemd's KillMode=control-group,
  ``timeout``, a shell's job control) reach the whole process group, and a child that died of them would
  turn an orderly stop into a crash of its parent. A child that its parent tells to stop through its own
  channel ignores them (:func:`ignore_stop_signals`; the ingest sink worker, stopped by EOF on its
  socket) or takes them as the same request (the simulator's workers: SIGTERM = their stop event), and
  takes SIGKILL as its death signal. Children in a session of their own (Azurite, ``simulate``'s
  self-hosted stack and consumer), which no group signal reaches, get SIGTERM: a graceful stop.
  :func:`stop_signals_blocked` around the start closes the window before the child's handlers exist.

The kernel signals the child when the *thread* that forked it exits, not the process: start children from
the main thread or from a thread that outlives them (a ``ThreadPoolExecutor`` worker lives until the
executor shuts down). Elsewhere than Linux every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - a Linux without a usable libc
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return fn


#: resolved once, at import: ``preexec_fn`` runs between fork and exec and must not load libraries
_PRCTL = _load_prctl()


def supported() -> bool:
    """True where the kernel can signal a child when its parent dies (Linux)."""
    return _PRCTL is not None


def set_pdeathsig(sig: int) -> bool:
    """Ask for `sig` when our parent (thread) dies; False where unsupported or refused."""
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def get_pdeathsig() -> int:
    """The death signal set for this process (0: none, or unsupported)."""
    if _PRCTL is None:
        return 0
    out = ctypes.c_int(0)
    if _PRCTL(PR_GET_PDEATHSIG, ctypes.addressof(out), 0, 0, 0) != 0:
        return 0
    return out.value


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> bool:
    """In a child: get `sig` when the parent dies, and exit at once (code 1) if it died already.

    `parent_pid` is the pid of the process that started us (passed by it; without it there is nothing to
    check). Returns True when the death signal is set."""
    if not set_pdeathsig(sig):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request: no signal would ever come
    return True


def pdeathsig_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` / ``asyncio.create_subprocess_exec``: the child gets `sig`
    when this process dies. None where unsupported (so ``Popen`` forks as it would without it)."""
    if _PRCTL is None:
        return None
    parent, signo, prctl = os.getpid(), int(sig), _PRCTL

    def preexec() -> None:
        # between fork and exec: no imports, no logging, nothing but the call and the check
        if prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0) == 0 and os.getppid() != parent:
            os._exit(1)  # the parent died before the request: no signal would ever come

    return preexec


STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread while it starts a child that handles or ignores them.

    The child inherits the mask through fork and exec, so a signal sent to the group while the child is
    still starting (before its own handlers exist) waits instead of killing it; the child then calls
    :func:`ignore_stop_signals` or installs its handlers and :func:`unblock_stop_signals`. Here a signal
    that comes meanwhile stays pending and is handled on leaving the block (or by another thread)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock_stop_signals() -> None:
    """Undo an inherited :func:`stop_signals_blocked` (after installing the handlers)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def ignore_stop_signals() -> None:
    """SIGINT and SIGTERM ignored (a child whose parent drives its stop); pending ones are discarded.
    Main thread only."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    unblock_stop_signals()
