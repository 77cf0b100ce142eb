"""Runs an app's sweep as a test needs it: stopped at its Nth storage write, or as if on another machine.

    python tests/apps/harness.py [--stop-at N --signal KILL|INT] [--host NAME] app.py [overrides...]

`--stop-at N`: every write of the sweep's process to the Optuna storage (creating a trial, setting a param,
an attribute, a state, an intermediate value) is counted, in its main thread (heartbeats come from another
thread at times that vary); right after write N lands, the process sends itself SIGKILL or SIGINT (as
Ctrl-C would). `--stop-at 0` sends nothing and prints `storage writes: <n>` at exit.
`--host NAME`: the sweep's machine is called NAME, so sweeps on one machine see each other as on others.
"""

import argparse
import atexit
import functools
import os
import runpy
import signal
import socket
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


def stop_at_write(stop_at: int, sig: signal.Signals) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--signal", choices=("KILL", "INT"), default="KILL")
    parser.add_argument("--host")
    parser.add_argument("app")
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.stop_at is not None:
        stop_at_write(args.stop_at, signal.SIGKILL if args.signal == "KILL" else signal.SIGINT)
    if args.host:
        socket.gethostname = lambda: args.host
    sys.argv = [args.app, *args.overrides]
    runpy.run_path(args.app, run_name="__main__")


if __name__ == "__main__":
    main()
