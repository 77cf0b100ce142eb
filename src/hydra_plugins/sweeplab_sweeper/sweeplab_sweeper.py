"""Hydra's face of sweeplab's sweeper: the sweeper class, its config schema's registration, its config path.

Select it with `override hydra/sweeper: sweeplab`. The keys, typed in `sweeplab.search.schema`, are a
superset of hydra-optuna-sweeper's with the same meaning; the sweep itself is `sweeplab.sweeper`. Hydra's
plugin scan imports this module for every Hydra app, so it changes nothing of Hydra's and imports only the
schema until the sweeper is set up.
"""

from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeplab.search.schema import SweeplabSweeperConf


class SweeplabSweeper(Sweeper):
    """Runs `python app.py -m ...` as an Optuna study; each trial is one Hydra job."""

    def __init__(self, **keys: Any) -> None:
        self.keys = keys  # typed by the plan in sweep(), where a bad key fails as one line
        self.study: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from sweeplab.sweeper import StudySweeper

        self.study = StudySweeper(self.keys, hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> None:
        """Runs the study; returns None, as the stock plugin does (the results are files and the storage)."""
        self.study.sweep(arguments)


ConfigStore.instance().store(
    group="hydra/sweeper", name="sweeplab", node=SweeplabSweeperConf, provider="sweeplab"
)


class SweeplabSearchPath(SearchPathPlugin):
    """Adds the sampler and pruner options, `hydra/sweeper/{sampler,pruner}/*` (YAML beside this file)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="sweeplab", path="pkg://hydra_plugins.sweeplab_sweeper.conf")
