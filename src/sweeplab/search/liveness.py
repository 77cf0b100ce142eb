"""Which RUNNING trials are alive, and closing the ones whose sweep died so that their params run again.

A sweep owns the trials it asks. Right after `study.ask` creates a trial (RUNNING), the sweep records
its first heartbeat, then writes its owner (host and pid); a thread of the sweep then beats for every
trial it owns until it tells the trial's end. So every RUNNING trial is in one of three cases:

- its owner is a process on this machine: alive exactly while that process exists;
- its owner is elsewhere: alive while its heartbeat is younger than the grace period (two intervals);
- it has no owner (its sweep died in the milliseconds between creating it and writing the owner): dead
  once it is older than the grace period.

A sweep never closes a trial it owns itself: it knows those are alive. The sweep beats, not the trial's
job: a job waiting in a cluster queue is alive for the study, and a job whose sweep died has nobody to
tell its value, so its trial must be re-run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import SweeplabError, one_line
from sweeplab.launching.interrupts import block_stop_signals
from sweeplab.search.optuna_access import HeartbeatStorage, rdb_backend, stale_trial_ids, storage_of, trial_id
from sweeplab.search.outage import settled
from sweeplab.search.records import ATTR_HOST, ATTR_PID, ATTR_UNTOLD, close_interrupted

log = logging.getLogger("sweeplab.sweep")

# With heartbeats off, how long a trial may be RUNNING without an owner before it counts as dead.
UNOWNED_GRACE_S = 60


def owned_here() -> dict[str, Any]:
    return {ATTR_HOST: socket.gethostname(), ATTR_PID: os.getpid()}


def grace_period(study: optuna.Study) -> float | None:
    """Seconds without a heartbeat after which a trial is dead; None when heartbeats are off."""
    storage = storage_of(study)
    interval = storage.get_heartbeat_interval() if isinstance(storage, HeartbeatStorage) else None
    if interval is None:
        return None
    rdb = rdb_backend(study)
    return float((rdb.grace_period if rdb is not None else None) or 2 * interval)


class Heartbeats:
    """Beats for the trials this sweep owns, every `interval` seconds, from a thread of the sweep."""

    def __init__(self, study: optuna.Study, interval: int | None) -> None:
        self.storage = storage_of(study)
        self.interval = interval
        self.owned: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        """Beat once now (before the owner is written: see the module's docstring), then every interval."""
        if self.interval:
            self.storage.record_heartbeat(trial_id)
        with self._lock:
            self.owned.add(trial_id)
        if self.interval and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="sweeplab-heartbeats", daemon=True)
            self._thread.start()

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.owned.discard(trial_id)

    def close(self) -> None:
        """Stop beating; a beat already being written is waited for (briefly: the storage may be out), so
        that none lands after this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * (self.interval or 1))

    def _beat(self) -> None:
        assert self.interval
        block_stop_signals()  # Ctrl-C must wake the main thread, which may be waiting for a trial
        while not self._stop.wait(self.interval):
            with self._lock:
                owned = sorted(self.owned)
            for owned_id in owned:
                try:
                    self.storage.record_heartbeat(owned_id)
                except Exception as exc:  # a storage hiccup: the next beat tries again
                    log.warning("heartbeat of trial id %d not recorded: %s", owned_id, one_line(exc))


def _owner_gone(trial: FrozenTrial) -> bool:
    """Owned by a process on this machine that no longer exists."""
    if trial.user_attrs.get(ATTR_HOST) != socket.gethostname():
        return False
    pid = trial.user_attrs.get(ATTR_PID)
    return isinstance(pid, int) and _gone(pid)


def _gone(pid: int) -> bool:
    """No process `pid` on this machine (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def dead_trials(study: optuna.Study, alive: Collection[int] = ()) -> dict[int, str]:
    """RUNNING trials known to be dead, by trial id, with how it is known; `alive`: ids this sweep owns.

    Until the storage has been back for a grace period after an outage this process saw, no trial is
    judged by its age (stale heartbeats, no owner yet): their sweeps could not write either. A trial
    whose owner on this machine is gone is dead regardless."""
    grace = grace_period(study)
    stale = set(stale_trial_ids(study)) if grace is not None else set()
    unowned_after = timedelta(seconds=grace if grace is not None else UNOWNED_GRACE_S)
    by_age = settled(storage_of(study), unowned_after.total_seconds())  # after the reads above
    now = datetime.now()
    dead = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = trial_id(trial)
        if tid in alive:
            continue
        if _owner_gone(trial):
            dead[tid] = f"its sweep (pid {trial.user_attrs[ATTR_PID]}) stopped"
        elif not by_age:
            continue
        elif tid in stale:
            dead[tid] = f"no heartbeat for {grace:g}s: its sweep or machine stopped"
        elif (
            ATTR_HOST not in trial.user_attrs
            and trial.datetime_start is not None
            and now - trial.datetime_start > unowned_after
        ):
            dead[tid] = "its sweep stopped before it could start the trial"
    return dead


def recover(study: optuna.Study, alive: Collection[int] = ()) -> list[int]:
    """Close the dead RUNNING trials (FAIL, interrupted) and queue their params to run again first.

    Several sweeps may find the same trial: only the one whose state change lands queues it again."""
    closed = []
    for dead_id, how in dead_trials(study, alive).items():
        if close_interrupted(study, dead_id, how=how):
            trial = storage_of(study).get_trial(dead_id)
            closed.append((trial.number, how))
            if ATTR_UNTOLD in trial.user_attrs:  # its worker finished after its sweep was gone
                log.warning(
                    "trial %d's worker finished after its sweep stopped (%s): that result is not used; its "
                    "params run again",
                    trial.number,
                    trial.user_attrs[ATTR_UNTOLD],
                )
    if closed:
        log.warning(
            "trials %s were left running by a sweep that stopped (%s): marked FAIL (interrupted), re-run first",
            [n for n, _ in closed],
            "; ".join(sorted({how for _, how in closed})),
        )
    return [n for n, _ in closed]


def running_elsewhere(study: optuna.Study, alive: Collection[int]) -> list[FrozenTrial]:
    """RUNNING trials of the study that this sweep does not own (`alive`: the ids it owns)."""
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if trial_id(t) not in alive
    ]


SWEEP_LOCK = ".sweep.lock"  # in a sweep dir: "<host> <pid>" while a sweep writes there, "ended <time>" after
_ENDED = "ended"


def claim_sweep_dir(sweep_dir: Path) -> Path:
    """`sweep_dir`, or `<sweep_dir>_2`, `_3`, ... when another sweep holds it or ran alongside this one:
    sweeps started in the same second (whose time-stamped dirs have one name) never write into each other's
    files, even when one ends before the other gets here. The claim is a lock file created atomically; a
    dead sweep's lock on this machine is taken over (the sweep resumes in its dir), and so is the record of
    a sweep that ended before this process started (the same fixed `hydra.sweep.dir` run again)."""
    for i in range(1, 1000):
        candidate = sweep_dir if i == 1 else sweep_dir.with_name(f"{sweep_dir.name}_{i}")
        candidate.mkdir(parents=True, exist_ok=True)
        lock = candidate / SWEEP_LOCK
        mine = f"{socket.gethostname()} {os.getpid()}"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not _lock_is_dead(lock):
                continue
            lock.write_text(mine)
            return candidate
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        return candidate
    raise SweeplabError(f"hydra.sweep.dir={str(sweep_dir)!r}: 999 sweeps hold it and its numbered variants")


LATEST = "latest"  # beside the sweep dirs: a link to the newest one started


def link_latest(sweep_dir: Path) -> None:
    """Point `<parent>/latest` at `sweep_dir`, replacing the link atomically (another sweep may be doing the
    same); a file system without symbolic links gets none, and says so in the log."""
    link = sweep_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        log.warning("%s is not a link; not pointing it at %s", link, sweep_dir.name)
        return
    tmp = sweep_dir.parent / f".{LATEST}.{socket.gethostname()}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(sweep_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:
        log.warning("no %s link beside %s: %s", LATEST, sweep_dir, exc)


def release_sweep_dir(sweep_dir: Path) -> None:
    """Leave the dir's lock saying when this sweep ended: a sweep that started before then ran alongside it."""
    lock = sweep_dir / SWEEP_LOCK
    tmp = lock.with_name(f"{SWEEP_LOCK}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.write_text(f"{_ENDED} {time.time()}")
        os.replace(tmp, lock)


def _lock_is_dead(lock: Path) -> bool:
    """The lock's sweep is gone: dead on this machine, or ended before this process started."""
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return False  # being written right now
    if host == _ENDED:
        return float(pid) < _PROCESS_STARTED
    return host == socket.gethostname() and pid.isdigit() and _gone(int(pid))


def _process_started() -> float:
    """When this process started (seconds since the epoch), from Linux's /proc; elsewhere, when this module
    was imported, a little later."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return time.time()


_PROCESS_STARTED = _process_started()
