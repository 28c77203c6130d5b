"""SIGTERM handled like Ctrl-C, for both CLIs (train.py and sweep/run.py)."""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def sigterm_as_ctrl_c(on_graceful: Callable[[], None] | None = None) -> Iterator[list[int]]:
    """SIGTERM (what SLURM and Kubernetes send before they kill) does what Ctrl-C does: it calls the
    SIGINT handler in force, which is Python's KeyboardInterrupt, or Ray Tune's graceful stop while
    a sweep runs (the experiment is saved and fit() returns what it has). Yields the SIGTERMs
    received, so that the CLI can exit 143 instead of 130. `on_graceful` is called after a SIGTERM
    was handed to a graceful stop (the sweep's watch that the stop begins, sweep.storage.interrupt_if_stuck)."""
    received: list[int] = []

    def like_ctrl_c(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)
        if on_graceful is not None and handler is not signal.default_int_handler:
            on_graceful()

    previous = signal.signal(signal.SIGTERM, like_ctrl_c)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
