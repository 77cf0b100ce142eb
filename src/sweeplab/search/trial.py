"""The job's side of a study: find its own trial in the storage and report to it every epoch.

A sweeplab sweep launches trial N as Hydra job N, passes the study name as `hydra.sweeper.study_name`,
and the storage is in the job's own `hydra.sweeper` node. So a job finds its trial through the storage
alone, whether the launcher runs it in the sweeper's process or in another process or machine.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import optuna

from sweeplab.search.algorithms import build_pruner
from sweeplab.search.guard import ATTR_RESCUE_OF
from sweeplab.search.study import (
    ATTR_EPOCHS,
    ATTR_OUTPUT_DIR,
    ATTR_PRUNED_AT,
    ATTR_WORKER_PID,
    SWEEPER_TARGET,
    open_storage,
    resolve_storage,
)

log = logging.getLogger(__name__)


@dataclass
class StudyTrial:
    """The Optuna trial this job is, with the study's pruner, sending heartbeats while it trains."""

    study: optuna.Study
    trial: optuna.Trial
    heartbeat_interval: int | None = None
    _stop: threading.Event | None = None

    def start_heartbeat(self) -> None:
        """Record a heartbeat every interval until `close()`: a sweep anywhere sees this trial is alive."""
        if not self.heartbeat_interval:
            return
        storage, trial_id, stop = self.study._storage, self.trial._trial_id, threading.Event()
        self._stop = stop

        def beat() -> None:
            while True:
                storage.record_heartbeat(trial_id)
                if stop.wait(self.heartbeat_interval):
                    return

        threading.Thread(target=beat, name=f"heartbeat-trial-{self.number}", daemon=True).start()

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()

    @property
    def number(self) -> int:
        return self.trial.number

    def set(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)


def current_trial() -> StudyTrial | None:
    """The trial of the running Hydra job, or None outside a sweeplab study."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    if hydra_cfg.mode != RunMode.MULTIRUN or sweeper.get("_target_") != SWEEPER_TARGET:
        return None
    study_name = sweeper.get("study_name")
    if not study_name:
        return None  # launched without the sweeper (e.g. a job re-run by hand): nothing to report to
    storage = open_storage(resolve_storage(sweeper.get("storage"), study_name, hydra_cfg.runtime.cwd))
    pruner = build_pruner(sweeper.get("pruner"), sweeper.get("guard"))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(hydra_cfg.job.num))
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr(ATTR_OUTPUT_DIR, str(hydra_cfg.runtime.output_dir))
    trial.set_user_attr(ATTR_WORKER_PID, os.getpid())
    interval = sweeper.get("heartbeat_interval")
    return StudyTrial(study, trial, int(interval) if interval else None)


class PruningCallback(L.Callback):
    """Reports the optimized metric after every validation epoch; stops the fit when the pruner says so.

    Step = epochs completed (1, 2, ...), so a pruner's warm-up and Hyperband's resources count epochs.
    A k-fold run fits its folds one after another: fold f (from 0) reports its own value at epoch e as
    step `f * max_epochs + e` (`step_offset` = f * max_epochs). Every trial of a study splits the same
    folds with the same budget, so a step means the same fold and epoch in every trial: values at one
    step are comparable, and a hopeless trial is pruned during its first fold.
    """

    def __init__(
        self, study_trial: StudyTrial, metric: str, step_offset: int = 0, epochs_before: int = 0
    ) -> None:
        self.study_trial = study_trial
        self.metric = metric
        self.step_offset = step_offset
        self.epochs_before = epochs_before  # epochs run by earlier folds (early stopping may end one early)
        self.pruned_at: int | None = None
        # a rescue re-runs a pruned trial to its full budget: it reports, and is never pruned
        self.rescue = ATTR_RESCUE_OF in study_trial.trial.user_attrs

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return  # MetricHistory reports a metric that is never logged
        value = float(trainer.callback_metrics[self.metric])
        step = self.step_offset + trainer.current_epoch + 1
        trial = self.study_trial.trial
        self.study_trial.set(ATTR_EPOCHS, self.epochs_before + trainer.current_epoch + 1)
        if math.isnan(value) or len(self.study_trial.study.directions) > 1:
            return  # NaN is not comparable (the trial fails when it ends); Optuna prunes single objectives only
        trial.report(value, step)
        if not self.rescue and trial.should_prune():
            self.pruned_at = step
            self.study_trial.set(ATTR_PRUNED_AT, step)
            where = (
                f"step {step} (epoch {trainer.current_epoch + 1} of a fold)"
                if self.step_offset
                else f"epoch {step}"
            )
            log.info("trial %d pruned after %s (%s=%.4f)", trial.number, where, self.metric, value)
            trainer.should_stop = True
