"""Hydra callbacks for the app's output dirs: a sweep dir any sweeper can resolve, and `latest` links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeplab.search.liveness import link_latest
from sweeplab.search.naming import TARGET as SWEEPER_TARGET  # and registers ${sweeplab.study_dir:...}


class ResolvableSweepDir(Callback):
    """Lets any sweeper resolve `hydra.sweep.dir`: it contains `${exp_name}`, which reads `${hydra:runtime.choices}`.

    Hydra sets the `hydra:` resolver's config per job, but the basic sweeper resolves its sweep dir before
    the first job; without this, `python runners/train.py -m seed=1,2` fails with "HydraConfig was not set".
    A plain multirun's dir also gets `latest` beside it (a sweeplab study's sweeper links the dir it claims).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        if plain_multirun(config):
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            link_latest(sweep_dir)


class LatestRun(Callback):
    """`latest` beside a single run's dir (`outputs/<exp_name>/latest`), so that the next command, such as
    `runners/predict.py runs=[outputs/<exp_name>/latest]`, can name the run just made."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.get("mode") == RunMode.RUN:
            link_latest(Path(str(config.hydra.runtime.output_dir)))


def plain_multirun(config: DictConfig) -> bool:
    """A multirun that is not a sweeplab study (the basic sweeper's grid: seeds, lists of values)."""
    hydra = config.get("hydra")
    if hydra is None or hydra.get("mode") != RunMode.MULTIRUN:
        return False
    return OmegaConf.select(config, "hydra.sweeper._target_", default=None) != SWEEPER_TARGET
