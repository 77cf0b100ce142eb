"""Rescues: once the study's own trials have all started, the best-ranked pruned trials run again, unpruned.

Rescues come on top of n_trials, so the loop's counts keep them apart from the study's own trials; which
pruned trials rank best is `pruning.rescue_candidates`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.pruning import rescue_candidates
from sweeplab.search.records import ATTR_RESCUE_OF, ATTR_RETRY_OF, counted

if TYPE_CHECKING:
    from sweeplab.search.plan import SweepPlan

log = logging.getLogger("sweeplab.sweep")


def own_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The study's own trials: all but rescues (those come on top of n_trials)."""
    return [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]


def waiting_rescues(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Rescues queued and not started yet."""
    return [t for t in trials if ATTR_RESCUE_OF in t.user_attrs and t.state == TrialState.WAITING]


def enqueue_rescues(study: optuna.Study, plan: SweepPlan, exhausted: bool, room: int) -> int:
    """Queue the pruned trials that ranked best at their prune step, to run unpruned (up to rescue.top_k,
    counting earlier rescues), once every one of the study's own trials has started (n_trials of them, or
    every configuration of an `exhausted` space). While some of those still run, at most `room` are queued:
    the workers that would otherwise wait for the last trials to end; the rest are picked when they have
    ended and their ranks are known. Returns how many were queued."""
    top_k = plan.conf.rescue.top_k
    if not top_k or len(plan.directions) > 1 or room < 1:
        return 0
    trials = study.get_trials(deepcopy=False)
    own = own_trials(trials)
    running = sum(t.state == TrialState.RUNNING for t in own)
    if any(t.state == TrialState.WAITING for t in own):
        return 0  # re-runs of lost trials go first
    if len(counted(own)) + running < plan.n_trials and not exhausted:
        return 0
    done = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in trials if ATTR_RESCUE_OF in t.user_attrs}
    k = top_k - len(done)
    picked = rescue_candidates(own, study.direction, min(k, room) if running else k, exclude=done)
    for t in picked:
        study.enqueue_trial(t.params, user_attrs={ATTR_RESCUE_OF: t.number}, skip_if_exists=False)
    if picked:
        log.info(
            "rescue: pruned trial%s %s ranked best at %s prune step; running %s again, unpruned%s",
            "s" if len(picked) > 1 else "",
            ", ".join(
                f"{t.number} (epoch {t.last_step}: {t.intermediate_values[t.last_step]:.4f})" for t in picked
            ),
            "their" if len(picked) > 1 else "its",
            "them" if len(picked) > 1 else "it",
            f" (trials of the study still running: {running})" if running else "",
        )
    return len(picked)


def rescued_before(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier rescue of the same pruned trial, when `trial` is a rescue and one is (sweeps
    on several machines may queue the same rescue at one moment; the later numbers give way)."""
    of = trial.user_attrs.get(ATTR_RESCUE_OF)
    if of is None or ATTR_RETRY_OF in trial.user_attrs:
        return None
    for other in study.get_trials(deepcopy=False):
        if (
            other.number < trial.number
            and other.user_attrs.get(ATTR_RESCUE_OF) == of
            and other.state != TrialState.FAIL
        ):
            return other.number
    return None
