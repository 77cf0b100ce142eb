"""Opening a study for a sweep: create it, or load it and refuse a different direction or search space
before any write; then record what this sweep runs, for reports and exports.

Apart from the loop because it runs once, before the first trial, and tests call it on its own.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import optuna

from sweeplab.errors import SweeplabError, config_error
from sweeplab.search.liveness import recover
from sweeplab.search.pruning import describe, sampler_name
from sweeplab.search.records import (
    ATTR_FOCUS_BEST,
    STUDY_COMMAND,
    STUDY_CONFIG_NAME,
    STUDY_FOCUSED_FROM,
    STUDY_METRICS,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_SCRIPT,
    STUDY_SETTINGS,
    STUDY_SPACE,
    STUDY_STOPPED,
    stored_space,
)
from sweeplab.search.storage import masked, open_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from sweeplab.search.plan import SweepPlan

log = logging.getLogger("sweeplab.sweep")


def open_study(plan: SweepPlan) -> optuna.Study:
    """Load the study or create it; a different search space or direction is refused before any write."""
    storage = open_storage(
        plan.storage_url, heartbeat_interval=plan.conf.heartbeat_interval, retry_s=plan.conf.storage_retry
    )
    study = None
    if plan.study_name not in optuna.study.get_all_study_names(storage):
        study = _create(plan, storage)
    if study is None:
        study = _load(plan, storage)
    _record_sweep(study, plan)
    recover(study)
    return study


def _create(plan: SweepPlan, storage: BaseStorage) -> optuna.Study | None:
    """The new study, or None when another sweep created it a moment ago."""
    try:
        study = optuna.create_study(
            study_name=plan.study_name,
            storage=storage,
            sampler=plan.sampler,
            pruner=plan.pruner,
            directions=plan.directions,
        )
        study.set_user_attr(STUDY_SPACE, _json(plan.space.to_json()))
        log.info("study %s created in %s", plan.study_name, masked(plan.storage_url))
        if plan.focus is not None:
            _start_focused(study, plan)
    except optuna.exceptions.DuplicatedStudyError:
        return None  # another sweep created it a moment ago: the caller loads it
    return study


def _load(plan: SweepPlan, storage: BaseStorage) -> optuna.Study:
    """The stored study, once its directions and search space agree with the plan's."""
    study = optuna.load_study(
        study_name=plan.study_name, storage=storage, sampler=plan.sampler, pruner=plan.pruner
    )
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != plan.directions:
        raise config_error(
            "hydra.sweeper.direction",
            plan.directions,
            f"study {plan.study_name!r} was created with {stored_dirs}; use another hydra.sweeper.study_name",
        )
    stored = stored_space(study)
    diff = plan.space.differences(stored) if stored is not None else []
    if diff and not plan.conf.allow_space_change:
        raise SweeplabError(
            f"study {plan.study_name!r} in {masked(plan.storage_url)} was run with another search space "
            f"({'; '.join(diff)}); pass hydra.sweeper.allow_space_change=true to continue it anyway, "
            "or hydra.sweeper.study_name=<new name> to start a new study"
        )
    if diff:
        log.warning("continuing study %s with a changed search space: %s", plan.study_name, "; ".join(diff))
        study.set_user_attr(STUDY_SPACE, _json(plan.space.to_json()))
    log.info(
        "study %s loaded from %s: %d trials so far",
        plan.study_name,
        masked(plan.storage_url),
        len(study.trials),
    )
    return study


def _record_sweep(study: optuna.Study, plan: SweepPlan) -> None:
    """What this sweep runs (config, command, sampler, pruner, budget), and that it has not finished."""
    for key, value in {
        STUDY_CONFIG_NAME: plan.config_name,
        STUDY_SCRIPT: plan.script,
        STUDY_COMMAND: plan.command,
        STUDY_METRICS: plan.metrics,
        STUDY_SAMPLER: sampler_name(plan.sampler),
        STUDY_PRUNER: describe(plan.pruner),
        STUDY_SETTINGS: {
            "sampler": plan.conf.sampler,
            "pruner": plan.conf.pruner,
            "n_trials": plan.n_trials,
            "n_jobs": plan.n_jobs,
            "timeout": plan.conf.timeout,
            "quick_validation": plan.quick_overrides,
        },
        STUDY_STOPPED: f"not finished: a sweep started {time.strftime('%Y-%m-%d %H:%M:%S')} is running or was killed",
    }.items():
        study.set_user_attr(key, value)


def _start_focused(study: optuna.Study, plan: SweepPlan) -> None:
    """Link the new study to the earlier one and make the earlier best its first trial."""
    assert plan.focus is not None
    study.set_user_attr(STUDY_FOCUSED_FROM, plan.focus.study_name)
    searched = plan.space.all_distributions()
    best = {k: v for k, v in plan.focus.best_params.items() if k in searched}
    study.enqueue_trial(best, user_attrs={ATTR_FOCUS_BEST: plan.focus.study_name})
    log.info(
        "focused on study %s: %s; its best params run first",
        plan.focus.study_name,
        ", ".join(f"{k}: {v}" for k, v in plan.focus.space.items()),
    )


def _json(data: dict[str, str]) -> str:
    return json.dumps(data, sort_keys=True)
