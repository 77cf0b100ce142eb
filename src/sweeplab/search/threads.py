"""Torch's CPU threads in a sweep that forks its workers.

GNU OpenMP (torch's intra-op threads on Linux) does not survive fork: once a process has run a parallel
region with a team of threads, a process forked from it waits forever at its own first parallel region,
for threads that live only in the parent. A sweep that forks workers therefore runs its own torch on one
thread from the start (its config check decodes data and builds the model, and those ops would start a
team), and each worker gets its share of the cores as it starts.
"""

from __future__ import annotations

import os
import sys

_ENV = "OMP_NUM_THREADS"
_UNSET = object()
_users_env: object = _UNSET  # the sweep's OMP_NUM_THREADS before it was set to 1 (None: it had none)


def single_threaded_sweep() -> None:
    """In the sweep, before anything runs torch ops: one intra-op thread, so its forks can use threads."""
    global _users_env
    if _users_env is _UNSET:
        _users_env = os.environ.get(_ENV)
    os.environ[_ENV] = "1"  # for a torch this process imports later (the check's)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def worker_threads(threads: int) -> None:
    """In a forked worker: the environment as the user gave it, and `threads` torch threads (the cores
    shared out, so k workers do not oversubscribe them)."""
    if _users_env is not _UNSET:
        if _users_env is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = str(_users_env)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
