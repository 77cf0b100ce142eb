"""A storage that goes away for a while (a PostgreSQL restart, a full disk) is waited out, not crashed on.

Once a study is open, every storage call of the sweep and of its jobs (reports, user attributes,
heartbeats) goes through `RetryingStorage`: a call that fails because the database is unreachable or
temporarily unable (`outage_cause`) is tried again with exponential backoff for up to
`hydra.sweeper.storage_retry` seconds. The wait is said once in the log, and so is the storage's return;
threads of one process that hit the same outage share it. Past the window a call raises
`StorageUnreachable` (one line), and from then on calls are tried once: closing the sweep's trials after
giving up must not wait a second window. Any other error (a constraint, a finished trial, a corrupt file)
is raised at once, as before.

Opening a storage is not retried here: a wrong URL or a server that is down at the start stays an
immediate one-line error (`storage.open_storage`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import SweeplabError, chain, one_line
from sweeplab.search.optuna_access import HeartbeatStorage, stale_ids_of, storage_of, trial_id

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy

log = logging.getLogger("sweeplab.sweep")

DEFAULT_RETRY_S = 600.0  # hydra.sweeper.storage_retry's default
FIRST_WAIT_S = 0.5  # the first pause between tries; it doubles up to ...
MAX_WAIT_S = 15.0  # ... this
# A storage that fails again this soon after it came back is the same outage (a full disk lets some writes
# through): waited out again, without a second pair of lines in the log.
RELAPSE_S = 30.0

T = TypeVar("T")

# SQLite's "temporarily unable": another writer holds the lock, the disk is full or failing, the file is
# out of reach (a network file system). "file is not a database", "no such table": not temporary.
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database or disk is full",
    "disk i/o error",
    "unable to open database file",
)
# ... of those, the ones that stop writes only (reads go on): only a write that works ends such an outage
_SQLITE_WRITES_ONLY = ("database is locked", "database table is locked", "database or disk is full")
# Messages of OperationalError that mean a mistake in the schema or the statement, on any database.
_NOT_TRANSIENT = (
    "no such table",
    "no such column",
    "unknown column",
    "does not exist",
    "syntax error",
    "password authentication failed",
)


# Called with True as this process starts waiting out an outage, with False as the storage is back: how a
# worker process tells its sweep, whose console would otherwise show nothing while the study waits
_wait_listeners: list[Callable[[bool], None]] = []


def on_wait(listener: Callable[[bool], None]) -> None:
    """Call `listener(True)` when this process starts waiting for its storage, `listener(False)` when the
    storage is back."""
    _wait_listeners.append(listener)


def off_wait(listener: Callable[[bool], None]) -> None:
    """Stop calling `listener` (see `on_wait`)."""
    with contextlib.suppress(ValueError):
        _wait_listeners.remove(listener)


def _tell_listeners(waiting: bool) -> None:
    for listener in _wait_listeners:
        listener(waiting)


class StorageUnreachable(SweeplabError):
    """The storage stayed unreachable past `hydra.sweeper.storage_retry`: the sweep stops, to be resumed by
    running the same command (a trial's job that raises it lost its storage, not a config problem)."""


class StorageCorrupt(StorageUnreachable):
    """The storage's file is damaged (SQLite: "database disk image is malformed"): nothing more is written to
    it, the sweep stops in one line saying how to check or restore it."""


# SQLite's words for a damaged file (its own or its write-ahead log)
_SQLITE_CORRUPT = ("malformed", "not a database", "file is encrypted")


def _transient_message(exc: BaseException) -> bool:
    text = str(exc).lower()
    if any(m in text for m in _NOT_TRANSIENT):
        return False
    if "sqlite" in type(exc).__module__ or "sqlite" in text:
        return any(m in text for m in _SQLITE_TRANSIENT)
    return True


def corrupt_cause(exc: BaseException) -> BaseException | None:
    """The SQLite error in `exc`'s chain that says the database file is damaged, or None."""
    for e in chain(exc):
        if type(e).__name__ == "DatabaseError" and "sqlite" in type(e).__module__:
            return e if any(m in str(e).lower() for m in _SQLITE_CORRUPT) else None
    return None


def outage_cause(exc: BaseException) -> BaseException | None:
    """The driver error that makes `exc` mean "storage unreachable or temporarily unable", or None.

    Optuna wraps SQLAlchemy's errors in `StorageInternalError` ("... e.g. exceeding max length") and a
    failed opening is a `SweeplabError`: both are looked through to what they were raised from. The first
    other error of the chain decides: SQLAlchemy's OperationalError, InterfaceError, DisconnectionError,
    InvalidatePoolError, pool TimeoutError, PendingRollbackError (Optuna's `_get_trials` retries in the
    session whose connection just died) and any DBAPIError whose connection was invalidated are an outage
    (for SQLite only "locked", "disk is full", "disk I/O error", "unable to open"); integrity and programming
    errors, a corrupt file and Optuna's own errors are not. A storage proxy that does not answer (gRPC's
    UNAVAILABLE) is an outage too."""
    from sqlalchemy import exc as sa

    for e in chain(exc):
        if isinstance(e, StorageUnreachable):
            return None  # waited out already
        if isinstance(e, optuna.exceptions.StorageInternalError | SweeplabError):
            continue  # wrappers: what they were raised from decides
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return e.orig if isinstance(e.orig, BaseException) else e
        if isinstance(e, sa.DisconnectionError | sa.InvalidatePoolError | sa.TimeoutError):
            return e
        if isinstance(e, sa.PendingRollbackError):
            return e  # a connection lost mid-transaction, met again before its session was rolled back
        if isinstance(e, sa.OperationalError | sa.InterfaceError):
            cause = e.orig if isinstance(e.orig, BaseException) else e
            return cause if _transient_message(cause) else None
        if type(e).__name__ in ("OperationalError", "InterfaceError"):  # a driver's own (sqlite3, psycopg)
            return e if _transient_message(e) else None
        grpc = sys.modules.get("grpc")  # imported by a storage proxy's client, if one is open
        if grpc is not None and isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
            return e if getattr(e.code(), "name", None) in _GRPC_TRANSIENT else None
        return None
    return None


# gRPC status codes that mean a storage proxy (`storage.GRPC_SCHEME`) is out of reach or busy for now; the
# proxy itself waits out an outage of its database, so its other errors are not an outage
_GRPC_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class Outage:
    """Retries calls while the storage at `label` (a URL, password masked) is out, for up to `window_s`
    seconds from the outage's first failed call; shared by the threads of a process."""

    def __init__(
        self,
        label: str,
        window_s: float = DEFAULT_RETRY_S,
        first_wait_s: float = FIRST_WAIT_S,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`clock` and `sleep`: the time the window and the waits are measured in (tests pass their own)."""
        self.label, self.window_s = label, float(window_s)
        self.first_wait_s, self.max_wait_s = first_wait_s, max_wait_s
        self.clock, self.sleep = clock, sleep
        self.gave_up = False  # the last outage outlasted the window: calls are tried once until one works
        self._since: float | None = None  # monotonic time of the current outage's first failure
        self._back_at: float | None = None  # ... and of the last outage's end
        self._relapse = False  # the current outage began within RELAPSE_S of the last one's end
        self._writes_only = False  # the current outage stops writes only (a full disk): a read ends nothing
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def give_up(self) -> None:
        """Another process on this storage (a trial's job) waited a whole window for it in vain: calls here
        are tried once, raising at the first failure, until one works."""
        with self._lock:
            self.gave_up = True

    def settled(self, seconds: float) -> bool:
        """No outage now, and none ended less than `seconds` ago: heartbeats written since can be trusted."""
        with self._lock:
            if self._since is not None:
                return False
            return self._back_at is None or self.clock() - self._back_at >= seconds

    def call(self, fn: Callable[..., T], *args: Any, reads: bool = False, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, tried again while it fails with an outage (see the module's docstring).
        `reads`: `fn` only reads, so its working says nothing of an outage that stops writes only."""
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._if_corrupt(exc)
            cause = outage_cause(exc)
            if cause is None or self.window_s <= 0:
                raise
            if self.gave_up:
                raise self._unreachable(cause, again=True) from None
            return self._wait_out(fn, args, kwargs, cause)
        if (self._since is not None or self.gave_up) and not (reads and self._writes_only):
            self._back()
        return result

    def _wait_out(self, fn: Callable[..., T], args: Any, kwargs: Any, cause: BaseException) -> T:
        pause = self.first_wait_s
        since = self._begin(cause)
        while True:
            left = since + self.window_s - self.clock()
            if left <= 0:
                with self._lock:
                    self.gave_up = True
                raise self._unreachable(cause) from None
            self.sleep(min(pause, left))
            pause = min(2 * pause, self.max_wait_s)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                self._if_corrupt(exc)
                new_cause = outage_cause(exc)
                if new_cause is None:
                    raise
                cause = new_cause
                since = self._begin(cause)  # another thread may have seen the storage back meanwhile
                continue
            self._back()
            return result

    def _if_corrupt(self, exc: BaseException) -> None:
        """Raise StorageCorrupt, in one line saying what to do, where `exc` says the file is damaged."""
        cause = corrupt_cause(exc)
        if cause is None:
            return
        path = self.label.removeprefix("sqlite:///")
        raise StorageCorrupt(
            f"storage {self.label} is corrupt ({one_line(cause, with_type=False)}): the sweep stopped and wrote "
            f"nothing more to it; restore the file from a copy, or check it with: "
            f"sqlite3 {path} 'PRAGMA integrity_check'"
        ) from None

    def _begin(self, cause: BaseException) -> float:
        """The start of the outage `cause` belongs to; the first caller to see it says so in the log (not
        when the storage fails again within `RELAPSE_S` of coming back: the same outage)."""
        with self._lock:
            if self._since is None:
                now = self.clock()
                self._since = now
                self._writes_only = any(m in str(cause).lower() for m in _SQLITE_WRITES_ONLY)
                self._relapse = self._back_at is not None and now - self._back_at < RELAPSE_S
                if not self._relapse:
                    log.warning(
                        "storage %s unreachable (%s): waiting up to %g s, retrying",
                        self.label,
                        one_line(cause),
                        self.window_s,
                    )
                    _tell_listeners(True)
            return self._since

    def _back(self) -> None:
        with self._lock:
            if self._since is not None:
                now = self.clock()
                if not self._relapse:
                    log.warning("storage %s back after %.0f s", self.label, now - self._since)
                    _tell_listeners(False)
                self._back_at = now
            self._since = None
            self.gave_up = False

    def _unreachable(self, cause: BaseException, again: bool = False) -> StorageUnreachable:
        how = (
            f"still unreachable ({one_line(cause)}) after waiting {self.window_s:g} s"
            if again
            else f"unreachable for {self.window_s:g} s ({one_line(cause)})"
        )
        return StorageUnreachable(
            f"storage {self.label} {how}: gave up (hydra.sweeper.storage_retry={self.window_s:g}); "
            "run the same command to resume"
        )


BEAT_ATTR = "sweeplab:heartbeat"  # a trial's last heartbeat (seconds since the epoch) where Optuna keeps none


class RetryingStorage(BaseStorage, HeartbeatStorage):
    """Optuna's storage for a study (`delegate`: the `RDBStorage` in Optuna's trial cache, as
    `optuna.storages.get_storage` wraps it, or a `GrpcStorageProxy`), with every call retried through
    `outage` while the database is out. It is what `storage.open_storage` returns.

    Optuna keeps heartbeats in an `RDBStorage` only; its gRPC proxy carries none. Around a storage without
    them, `beat_interval` seconds turns them on here: a heartbeat is the trial's `BEAT_ATTR` system
    attribute, the beating machine's clock time, and a RUNNING trial is stale once that is older than two
    intervals by the reading machine's clock (the machines' clocks must agree within seconds, as NTP keeps
    them on a cluster)."""

    def __init__(self, delegate: BaseStorage, outage: Outage, beat_interval: int | None = None) -> None:
        self.delegate = delegate
        self.outage = outage
        self.beat_interval = None if isinstance(delegate, HeartbeatStorage) else beat_interval

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        reads = name.startswith(("get_", "_get_", "check_"))
        return self.outage.call(getattr(self.delegate, name), *args, reads=reads, **kwargs)

    # -- studies
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._call("create_new_study", directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call("get_study_id_from_name", study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call("get_study_name_from_id", study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call("get_study_directions", study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_user_attrs", study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_system_attrs", study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call("get_all_studies")

    # -- trials
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call("create_new_trial", study_id, template_trial)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._call("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call("get_trial_id_from_study_id_trial_number", study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call("get_trial_number_from_id", trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call("get_trial_param", trial_id, param_name)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        return self._call("set_trial_state_values", trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call("set_trial_intermediate_value", trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_system_attr", trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call("get_trial", trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._call("get_all_trials", study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self._call("get_n_trials", study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call("get_best_trial", study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_params", trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_user_attrs", trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_system_attrs", trial_id)

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self.delegate.check_trial_is_updatable(trial_id, trial_state)  # no storage call

    def remove_session(self) -> None:
        self.delegate.remove_session()

    # -- heartbeats
    def record_heartbeat(self, trial_id: int) -> None:
        if self.beat_interval is None:
            self._call("record_heartbeat", trial_id)
        else:
            self._call("set_trial_system_attr", trial_id, BEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.beat_interval is None:
            return self.outage.call(stale_ids_of, self.delegate, study_id)
        before = time.time() - 2 * self.beat_interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [trial_id(t) for t in running if t.system_attrs.get(BEAT_ATTR, before) < before]

    def get_heartbeat_interval(self) -> int | None:
        if self.beat_interval is not None:
            return self.beat_interval
        interval = getattr(self.delegate, "get_heartbeat_interval", None)
        return interval() if interval is not None else None

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        callback = getattr(self.delegate, "get_heartbeat_stale_trial_callback", None)
        return callback() if callback is not None else None


def settled(storage: BaseStorage, seconds: float) -> bool:
    """Whether `storage` has been reachable for at least `seconds` since the last outage this process saw
    (always, for a storage that does not retry): before that, heartbeats are late through no fault of their
    trials' sweeps."""
    return not isinstance(storage, RetryingStorage) or storage.outage.settled(seconds)


def given_up(study: optuna.Study) -> None:
    """The study's storage stayed out for a whole window in another process: this one stops waiting too."""
    outage = getattr(storage_of(study), "outage", None)
    if isinstance(outage, Outage):
        outage.give_up()
