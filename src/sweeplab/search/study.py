"""The study's storage: where it lives, opening it with clear errors, and what a trial records in it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import config_error
from sweeplab.search.guard import ATTR_RESCUE_OF

log = logging.getLogger(__name__)

# The `_target_` of sweeplab's Hydra sweeper: how a job or a callback knows it runs inside a study.
SWEEPER_TARGET = "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper"

# Where a sweep puts a storage URL that carries a password, for its jobs: the URL itself stays out of
# the configs and overrides Hydra saves in every job's .hydra/ (they hold ${oc.env:SWEEPLAB_STORAGE}).
STORAGE_ENV = "SWEEPLAB_STORAGE"

# Where the embedded default lives, relative to the directory the command is started from.
STUDIES_DIR = "studies"

# User attributes sweeplab writes on trials and studies.
ATTR_SPACE = "sweeplab:search_space"
ATTR_HOST = "host"
ATTR_PID = "pid"
ATTR_FAIL_REASON = "fail_reason"
ATTR_EPOCHS = "epochs_run"
ATTR_PRUNED_AT = "pruned_at_epoch"
ATTR_RETRY_OF = "retry_of"
ATTR_OVERRIDES = "overrides"
ATTR_OUTPUT_DIR = "output_dir"
ATTR_WORKER_PID = "worker_pid"  # the process that trains the trial (the sweeper's own for n_jobs=1)
ATTR_LOST = "lost"  # how a trial's process died without a result (killed, crashed): then it is re-run
ATTR_QUICK = "quick_overrides"  # the quick-validation part of `overrides`: dropped to train in full
ATTR_MAX_EPOCHS = "max_epochs"  # the epochs the trial would have run unpruned
ATTR_FOLD_VALUES = "fold_values"  # a k-fold trial's value of each fold it finished (its value is their mean)
ATTR_FOCUS_BEST = "best_of"  # on the first trial of a focused study: the study whose best params it re-runs
INTERRUPTED = "interrupted"
SURPLUS = "not run: other sweeps had started the study's last trials"  # see StudySweep.surplus
# Study attributes: what reports and exports need, written by every run of the sweep.
STUDY_CONFIG_NAME = "sweeplab:config_name"
STUDY_SCRIPT = "sweeplab:script"
STUDY_COMMAND = "sweeplab:command"
STUDY_METRICS = "sweeplab:metrics"
STUDY_SAMPLER = "sweeplab:sampler"
STUDY_FOCUSED_FROM = "sweeplab:focused_from"  # the earlier study a focused one narrows
STUDY_PRUNER = "sweeplab:pruner"
STUDY_STOPPED = "sweeplab:stopped"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own status line per trial replaces Optuna's
# Heartbeats with ask/tell are what sweeplab does on purpose (each trial's process records its own).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", message="Argument ``heartbeat_interval`` is an experimental feature")


def default_storage(study_name: str, root_dir: str | os.PathLike) -> str:
    """`<root_dir>/studies/<study_name>.db`: outside the timestamped sweep dirs, so every rerun finds it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name).strip("._") or "study"
    return f"sqlite:///{Path(root_dir).resolve() / STUDIES_DIR / safe}.db"


def resolve_storage(
    storage: Any, study_name: str, root_dir: str | os.PathLike, key: str = "hydra.sweeper.storage"
) -> str:
    if storage in (None, "", "null"):
        return default_storage(study_name, root_dir)
    if not isinstance(storage, str):
        raise config_error(key, storage, "must be a database URL (sqlite:///..., postgresql://...)")
    return storage


def masked(url: str) -> str:
    """The URL as it may appear in logs and files: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def masked_argument(argument: str) -> str:
    """A command-line argument as it may be stored: `key=<url>` with the URL's password masked."""
    key, sep, value = argument.partition("=")
    return f"{key}{sep}{masked(value)}" if sep and "://" in value else argument


def has_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password is not None
    except Exception:
        return bool(re.search(r"//[^:/@]+:[^@]*@", url))


