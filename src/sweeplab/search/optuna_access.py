"""The one place sweeplab reaches into Optuna's private attributes.

Optuna has no public way to get a study's storage and id, a trial's storage id, or the trials whose
heartbeat is stale, and a sweep that asks and tells across processes needs them. Kept here, an Optuna
release that renames one of them breaks this module only. Each function names what it relies on, as in
the Optuna versions sweeplab supports (4.2 to 5.1, where these attributes are unchanged).
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

# The base class of storages with heartbeats (`RDBStorage`, Optuna's trial cache around it), which
# `outage.RetryingStorage` must be too for Optuna to use its heartbeats. Relies on
# `optuna.storages._heartbeat.BaseHeartbeat`, not exported by `optuna.storages`.
HeartbeatStorage = BaseHeartbeat


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study reads and writes through.

    Relies on `Study._storage`, set by `Study.__init__`; for a study opened through `storage.open_storage`
    it is sweeplab's `outage.RetryingStorage` around Optuna's `_CachedStorage` around the `RDBStorage`
    (see `rdb_backend`)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (what the storage's per-study methods take).

    Relies on `Study._study_id`, set by `Study.__init__`."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in its storage (unique across the storage's studies, unlike its number).

    Relies on `Trial._trial_id` and `FrozenTrial._trial_id`, set by their `__init__`."""
    return trial._trial_id


def rdb_backend(study: optuna.Study) -> RDBStorage | None:
    """The study's `RDBStorage`, or None for any other storage (in-memory, journal, gRPC).

    Relies on `Study._storage` (see `storage_of`) and `_CachedStorage._backend`: Optuna wraps an
    `RDBStorage` in a `_CachedStorage` that keeps it there (`optuna.storages.get_storage`); sweeplab's
    `outage.RetryingStorage` keeps the storage it retries in its public `delegate`. A storage without
    either wrapper is taken as it is."""
    storage = study._storage
    while hasattr(storage, "delegate"):
        storage = storage.delegate
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, RDBStorage) else None


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of the study's RUNNING trials whose last heartbeat is older than the storage's grace period
    (two heartbeat intervals when none is set). Only for a study on a storage with heartbeats on.

    Read through the study's storage (`storage_of`: retried while the database is out). Relies on
    `stale_ids_of` below and on `study_id` above."""
    return stale_ids_of(study._storage, study._study_id)


def stale_ids_of(storage: BaseStorage, study_id: int) -> list[int]:
    """Ids of the RUNNING trials of study `study_id` in `storage` whose heartbeat is stale.

    Relies on `BaseHeartbeat._get_stale_trial_ids(study_id)`, which `RDBStorage`, `_CachedStorage` and
    sweeplab's `outage.RetryingStorage` implement (the public `optuna.storages.fail_stale_trials` also
    fails them, where sweeplab closes them its own way)."""
    assert isinstance(storage, HeartbeatStorage), "stale trials need a storage with heartbeats"
    return storage._get_stale_trial_ids(study_id)
