"""Opening a study for a sweep: create it, or load it and refuse a different direction or search space
before any write; then record what this sweep runs, for reports and exports.

Apart from the loop because it runs once, before the first trial, and tests call it on its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from sweeplab.errors import SweeplabError, config_error
from sweeplab.search.liveness import recover
from sweeplab.search.pruning import describe, sampler_name
from sweeplab.search.records import (
    ATTR_FOCUS_BEST,
    STUDY_COMMAND,
    STUDY_CONFIG_DIR,
    STUDY_CONFIG_NAME,
    STUDY_FIXED,
    STUDY_FOCUSED_FROM,
    STUDY_METRICS,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_SCRIPT,
    STUDY_SETTINGS,
    STUDY_SPACE,
    STUDY_STOPPED,
    fixed_differences,
    stored_space,
)
from sweeplab.search.storage import masked, open_storage, resolve_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from sweeplab.search.plan import SweepPlan

log = logging.getLogger("sweeplab.sweep")


def choose_study(plan: SweepPlan, root_dir: str) -> SweepPlan:
    """With no `hydra.sweeper.study_name`: the default study (the job name plus `study_suffix`) unless it
    holds trials of another setup (fixed settings, search space or directions); then this setup's own
    study, `<default>-<setup id>`, said in one line. The same command always lands in the same study
    (its setup id depends on nothing else), and the first setup keeps the plain name. A named study is
    never renamed: `open_study` refuses another setup in it, and `allow_space_change` continues it."""
    if plan.conf.study_name or plan.conf.allow_space_change:
        return plan
    stored = _stored(plan)
    diff = _setup_differences(plan, stored) if stored is not None else []
    if not diff:
        return plan
    name = plan.derived_name
    log.info(
        "study %s holds another setup (%s): this sweep runs study %s "
        "(hydra.sweeper.study_name=<name> names one; allow_space_change=true continues %s anyway)",
        plan.study_name,
        "; ".join(diff),
        name,
        plan.study_name,
    )
    return dataclasses.replace(
        plan, study_name=name, storage_url=resolve_storage(plan.conf.storage, name, root_dir)
    )


def _stored(plan: SweepPlan) -> optuna.Study | None:
    """The plan's study where it exists, read without writing (a missing SQLite file is not created)."""
    url = plan.storage_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    storage = open_storage(
        url, heartbeat_interval=plan.conf.heartbeat_interval, retry_s=plan.conf.storage_retry
    )
    if plan.study_name not in optuna.study.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=plan.study_name, storage=storage)


def _setup_differences(plan: SweepPlan, study: optuna.Study) -> list[str]:
    """How the stored study's setup differs from the plan's: directions, fixed settings, search space (a
    study stored before fixed settings were recorded is compared on its space alone)."""
    stored_dirs = [d.name.lower() for d in study.directions]
    out = [f"direction: {stored_dirs} -> {plan.directions}"] if stored_dirs != plan.directions else []
    fixed = study.user_attrs.get(STUDY_FIXED)
    out += fixed_differences(fixed, plan.fixed) if fixed is not None else []
    space = stored_space(study)
    return out + (plan.space.differences(space) if space is not None else [])


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
        study.set_user_attr(STUDY_FIXED, plan.fixed)
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
    fixed = study.user_attrs.get(STUDY_FIXED)
    changed = fixed_differences(fixed, plan.fixed) if fixed is not None else []
    if (diff or changed) and not plan.conf.allow_space_change:
        what = " and ".join(
            w for w, d in (("other fixed settings", changed), ("another search space", diff)) if d
        )
        raise SweeplabError(
            f"study {plan.study_name!r} in {masked(plan.storage_url)} was run with {what} "
            f"({'; '.join([*changed, *diff])}); pass hydra.sweeper.allow_space_change=true to continue it "
            "anyway, or hydra.sweeper.study_name=<new name> to start a new study"
        )
    if diff:
        log.warning("continuing study %s with a changed search space: %s", plan.study_name, "; ".join(diff))
        study.set_user_attr(STUDY_SPACE, _json(plan.space.to_json()))
    if changed:
        log.warning(
            "continuing study %s with changed fixed settings: %s", plan.study_name, "; ".join(changed)
        )
    if changed or fixed is None:  # a study stored before fixed settings were recorded adopts this sweep's
        study.set_user_attr(STUDY_FIXED, plan.fixed)
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
        STUDY_CONFIG_DIR: plan.config_dir,
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
