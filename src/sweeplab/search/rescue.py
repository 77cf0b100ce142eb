"""Rescues: once the study's own trials are done, the best-ranked pruned trials run again, unpruned.

Rescues come on top of n_trials, so the loop's counts keep them apart from the study's own trials; which
pruned trials rank best is `pruning.rescue_candidates`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.pruning import rescue_candidates
from sweeplab.search.records import ATTR_RESCUE_OF, counted

if TYPE_CHECKING:
    from sweeplab.search.plan import SweepPlan

log = logging.getLogger("sweeplab.sweep")


def own_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The study's own trials: all but rescues (those come on top of n_trials)."""
    return [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]


def waiting_rescues(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Rescues queued and not started yet."""
    return [t for t in trials if ATTR_RESCUE_OF in t.user_attrs and t.state == TrialState.WAITING]


def enqueue_rescues(study: optuna.Study, plan: SweepPlan, exhausted: bool) -> int:
    """Once the study's own trials are finished everywhere (n_trials of them, or every configuration of
    an `exhausted` space): queue the pruned trials that ranked best at their prune step (up to
    rescue.top_k, counting earlier rescues), to run unpruned. Returns how many."""
    top_k = plan.conf.rescue.top_k
    if not top_k or len(plan.directions) > 1:
        return 0
    trials = study.get_trials(deepcopy=False)
    own = own_trials(trials)
    busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in own)
    if busy or (len(counted(own)) < plan.n_trials and not exhausted):
        return 0
    done = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in trials if ATTR_RESCUE_OF in t.user_attrs}
    picked = rescue_candidates(own, study.direction, top_k - len(done), exclude=done)
    for t in picked:
        study.enqueue_trial(t.params, user_attrs={ATTR_RESCUE_OF: t.number}, skip_if_exists=False)
    if picked:
        log.info(
            "rescue: pruned trials %s ranked best at their prune step; running them again, unpruned",
            ", ".join(
                f"{t.number} (epoch {t.last_step}: {t.intermediate_values[t.last_step]:.4f})" for t in picked
            ),
        )
    return len(picked)
