"""What sweeplab stores beside Optuna's own data, and the rules that read it.

Every user attribute sweeplab writes on a trial or a study is named here. The rules: which trials count
toward `n_trials` (an interrupted trial is re-run, one closed before it ran never ran), and how a trial
that never finished is closed and its params queued again (`search.liveness` finds such trials).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.optuna_access import storage_of

log = logging.getLogger("sweeplab.sweep")

# On trials
ATTR_HOST = "host"  # the machine of the sweep that asked the trial
ATTR_PID = "pid"  # ... and its process
ATTR_WORKER_PID = "worker_pid"  # the process that trains the trial (the sweep's own for n_jobs=1)
ATTR_OVERRIDES = "overrides"  # the job's command-line overrides
ATTR_QUICK = "quick_overrides"  # the quick-validation part of `overrides`: dropped to train in full
ATTR_OUTPUT_DIR = "output_dir"
ATTR_EPOCHS = "epochs_run"
ATTR_MAX_EPOCHS = "max_epochs"  # the epochs the trial would have run unpruned
ATTR_PRUNED_AT = "pruned_at_epoch"  # None once set: the trainer refused to stop (see ATTR_PRUNE_REFUSED)
# the pruner said stop and the trainer went on (min_epochs, a callback): {asked_at, stopped_at (None: never
# stopped, so the trial completes), epochs_run, why}; the sweep warns once
ATTR_PRUNE_REFUSED = "prune_refused"
ATTR_FOLD_VALUES = "fold_values"  # a k-fold trial's value of each fold it finished (its value is their mean)
ATTR_FAIL_REASON = "fail_reason"
ATTR_TEST = "test_metrics"  # what the job measured on its held-out test split, where it has one
ATTR_LOST = "lost"  # how a trial's process died without a result (killed, crashed): then it is re-run
ATTR_RETRY_OF = "retry_of"  # on a re-queued trial: the number of the interrupted one
ATTR_GUARD_SAVED = "guard_saved"  # [[step, rule], ...]: the pruner said stop, the guard said no
ATTR_RESCUE_OF = "rescue_of"  # on a rescue trial: the number of the pruned trial it re-runs
# on a pruned trial: {checkpoint, step, epoch, fold} of the epoch it was pruned at (a rescue resumes there)
ATTR_PAUSED = "paused"
# the checkpoint files the trial's fits saved (recorded by PruningCallback): hydra.sweeper.checkpoints.keep
ATTR_CHECKPOINTS = "checkpoints"
# on a rescue, or the re-run of an interrupted trial: {trial, step, checkpoint} it resumed from, or {trial,
# reason} why it trained from scratch
ATTR_RESUMED = "resumed"
# on a running trial: {checkpoint, step, epoch, fold} of its last finished epoch, saved with the whole training
# state (hydra.sweeper.resume_interrupted); the re-run of the trial, once interrupted, resumes there
ATTR_RESUMABLE = "resumable"
ATTR_FOCUS_BEST = "best_of"  # on the first trial of a focused study: the study whose best params it re-runs
ATTR_CONFIG_ERROR = "config_error"  # the trial's job rejected the config: the study stopped, nothing counted
# a result the trial's worker computed when its sweep was gone (so never told): what it was, and why
ATTR_UNTOLD = "untold_outcome"
# Values of ATTR_FAIL_REASON for trials that do not count toward n_trials: an interrupted trial runs again;
# a trial "not run: ..." was closed before its job started (see StudySweep.ask)
INTERRUPTED = "interrupted"
NOT_RUN = "not run: "
SURPLUS = f"{NOT_RUN}other sweeps had started the study's last trials"
# The fail reason of a trial whose worker made no progress for hydra.sweeper.stall_timeout and was killed
# (stopped, hung, deadlocked): closed like an interrupted trial, so its params run again
STALLED = "stalled"

# On studies: what reports and exports need, written by every run of the sweep
STUDY_SPACE = "sweeplab:search_space"
STUDY_CONFIG_NAME = "sweeplab:config_name"
STUDY_SCRIPT = "sweeplab:script"
STUDY_COMMAND = "sweeplab:command"
STUDY_METRICS = "sweeplab:metrics"
STUDY_SAMPLER = "sweeplab:sampler"
STUDY_PRUNER = "sweeplab:pruner"
STUDY_FOCUSED_FROM = "sweeplab:focused_from"  # the earlier study a focused one narrows
STUDY_STOPPED = "sweeplab:stopped"
STUDY_PAUSED_REMOVED = "sweeplab:paused_removed"  # {trial number: why its paused checkpoint was removed}
STUDY_CHECKPOINTS_REMOVED = "sweeplab:checkpoints_removed"  # {trial number: why its checkpoints were removed}
STUDY_SETTINGS = "sweeplab:settings"  # the sweep's sampler, pruner and budget as configured (for the report)
STUDY_FIXED = (
    "sweeplab:fixed"  # {key: value}: what every trial runs with beside its params (plan.fixed_settings)
)
STUDY_CONFIG_DIR = "sweeplab:config_dir"  # the app's primary config dir: a report composes the app's config

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def sign(direction: str | StudyDirection) -> float:
    """+1 where larger values are better, -1 where smaller ones are: `sign * value` ranks in any direction."""
    name = direction.name if isinstance(direction, StudyDirection) else str(direction)
    return 1.0 if name.lower() == "maximize" else -1.0


def never_ran(trial: FrozenTrial) -> bool:
    """Closed before its job started (a repeat, a place other sweeps took): its params were not tried."""
    return str(trial.user_attrs.get(ATTR_FAIL_REASON, "")).startswith(NOT_RUN)


def interrupted(trial: FrozenTrial) -> bool:
    """Closed because its sweep stopped: its params run again in a new trial."""
    return trial.user_attrs.get(ATTR_FAIL_REASON) in (INTERRUPTED, STALLED)


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward n_trials: an interrupted trial is re-run, one "not run" never ran, and
    a config error stopped the study (it would fail every trial alike)."""
    return (
        trial.state in FINISHED
        and not interrupted(trial)
        and not never_ran(trial)
        and ATTR_CONFIG_ERROR not in trial.user_attrs
    )


