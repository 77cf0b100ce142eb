"""Samplers and pruners from `hydra.sweeper.sampler` / `hydra.sweeper.pruner` (Optuna's own classes and arguments)."""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from sweeplab.config import instantiate_node
from sweeplab.errors import SweeplabError, config_error
from sweeplab.search.guard import Guard, GuardedPruner


def build_sampler(
    node: DictConfig | None, distributions: dict[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    """The configured sampler; a GridSampler gets its grid from the search space when none is given."""
    if node is None or not node.get("_target_"):
        return optuna.samplers.TPESampler()
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    if node._target_ == "optuna.samplers.GridSampler":
        with open_dict(node):
            node._target_ = f"{__name__}.GridSampler"
            if node.get("search_space") is None:
                node.search_space = grid_of(distributions)
    sampler = instantiate_node(node, "hydra.sweeper.sampler")
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise config_error("hydra.sweeper.sampler._target_", node._target_, "is not an Optuna sampler")
    return sampler


def build_pruner(node: DictConfig | None, guard: DictConfig | None = None) -> optuna.pruners.BasePruner:
    """The configured pruner (none configured, or `pruner=none`, never prunes), inside the guard
    (`hydra.sweeper.guard`) when any of its rules is on."""
    rules = Guard.from_config(OmegaConf.to_container(guard, resolve=True) if guard is not None else None)
    if node is None or not node.get("_target_"):
        return optuna.pruners.NopPruner()
    pruner = instantiate_node(node, "hydra.sweeper.pruner")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise config_error("hydra.sweeper.pruner._target_", node._target_, "is not an Optuna pruner")
    return GuardedPruner(pruner, rules) if rules.active else pruner


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a sweep that asks and tells: once every point has run it sets
    `exhausted` (the sweep then stops) instead of calling `study.stop()`, which raises outside
    `study.optimize` and would leave the last trial unfinished."""

    exhausted = False

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        unvisited = self._get_unvisited_grid_ids(study)  # the trial being told still counts as unvisited
        grid_id = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
        if not unvisited or unvisited == [grid_id]:
            self.exhausted = True


def grid_of(distributions: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            raise SweeplabError(
                f"hydra.sweeper.params: {name} is a continuous range; the grid sampler needs choice(...) or range(...)"
            )
    return grid
