"""Stopping a run cleanly: Ctrl-C and SIGTERM finish the current step and checkpoint (:class:`TrainingStopped`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


class StopFlag:
    requested = False
    signum: int | None = None
    """The signal that asked to stop (SIGINT or SIGTERM)."""


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM (``kill``, ``timeout``, a cluster scheduler)
    after saving a checkpoint; ``signum`` is the signal."""

    def __init__(self, signum: int | None = None) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`TrainingStopped` (a KeyboardInterrupt) in the main
    thread, as Ctrl-C does, instead of killing the process where it stands; the previous handler is
    restored on leaving (a caller in the same process, e.g. a notebook or a test, keeps its own)."""
    def handler(signum: int, frame: Any) -> None:
        raise TrainingStopped(signum)

    if not (hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread()):
        yield
        return
    prev = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


@contextlib.contextmanager
def sigint_deferred(enabled: bool) -> Iterator[StopFlag]:
    """Turn the first SIGINT or SIGTERM into a request honoured between steps; a second one aborts."""
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    prev = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise TrainingStopped(signum)
        flag.requested, flag.signum = True, signum
        name = signal.Signals(signum).name
        print(f"\ngeomsae train: {name} received; saving a checkpoint after this step (send it again to abort)",
              file=sys.stderr)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in prev.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

