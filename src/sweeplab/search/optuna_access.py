"""The one place sweeplab reaches into Optuna's private attributes.

Optuna has no public way to get a study's storage and id, a trial's storage id, or the trials whose
heartbeat is stale, and a sweep that asks and tells across processes needs them. Kept here, an Optuna
release that renames one of them breaks this module only. Each function names what it relies on, as in
the Optuna versions sweeplab supports (4.2 to 5.1, where these attributes are unchanged).
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study reads and writes through.

    Relies on `Study._storage`, set by `Study.__init__`; for an `RDBStorage` it is Optuna's
    `_CachedStorage` wrapper around it (see `rdb_backend`)."""
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

    Relies on `_CachedStorage._backend`: Optuna wraps an `RDBStorage` passed to a study in a
    `_CachedStorage` that keeps it there; a storage without the wrapper is taken as it is."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, RDBStorage) else None


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of the study's RUNNING trials whose last heartbeat is older than the storage's grace period
    (two heartbeat intervals when none is set). Only for a study on an `RDBStorage` with heartbeats on.

    Relies on `RDBStorage._get_stale_trial_ids(study_id)` (the public `optuna.storages.fail_stale_trials`
    also fails them, where sweeplab closes them its own way) and on `study_id` above."""
    backend = rdb_backend(study)
    assert backend is not None, "stale_trial_ids needs an RDBStorage"
    return backend._get_stale_trial_ids(study._study_id)
