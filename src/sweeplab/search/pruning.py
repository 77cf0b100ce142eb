"""Samplers and pruners from `hydra.sweeper.sampler` / `.pruner`, and pruning that keeps the winner.

Samplers and pruners are Optuna's own classes with Optuna's own arguments (YAML beside the plugin).

A pruner ranks a trial against the others at the same step (the median, a Hyperband rung), never
against an absolute bar, so it can stop the trial that would have won (Hyperband stopping a sweep's
best run at epoch 10). The guard vetoes such a decision by three rules, each switchable:

- `leader`: the trial's value at this step is the best any trial has reported at this step;
- `margin`: it lies within `margin` of the best finished trial's value;
- `threshold`: it is past an absolute value, in the study's direction.

A vetoed decision is written on the trial (`guard_saved`: [[step, rule], ...]) for the report. Rescue
runs again, unpruned, the pruned trials that ranked best at the step they were pruned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import optuna
from omegaconf import OmegaConf
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweeplab.config import instantiate_node, typed
from sweeplab.errors import config_error
from sweeplab.search.optuna_access import storage_of, study_id, trial_id
from sweeplab.search.records import ATTR_GUARD_SAVED, sign
from sweeplab.search.schema import GuardConf

# Samplers the stock plugin offered that Optuna no longer has, and what replaced them.
REMOVED_SAMPLERS = {
    "optuna.samplers.MOTPESampler": "was removed from Optuna; TPESampler samples several objectives: "
    "use hydra/sweeper/sampler=tpe (or nsgaii)",
}


# Samplers that several sweeps coordinate through the storage (the grid's unvisited points, QMC's sample
# index): each sweep keeps the configured seed, which defines one shared sequence.
SHARED_SEQUENCE = (
    "optuna.samplers.GridSampler",
    "optuna.samplers.QMCSampler",
    "optuna.samplers.BruteForceSampler",
)


def build_sampler(node: Any, grid: dict[str, list[Any]] | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler; a GridSampler gets `grid` (the search space's points) when its config gives
    none. A seeded sampler that draws at random is seeded per trial (`SeededPerTrial`)."""
    if not node or not node.get("_target_"):
        return optuna.samplers.TPESampler()
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
    if node._target_ in REMOVED_SAMPLERS:
        raise config_error("hydra.sweeper.sampler._target_", node._target_, REMOVED_SAMPLERS[node._target_])
    shared = node._target_ in SHARED_SEQUENCE
    if node._target_ == "optuna.samplers.GridSampler":
        node._target_ = f"{__name__}.GridSampler"
        if node.get("search_space") is None:
            node.search_space = grid or {}
    sampler = instantiate_node(node, "hydra.sweeper.sampler")
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise config_error("hydra.sweeper.sampler._target_", node._target_, "is not an Optuna sampler")
    if node.get("seed") is not None and not shared:
        return SeededPerTrial(node, sampler)
    return sampler


class SeededPerTrial(optuna.samplers.BaseSampler):
    """The configured sampler with its random state drawn per trial from (seed, trial number).

    Optuna samplers keep their random state in the process, so every sweep started with one seed would
    propose the same sequence again: after a resume, and on each of several workers or machines. Trial
    numbers are unique in a study, so here each trial gets its own stream: one uninterrupted sweep is
    as reproducible as with a plain seed, and sweeps that share a study draw different points. What the
    sampler learns lives in the storage (trials, system attributes), so a fresh instance per trial
    proposes what the one instance would have, given the same random state."""

    def __init__(self, node: Any, first: optuna.samplers.BaseSampler) -> None:
        self.node, self.seed, self.first = node, int(node.seed), first
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def __str__(self) -> str:
        return type(self.first).__name__

    def for_trial(self, number: int) -> optuna.samplers.BaseSampler:
        sampler = self._by_trial.get(number)
        if sampler is None:
            seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
            sampler = self._by_trial[number] = instantiate_node(self.node, "hydra.sweeper.sampler", seed=seed)
        return sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.for_trial(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self.for_trial(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self.for_trial(trial.number).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial.number).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.for_trial(trial.number).after_trial(study, trial, state, values)
        self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Seeds are per trial already."""


def sampler_name(sampler: optuna.samplers.BaseSampler) -> str:
    """The configured sampler's class name (for logs, attrs, reports)."""
    return str(sampler) if isinstance(sampler, SeededPerTrial) else type(sampler).__name__


def build_pruner(node: Any, guard: Any = None) -> optuna.pruners.BasePruner:
    """The configured pruner (none configured, or `pruner=none`, never prunes), inside the guard
    (`hydra.sweeper.guard`) when any of its rules is on."""
    rules = Guard.from_config(guard)
    if not node or not node.get("_target_"):
        return optuna.pruners.NopPruner()
    pruner = instantiate_node(node, "hydra.sweeper.pruner")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise config_error("hydra.sweeper.pruner._target_", node.get("_target_"), "is not an Optuna pruner")
    return GuardedPruner(pruner, rules) if rules.active else pruner


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a sweep that asks and tells: it never calls `study.stop()` when the grid is
    done (that raises outside `study.optimize` and would leave the last trial unfinished); the sweep stops
    asking once every point has started (`all_started`), then rescues and ends."""

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        """Nothing: Optuna's would stop the study."""

    def all_started(self, study: optuna.Study) -> bool:
        """Every point of the grid has a trial, running or finished (Optuna would then repeat a point)."""
        trials = storage_of(study).get_all_trials(study_id(study), deepcopy=False)
        taken = {
            t.system_attrs["grid_id"]
            for t in trials
            if "grid_id" in t.system_attrs
            and self._same_search_space(t.system_attrs["search_space"])
            and (t.state.is_finished() or t.state == TrialState.RUNNING)
        }
        return len(taken) >= self._n_min_trials


@dataclasses.dataclass
class Guard(GuardConf):
    """The guard's rules (`hydra.sweeper.guard`, fields and defaults of GuardConf) and how they decide."""

    @classmethod
    def from_config(cls, node: Any) -> Guard:
        """`hydra.sweeper.guard` (a GuardConf, a DictConfig or a mapping; None: every rule off), checked."""
        return typed(cls, node or {}, "hydra.sweeper.guard")

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
            s = sign(study.direction)
            done = [t.value for t in others if t.state == TrialState.COMPLETE and t.value is not None]
            if done and better(value, max(done, key=lambda v: s * v) - s * self.margin):
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
        storage = storage_of(study)
        stored = storage.get_trial(trial_id(trial)).user_attrs
        saved = [*stored.get(ATTR_GUARD_SAVED, []), [step, rule]]
        storage.set_trial_user_attr(trial_id(trial), ATTR_GUARD_SAVED, saved)
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
        scored.append((rank, step, sign(direction) * value, t))
    scored.sort(key=lambda s: (s[0], s[1], s[2], -s[3].number), reverse=True)
    return [s[3] for s in scored[:k]]


def _better(direction: StudyDirection) -> Callable[[float, float], bool]:
    """a is at least as good as b, in the study's direction."""
    s = sign(direction)
    return lambda a, b: s * a >= s * b
