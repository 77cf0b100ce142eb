"""Sweeps that share a study: its n_trials places, repeats of another trial's params, and waiting for
the trials other sweeps still run.

Several sweeps (processes, machines) may run one study at once, and each only sees the storage. The
rules here keep them from running more than n_trials between them or the same params twice, and let a
sweep end only when the others' trials have ended too (it re-runs those of a sweep that died).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.liveness import grace_period, owned_here, running_elsewhere
from sweeplab.search.optuna_access import storage_of, trial_id
from sweeplab.search.records import (
    ATTR_FAIL_REASON,
    ATTR_FOCUS_BEST,
    ATTR_HOST,
    ATTR_PID,
    ATTR_RESCUE_OF,
    ATTR_RETRY_OF,
    SURPLUS,
    counted,
    counts,
    interrupted,
    never_ran,
)
from sweeplab.search.rescue import own_trials, waiting_rescues

if TYPE_CHECKING:
    from sweeplab.search.plan import SweepPlan

log = logging.getLogger("sweeplab.sweep")

WAIT_S = 5.0  # how often a sweep waiting for other sweeps' trials looks again


def remaining(n_trials: int, trials: list[FrozenTrial]) -> int:
    """Trials still to start: n_trials minus finished and running ones, on every worker and machine,
    plus rescues waiting to start (they come on top of n_trials)."""
    own = own_trials(trials)
    running = [t for t in own if t.state == TrialState.RUNNING]
    return n_trials - len(counted(own)) - len(running) + len(waiting_rescues(trials))


def surplus(study: optuna.Study, n_trials: int, trial: optuna.Trial) -> bool:
    """Whether `trial` would go past n_trials: places go by trial number, which the storage hands out in order.

    Sweeps on several machines each see a free place and ask at the same moment; the later numbers lose.
    """
    if ATTR_RESCUE_OF in trial.user_attrs:
        return False  # a rescue comes on top of n_trials
    places = sorted(
        t.number
        for t in study.get_trials(deepcopy=False)
        if (t.state in (TrialState.RUNNING, TrialState.WAITING) or counts(t))
        and ATTR_RESCUE_OF not in t.user_attrs
    )
    return places.index(trial.number) >= n_trials


def twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of another trial with the same params, if any (None for a deliberate re-run).

    Every sweep checks its new trial against all others once its params are set, so of two sweeps that
    drew the same point at the same moment at least one sees the other's: the study never runs it twice.
    """
    params = trial.params
    if not params or any(k in trial.user_attrs for k in (ATTR_RETRY_OF, ATTR_RESCUE_OF, ATTR_FOCUS_BEST)):
        return None
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or interrupted(other) or never_ran(other):
            continue
        if other.params == params:
            return other.number
    return None


def queue_untaken(study: optuna.Study, plan: SweepPlan, number: int) -> str | None:
    """After a repeat in a finite space (a sampler may keep proposing the points it likes): queue one of
    the configurations no trial has, drawn by the trial's `number`. Returns why the space is exhausted
    when none is left, else None (also for a continuous or large space: the next proposal differs)."""
    every = None if plan.custom_search_space else plan.space.configurations()
    if every is None:
        return None
    taken = [t.params for t in study.get_trials(deepcopy=False) if not never_ran(t)]
    untaken = [c for c in every if c not in taken]
    if not untaken:
        return f"every one of the {len(every)} configurations of the search space has a trial"
    pick = untaken[int(np.random.default_rng([plan.n_trials, number]).integers(len(untaken)))]
    study.enqueue_trial(pick, skip_if_exists=False)
    return None


def grid_started(study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> bool:
    """A grid whose every point has started (and no re-run waits): a new trial could only repeat one."""
    started = getattr(sampler, "all_started", None)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return started is not None and not waiting and started(study)


def close_surplus_waiting(study: optuna.Study) -> None:
    """The study has its trials: close re-queued trials still waiting (their sweep died after queueing
    them), so that nothing is left to run. A waiting trial is claimed (WAITING → RUNNING) before it is
    closed, so one that another sweep takes at this moment is left to it."""
    storage = storage_of(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if ATTR_RESCUE_OF in t.user_attrs:
            continue
        tid = trial_id(t)
        for key, value in owned_here().items():
            storage.set_trial_user_attr(tid, key, value)
        if storage.set_trial_state_values(tid, TrialState.RUNNING):
            storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, SURPLUS)
            storage.set_trial_state_values(tid, TrialState.FAIL)


class OtherSweeps:
    """Waits for the trials that other sweeps run on the study, saying so once per set of trials."""

    def __init__(self, study: optuna.Study, heartbeat_interval: int | None) -> None:
        self.study, self.heartbeat_interval = study, heartbeat_interval
        self.waited_for: list[int] = []

    def wait(self, owned: Collection[int]) -> bool:
        """Trials of other sweeps still run: wait a while (True), or, when this sweep cannot tell whether
        they are alive (heartbeats off and a trial on another machine), end now (False).
        `owned`: the ids of the trials this sweep runs."""
        others = running_elsewhere(self.study, owned)
        if not others:
            return False
        host = owned_here()[ATTR_HOST]
        if grace_period(self.study) is None and any(
            t.user_attrs.get(ATTR_HOST) not in (None, host) for t in others
        ):
            return False
        numbers = sorted(t.number for t in others)
        if numbers != self.waited_for:
            log.info(
                "waiting for trials %s of other sweeps: their values complete the study, and if their sweep "
                "stopped they run again here",
                numbers,
            )
            self.waited_for = numbers
        time.sleep(min(self.heartbeat_interval or WAIT_S, WAIT_S))
        return True


def writes_report(trials: Collection[FrozenTrial]) -> tuple[bool, str]:
    """Whether this sweep writes the study's report, and who does: of the sweeps that share a study and end
    together, the one that asked the trial that finished last, so that the study gets one report, not one per
    sweep (every sweep decides alike from the same trials). A sweep alone on its study always writes it."""
    asked = [t for t in trials if t.state.is_finished() and t.datetime_complete and ATTR_PID in t.user_attrs]
    if not asked:
        return True, "this sweep"
    last = max(asked, key=lambda t: (t.datetime_complete, t.number))
    host, pid = last.user_attrs.get(ATTR_HOST), last.user_attrs[ATTR_PID]
    if owned_here() == {ATTR_HOST: host, ATTR_PID: pid}:
        return True, "this sweep"
    return False, f"the sweep that finished the study's last trial ({last.number}; pid {pid} on {host})"