def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if counts(t)]


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state, every state named (0 where none)."""
    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front (complete trials no other complete trial dominates), by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def ranked(trials: Iterable[FrozenTrial], direction: str | StudyDirection) -> list[FrozenTrial]:
    """The complete trials, best first by the first objective."""
    s = sign(direction)
    return sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -s * t.values[0])


def stored_space(study: optuna.Study) -> dict[str, str] | None:
    """The search space the study was run with, as distribution JSON by param name."""
    raw = study.user_attrs.get(STUDY_SPACE)
    return json.loads(raw) if raw else None


def fixed_differences(stored: dict[str, str], mine: dict[str, str]) -> list[str]:
    """Human-readable differences between a stored study's fixed settings and a sweep's:
    `key: stored -> this sweep's`, `(not set)` where one has no such setting."""

    def shown(key: str, values: dict[str, str]) -> str:
        if key not in values:
            return "(not set)"
        return "deleted" if key.startswith("~") else values[key]

    keys = sorted(stored.keys() | mine.keys(), key=lambda k: k.lstrip("~"))
    return [
        f"{k.lstrip('~')}: {shown(k, stored)} -> {shown(k, mine)}"
        for k in keys
        if stored.get(k) != mine.get(k) or (k in stored) != (k in mine)
    ]


def searched_space(study: optuna.Study, trials: Iterable[FrozenTrial]) -> dict[str, BaseDistribution]:
    """The searched distributions: as stored with the study, else as its trials sampled them."""
    stored = stored_space(study)
    if stored:
        return {name: json_to_distribution(js) for name, js in stored.items()}
    space: dict[str, BaseDistribution] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            space.setdefault(name, dist)
    return space


def close_interrupted(
    study: optuna.Study,
    trial_id: int,
    requeue: bool = True,
    how: str | None = None,
    reason: str = INTERRUPTED,
    resumable: bool = True,
) -> bool:
    """Store a trial that never finished as FAIL ("interrupted") and queue its params to run again first;
    the re-run resumes from the trial's last finished epoch where it saved one, unless not `resumable`
    (Ctrl-C: the user stopped it).

    Safe when several sweeps find the same trial: only the one whose state change lands requeues it.
    """
    storage = storage_of(study)
    try:
        if not resumable:
            storage.set_trial_user_attr(trial_id, ATTR_RESUMABLE, None)
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
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
