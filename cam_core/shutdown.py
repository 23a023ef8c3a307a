"""Stopping cleanly: a process-wide stop request that running computations honour.

A SIGTERM (a container stopping, ``kill``) used to end a ScoreCAM run with an abort (exit -6,
"terminate called without an active exception"): the interpreter finalized while a thread was
still inside torch.  Instead, a stop request makes every model run of an
:class:`~cam_core.Explainer` raise :class:`~cam_core.errors.Cancelled` at its next forward pass
(a perturbation method runs hundreds), so hooks are removed and the model restored as after any
error, and nothing is left computing when the process exits:

* the CLI installs :func:`stop_on_sigterm` and exits 0 after a stop;
* the app's server (Streamlit handles SIGTERM itself) ends through normal interpreter exit,
  where an ``atexit`` hook requests the stop and waits for running computations to unwind.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Cancelled

__all__ = [
    "EXIT_WAIT_S",
    "check",
    "computing",
    "request_stop",
    "reset",
    "stop_on_sigterm",
    "stop_requested",
    "wait_idle",
]

#: Longest wait at interpreter exit for running computations to reach their next forward pass.
EXIT_WAIT_S = 30.0

_requested = threading.Event()
_reason = ["shutdown"]
_active = [0]
_idle = threading.Condition()


def request_stop(reason: str = "shutdown") -> None:
    """Ask every running and future computation of this process to stop."""
    _reason[0] = reason
    _requested.set()


def stop_requested() -> bool:
    """Whether a stop was requested."""
    return _requested.is_set()


def reset() -> None:
    """Forget a stop request (tests; a process that keeps serving after a stop)."""
    _requested.clear()


def check() -> None:
    """Raise :class:`Cancelled` when a stop was requested; called before every model run."""
    if _requested.is_set():
        raise Cancelled(f"stopped: {_reason[0]}; the computation was abandoned cleanly.")


@contextmanager
def computing() -> Iterator[None]:
    """Mark a computation as running, so :func:`wait_idle` can wait for it to unwind."""
    with _idle:
        _active[0] += 1
    try:
        yield
    finally:
        with _idle:
            _active[0] -= 1
            _idle.notify_all()


def wait_idle(timeout: float) -> bool:
    """Wait until no computation runs; False if some still do after ``timeout`` seconds."""
    with _idle:
        return _idle.wait_for(lambda: _active[0] == 0, timeout)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within this block (main thread only), SIGTERM requests a stop instead of killing the
    process; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        request_stop(f"signal {signal.Signals(signum).name} received")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _at_exit() -> None:
    # Daemon threads (Streamlit's script runners) may still be inside torch: stop them at their
    # next forward, and any they would start, and let them unwind before the interpreter tears
    # torch down under them.
    request_stop("the process is exiting")
    wait_idle(EXIT_WAIT_S)


atexit.register(_at_exit)
