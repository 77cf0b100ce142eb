"""When a sweep stops before the study has its trials (timeout, target, patience), and how it says why it ended.

Apart from the loop so that each stop rule reads as one function of the plan and the study's trials.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.records import ATTR_RESCUE_OF, counted, sign

if TYPE_CHECKING:
    from sweeplab.search.plan import SweepPlan


def stop_reason(plan: SweepPlan, started: float, trials: list[FrozenTrial]) -> str | None:
    """Why the sweep stops starting the study's own trials now (`started`: its `time.monotonic()` at start),
    or None: the timeout first, then, for a single objective, `stop.target` and `stop.patience`."""
    timeout = plan.conf.timeout
    if timeout is not None and time.monotonic() - started >= timeout:
        return f"hydra.sweeper.timeout={timeout:g}s reached"
    if len(plan.directions) > 1:
        return None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return _target_reached(plan, complete) or _patience_lost(plan, trials)


def _target_reached(plan: SweepPlan, complete: list[FrozenTrial]) -> str | None:
    target = plan.conf.stop.target
    s = sign(plan.directions[0])
    best = max(complete, key=lambda t: s * t.value)
    if target is not None and s * (best.value - target) >= 0:
        return f"hydra.sweeper.stop.target={target:g} reached by trial {best.number} ({best.value:.4f})"
    return None


def _patience_lost(plan: SweepPlan, trials: list[FrozenTrial]) -> str | None:
    stop = plan.conf.stop
    if stop.patience is None:
        return None
    s = sign(plan.directions[0])
    finished = sorted(counted(trials), key=lambda t: t.datetime_complete)
    best_at, best_value = -1, -math.inf
    for i, t in enumerate(finished):
        if t.state == TrialState.COMPLETE and s * t.value > best_value + stop.min_delta:
            best_at, best_value = i, s * t.value
    since = len(finished) - 1 - best_at
    if best_at >= 0 and since >= stop.patience:
        return f"hydra.sweeper.stop.patience={stop.patience}: {since} finished trials without a new best"
    return None


def done_reason(n_trials: int, trials: list[FrozenTrial]) -> str:
    """Why a sweep that ran out of trials to start ended: the study has its n_trials (and rescues)."""
    running = sum(t.state == TrialState.RUNNING for t in trials)
    elsewhere = f" ({running} still running in other sweeps)" if running else ""
    rescued = sum(ATTR_RESCUE_OF in t.user_attrs for t in trials)
    rescues = f" and {rescued} rescued" if rescued else ""
    return f"the study has its {n_trials} trials{rescues}{elsewhere}"
