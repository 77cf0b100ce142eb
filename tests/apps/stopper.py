"""Runs an app's sweep and stops the sweep at its Nth storage write, to test what the same command finds after.

    python tests/apps/stopper.py <N> <KILL|INT> <app.py> [overrides...]

Every write of the sweep's process to the Optuna storage (creating a trial, setting a param, an attribute,
a state, an intermediate value) is counted, in its main thread (heartbeats come from another thread at
times that vary). Right after write N lands, the process sends itself SIGKILL or SIGINT (as Ctrl-C would).
With N=0 nothing is sent, and the number of writes is printed at exit as `storage writes: <n>`.
"""

import atexit
import functools
import os
import runpy
import signal
import sys
import threading

import optuna

WRITES = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
)


def main() -> None:
    stop_at, how, app, *overrides = sys.argv[1:]
    stop_at = int(stop_at)
    sig = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[how]
    pid = os.getpid()
    count = 0

    def counted(write):
        @functools.wraps(write)
        def wrapper(*args, **kwargs):
            nonlocal count
            result = write(*args, **kwargs)
            if os.getpid() == pid and threading.current_thread() is threading.main_thread():
                count += 1
                if count == stop_at:
                    os.kill(pid, sig)
            return result

        return wrapper

    for name in WRITES:
        setattr(optuna.storages.RDBStorage, name, counted(getattr(optuna.storages.RDBStorage, name)))
    if stop_at == 0:
        atexit.register(
            lambda: print(f"storage writes: {count}", file=sys.stderr) if os.getpid() == pid else None
        )
    sys.argv = [app, *overrides]
    runpy.run_path(app, run_name="__main__")


if __name__ == "__main__":
    main()
