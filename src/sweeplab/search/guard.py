"""Pruning that keeps the winner: a guard around any Optuna pruner, and the choice of pruned trials to rescue.

A pruner ranks a trial against the others at the same step (the median, a Hyperband rung), never
against an absolute bar, so it can stop the trial that would have won (seed 004: Hyperband stopped the
sweep's best run at epoch 10). The guard vetoes such a decision by three rules, each switchable:

- `leader`: the trial's value at this step is the best any trial has reported at this step;
- `margin`: it lies within `margin` of the best finished trial's value;
- `threshold`: it is past an absolute value, in the study's direction.

A vetoed decision is written on the trial (`guard_saved`: [[step, rule], ...]) for the report. Rescue
runs again, unpruned, the pruned trials that ranked best at the step they were pruned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import config_error

ATTR_GUARD_SAVED = "guard_saved"  # [[step, rule], ...]: the pruner said stop, the guard said no
ATTR_RESCUE_OF = "rescue_of"  # on a rescue trial: the number of the pruned trial it re-runs
RULES = ("leader", "margin", "threshold")


@dataclass(frozen=True)
class Guard:
    leader: bool = False
    margin: float | None = None
    threshold: float | None = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> Guard:
        """`hydra.sweeper.guard`: {leader: bool, margin: float|null, threshold: float|null}."""
        node = dict(node or {})
        unknown = sorted(set(node) - set(RULES))
        if unknown:
            raise config_error(
                f"hydra.sweeper.guard.{unknown[0]}", node[unknown[0]], f"allowed keys: {', '.join(RULES)}"
            )
        margin, threshold = node.get("margin"), node.get("threshold")
        if margin is not None and (
            not isinstance(margin, int | float) or isinstance(margin, bool) or margin < 0
        ):
            raise config_error("hydra.sweeper.guard.margin", margin, "must be a number >= 0, or null (off)")
        if threshold is not None and (not isinstance(threshold, int | float) or isinstance(threshold, bool)):
            raise config_error("hydra.sweeper.guard.threshold", threshold, "must be a number, or null (off)")
        leader = node.get("leader", False)
        if not isinstance(leader, bool):
            raise config_error("hydra.sweeper.guard.leader", leader, "must be true or false")
        return cls(
            leader, None if margin is None else float(margin), None if threshold is None else float(threshold)
        )

    @property
    def active(self) -> bool:
        return self.leader or self.margin is not None or self.threshold is not None

    def saving_rule(self, study: optuna.Study, trial: FrozenTrial, step: int, value: float) -> str | None:
        """The first rule that forbids pruning `trial` at `step` with `value`, or None."""
        if math.isnan(value):
            return None
        better = _better(study.direction)
        if self.threshold is not None and better(value, self.threshold):
            return "threshold"
        others = study.get_trials(deepcopy=False)
        if self.leader:
            at_step = [
                t.intermediate_values[step]
                for t in others
                if t.number != trial.number and step in t.intermediate_values
            ]
            if all(better(value, v) for v in at_step if not math.isnan(v)):
                return "leader"
        if self.margin is not None:
            done = [t.value for t in others if t.state == TrialState.COMPLETE and t.value is not None]
            if done:
                best = max(done) if study.direction == StudyDirection.MAXIMIZE else min(done)
                bar = best - self.margin if study.direction == StudyDirection.MAXIMIZE else best + self.margin
                if better(value, bar):
                    return "margin"
        return None


class GuardedPruner(optuna.pruners.BasePruner):
    """`pruner`, except where the guard's rules say the trial may be the winner."""

    def __init__(self, pruner: optuna.pruners.BasePruner, guard: Guard) -> None:
        self.pruner, self.guard = pruner, guard

    def __str__(self) -> str:
        rules = [r for r in ("leader",) if self.guard.leader]
        rules += [
            f"{r} {v:g}"
            for r, v in (("margin", self.guard.margin), ("threshold", self.guard.threshold))
            if v is not None
        ]
        return f"{type(self.pruner).__name__} (guard: {', '.join(rules)})"

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not self.pruner.prune(study, trial):
            return False
        step = trial.last_step
        if step is None:
            return True
        rule = self.guard.saving_rule(study, trial, step, trial.intermediate_values[step])
        if rule is None:
            return True
        # from the storage: the trial handed in may be a copy cached before the last veto was written
        stored = study._storage.get_trial(trial._trial_id).user_attrs
        saved = [*stored.get(ATTR_GUARD_SAVED, []), [step, rule]]
        study._storage.set_trial_user_attr(trial._trial_id, ATTR_GUARD_SAVED, saved)
        return False


def describe(pruner: optuna.pruners.BasePruner) -> str:
    """The pruner's class name, with the guard's rules when it is guarded (for logs, attrs, reports)."""
    return str(pruner) if isinstance(pruner, GuardedPruner) else type(pruner).__name__


def rescue_candidates(
    trials: Iterable[FrozenTrial], direction: StudyDirection, k: int, exclude: Iterable[int] = ()
) -> list[FrozenTrial]:
    """The k pruned trials that ranked best at the step they were pruned, leaving out `exclude` (numbers).

    Rank = the share of all trials' values at that step that the pruned trial's value beat or tied, so
    trials pruned at different steps compare on one scale; ties go to the later step (more evidence)."""
    trials, skip = list(trials), set(exclude)
    better = _better(direction)
    scored = []
    for t in trials:
        if t.state != TrialState.PRUNED or t.last_step is None or t.number in skip:
            continue
        step, value = t.last_step, t.intermediate_values[t.last_step]
        if math.isnan(value):
            continue
        field = [
            o.intermediate_values[step]
            for o in trials
            if step in o.intermediate_values and o.number != t.number
        ]
        field = [v for v in field if not math.isnan(v)]
        rank = sum(better(value, v) for v in field) / len(field) if field else 1.0
        scored.append((rank, step, value if direction == StudyDirection.MAXIMIZE else -value, t))
    scored.sort(key=lambda s: (s[0], s[1], s[2], -s[3].number), reverse=True)
    return [s[3] for s in scored[:k]]


def _better(direction: StudyDirection) -> Callable[[float, float], bool]:
    """a is at least as good as b, in the study's direction."""
    if direction == StudyDirection.MAXIMIZE:
        return lambda a, b: a >= b
    return lambda a, b: a <= b