def open_storage(
    url: str, key: str = "hydra.sweeper.storage", heartbeat_interval: int | None = None
) -> optuna.storages.RDBStorage:
    """An Optuna storage for `url`, failing with one line (naming `key`) when it cannot be opened.

    With `heartbeat_interval`, trials of this storage that stop sending heartbeats become stale
    (Optuna's heartbeat: see `recover_stale`).

    SQLite runs in WAL mode (readers never block the writer; several worker processes write trials,
    heartbeats and reports) with a 60 s busy timeout. Opening is tried three times: processes that
    open a new database at once (several sweeps, a report) race to create Optuna's tables.
    """
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        _wal(path)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval
            )
        except Exception as exc:  # sqlalchemy/driver errors come in many types; all mean "cannot open"
            if attempt < attempts and not isinstance(exc, ImportError | ModuleNotFoundError):
                time.sleep(1.0)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise config_error(key, masked(url), f"cannot open it: {first}") from None
    raise AssertionError("unreachable")


def checkpoint(url: str) -> None:
    """Fold SQLite's write-ahead log back into the database file, so that the .db file alone holds the
    study (to copy or send); the WAL is otherwise folded only when the last connection closes cleanly."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url[len("sqlite:///") :])
    if path.is_file():
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _wal(path: Path) -> None:
    """Switch the SQLite file to write-ahead logging (a property of the file: set once, kept)."""
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def stored_space(study: optuna.Study) -> dict[str, str] | None:
    raw = study.user_attrs.get(ATTR_SPACE)
    return json.loads(raw) if raw else None


def space_from_json(data: dict[str, str]) -> dict[str, Any]:
    return {name: json_to_distribution(js) for name, js in data.items()}


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward n_trials: an interrupted trial is re-run and a surplus one never ran."""
    return trial.state in FINISHED and trial.user_attrs.get(ATTR_FAIL_REASON) not in (INTERRUPTED, SURPLUS)


def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if counts(t)]


def owned_here() -> dict[str, Any]:
    return {ATTR_HOST: socket.gethostname(), ATTR_PID: os.getpid()}


def is_orphaned(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose sweeper process on this machine is gone (killed, crashed)."""
    if trial.user_attrs.get(ATTR_HOST) != socket.gethostname():
        return False
    pid = trial.user_attrs.get(ATTR_PID)
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def close_interrupted(
    study: optuna.Study, trial_id: int, requeue: bool = True, how: str | None = None
) -> bool:
    """Store a trial that never finished as FAIL ("interrupted") and queue its params to run again first.

    Safe when several sweeps find the same trial: only the one whose state change lands requeues it.
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, INTERRUPTED)
        if how:
            storage.set_trial_user_attr(trial_id, ATTR_LOST, how)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished, or another sweep closed it first
    frozen = storage.get_trial(trial_id)
    if requeue and frozen.params:
        rescue = (
            {ATTR_RESCUE_OF: frozen.user_attrs[ATTR_RESCUE_OF]} if ATTR_RESCUE_OF in frozen.user_attrs else {}
        )
        study.enqueue_trial(
            frozen.params, user_attrs={ATTR_RETRY_OF: frozen.number, **rescue}, skip_if_exists=False
        )
    return True


def recover_stale(study: optuna.Study) -> list[int]:
    """Close RUNNING trials whose heartbeat stopped (their process or machine died); their params run again."""
    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache wrapper
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.get_heartbeat_interval() is None:
        return []
    grace = storage.grace_period or 2 * storage.get_heartbeat_interval()
    closed = [
        storage.get_trial(trial_id).number
        for trial_id in storage._get_stale_trial_ids(study._study_id)  # Optuna's own staleness query
        if close_interrupted(
            study, trial_id, how=f"no heartbeat for {grace}s: its process or machine stopped"
        )
    ]
    if closed:
        log.warning("trials %s stopped sending heartbeats: marked FAIL (interrupted), re-run first", closed)
    return closed


def recover_orphans(study: optuna.Study) -> list[int]:
    """Close trials left RUNNING by a killed sweeper on this machine; their params run again first."""
    closed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_orphaned(trial):
            close_interrupted(study, trial._trial_id)
            closed.append(trial.number)
    if closed:
        log.warning(
            "trials %s were left running by a stopped sweep: marked FAIL (interrupted), re-run first", closed
        )
    return closed
