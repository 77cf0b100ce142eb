"""SQLite under concurrent workers: the rollback journal against WAL, side by side in one run.

    python benchmarks/sqlite_concurrency.py [--workers 4] [--trials 60] [--busy-timeout 60]

Method: for each journal mode, a fresh study file; `--workers` processes start together and each runs
`--trials` trials the way a sweeplab trial touches the storage (ask, 3 user attributes, one intermediate
value per epoch for 3 epochs, 3 heartbeats, tell) while a reader process polls the trial list (as the
sweeper and runners/report.py do). Prints, per mode: wall time, trials per second, "database is locked"
errors (with the busy timeout given), and the WAL/rollback throughput ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")  # ask/tell with heartbeats, on purpose
SPACE = {"lr": FloatDistribution(1e-5, 1e-1, log=True)}


def _storage(path: Path, timeout: float) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": timeout}}, heartbeat_interval=60
    )


def _worker(path: Path, trials: int, timeout: float, errors: mp.Value) -> None:
    study = optuna.load_study(study_name="bench", storage=_storage(path, timeout))
    for _ in range(trials):
        try:
            trial = study.ask(SPACE)
            for key in ("host", "pid", "overrides"):
                trial.set_user_attr(key, key)
            for step in range(1, 4):
                study._storage.record_heartbeat(trial._trial_id)
                trial.report(step * 0.1, step)
            study.tell(trial, 0.5)
        except Exception as exc:  # count, do not stop: the point is how often it happens
            if "locked" in f"{exc} {exc.__cause__} {exc.__context__}":
                with errors.get_lock():
                    errors.value += 1
            else:
                raise


def _reader(path: Path, timeout: float, stop: mp.Event) -> None:
    study = optuna.load_study(study_name="bench", storage=_storage(path, timeout))
    while not stop.is_set():
        study.get_trials(deepcopy=False)
        time.sleep(0.05)


def run(mode: str, workers: int, trials: int, timeout: float) -> tuple[float, int]:
    path = Path(tempfile.mkdtemp()) / f"{mode}.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode={mode}")
    optuna.create_study(study_name="bench", storage=_storage(path, timeout))
    ctx = mp.get_context("spawn")
    errors, stop = ctx.Value("i", 0), ctx.Event()
    reader = ctx.Process(target=_reader, args=(path, timeout, stop))
    reader.start()
    procs = [ctx.Process(target=_worker, args=(path, trials, timeout, errors)) for _ in range(workers)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    stop.set()
    reader.join()
    return wall, errors.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--busy-timeout", type=float, default=60.0)
    args = parser.parse_args()
    results = {}
    for mode in ("delete", "wal"):
        wall, errors = run(mode, args.workers, args.trials, args.busy_timeout)
        total = args.workers * args.trials
        results[mode] = total / wall
        print(f"{mode:>6}: {wall:6.1f} s, {total / wall:6.1f} trials/s, {errors} 'database is locked' errors")
    print(f"WAL / rollback journal throughput: {results['wal'] / results['delete']:.2f}x")


if __name__ == "__main__":
    main()
