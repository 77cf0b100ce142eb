"""Samplers and pruners from `hydra.sweeper.sampler` / `hydra.sweeper.pruner` (Optuna's own classes and arguments)."""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from sweeplab.config import instantiate_node
from sweeplab.errors import SweeplabError, config_error


def build_sampler(
    node: DictConfig | None, distributions: dict[str, BaseDistribution]
) -> optuna.samplers.BaseSampler:
    """The configured sampler; a GridSampler gets its grid from the search space when none is given."""
    if node is None or not node.get("_target_"):
        return optuna.samplers.TPESampler()
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    if node._target_.endswith("GridSampler") and node.get("search_space") is None:
        with open_dict(node):
            node.search_space = grid_of(distributions)
    sampler = instantiate_node(node, "hydra.sweeper.sampler")
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise config_error("hydra.sweeper.sampler._target_", node._target_, "is not an Optuna sampler")
    return sampler


def build_pruner(node: DictConfig | None) -> optuna.pruners.BasePruner:
    """The configured pruner; none configured (or `pruner=none`) never prunes."""
    if node is None or not node.get("_target_"):
        return optuna.pruners.NopPruner()
    pruner = instantiate_node(node, "hydra.sweeper.pruner")
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise config_error("hydra.sweeper.pruner._target_", node._target_, "is not an Optuna pruner")
    return pruner


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
