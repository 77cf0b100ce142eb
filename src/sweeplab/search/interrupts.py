"""Where Ctrl-C and SIGTERM land in a sweep, and when.

Python runs signal handlers in the main thread only, and only when it next runs Python code. A sweep's
main thread spends its time waiting for trials, so a stop signal must reach it, not a helper thread
(the heartbeat thread, torch's pool started by a config check); and a few storage writes must happen
together or not at all, so Ctrl-C is held across them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


def block_stop_signals() -> None:
    """For a helper thread's own start: the stop signals go to the main thread instead."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Threads started inside the block inherit the stop signals blocked; the main thread gets any that
    arrived once the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """Ctrl-C during the block takes effect when it ends (in the main thread, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt
