"""Where Ctrl-C and SIGTERM land in a sweep, and when.

Python runs signal handlers in the main thread only, and only when it next runs Python code. A sweep's
main thread spends its time waiting for trials, so a stop signal must reach it, not a helper thread
(the heartbeat thread, torch's pool started by a config check); and a few storage writes must happen
together or not at all, so the stop signals are held across them.

For the duration of a sweep, SIGINT (Ctrl-C) and SIGTERM (how SLURM, Kubernetes and systemd stop a job)
both raise `Interrupted` in the main thread. It is not a KeyboardInterrupt on purpose: Lightning turns a
KeyboardInterrupt inside `fit` into `sys.exit(1)`, while any other BaseException is raised again after its
teardown, so a trial the sweep runs in its own process (n_jobs=1) stops the same way as one in a worker process.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # SIGTERM: 128 + SIGTERM


class Interrupted(BaseException):
    """A stop signal reached the sweep: it stops its workers, closes its open trials and exits 128 + signum."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.said = False  # set once a line on the console has said what was stopped
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _ignored(signum: int) -> bool:
    """Ignored since the process started (a shell without job control, nohup): it stays ignored."""
    return signal.getsignal(signum) == signal.SIG_IGN


@contextlib.contextmanager
def stop_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread during the block; the previous handlers
    are back after it. A signal ignored before stays ignored; outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS if not _ignored(s)}
    for signum in previous:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
def stop_signals_ignored() -> Iterator[None]:
    """Stop signals during the block are dropped: for the work a stop itself does (stopping workers,
    closing trials), which a second Ctrl-C must not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def interrupt_after() -> Iterator[None]:
    """A stop signal during the block takes effect when it ends (in the main thread, where signals
    arrive): it is held, then raised again once the previous handlers are back, so it does there what it
    would have done (`Interrupted` under `stop_handlers`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS if not _ignored(s)}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if held:
        signal.raise_signal(held[0])  # its handler runs before this returns
