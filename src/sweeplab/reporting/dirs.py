"""Hydra callbacks for the app's output dirs: a sweep dir any sweeper can resolve, and `latest` links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeplab.search.liveness import link_latest
from sweeplab.search.naming import TARGET as SWEEPER_TARGET  # and registers ${sweeplab.study_dir:...}


class ResolvableSweepDir(Callback):
    """Lets any sweeper resolve `hydra.sweep.dir`: it contains `${exp_name}`, which reads `${hydra:runtime.choices}`.

    Hydra sets the `hydra:` resolver's config per job, but the basic sweeper resolves its sweep dir before
    the first job; without this, `python runners/train.py -m seed=1,2` fails with "HydraConfig was not set".
    A plain multirun's dir also gets `latest` beside it once all its jobs have finished (Hydra calls
    `on_multirun_end` only then; a sweeplab study's sweeper links the dir it claims).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if plain_multirun(config):
            link_latest(Path(str(config.hydra.sweep.dir)))


class LatestRun(Callback):
    """`latest` beside a single run's dir (`outputs/<exp_name>/latest`), so that the next command, such as
    `runners/predict.py runs=[outputs/<exp_name>/latest]`, can name the run just made; only a run that
    finished moves it (a refused or crashed run has no model to predict with)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.get("mode") == RunMode.RUN and job_return.status == JobStatus.COMPLETED:
            link_latest(Path(str(config.hydra.runtime.output_dir)))


def plain_multirun(config: DictConfig) -> bool:
    """A multirun that is not a sweeplab study (the basic sweeper's grid: seeds, lists of values)."""
    hydra = config.get("hydra")
    if hydra is None or hydra.get("mode") != RunMode.MULTIRUN:
        return False
    return OmegaConf.select(config, "hydra.sweeper._target_", default=None) != SWEEPER_TARGET
