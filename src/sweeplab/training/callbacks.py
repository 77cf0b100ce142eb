"""Callbacks a run gets: a per-epoch record of validation metrics (with a check that the optimized one
exists), the report to its study trial that lets the pruner stop it, and torch.compile's timing."""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from sweeplab.errors import SweeplabError
from sweeplab.search.records import ATTR_EPOCHS
from sweeplab.search.trial import StudyTrial

log = logging.getLogger(__name__)


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, with epochs counted from 1 (`Epoch 3/8`) as every line sweeplab prints does."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"


class MetricHistory(L.Callback):
    """Keeps every epoch's validation metrics (plain floats), for metrics.json, pruning and reports."""

    def __init__(self, optimized_metric: str) -> None:
        self.optimized_metric = optimized_metric
        self.epochs: list[dict[str, float]] = []
        self._epoch_started = time.perf_counter()
        self._epoch_times: list[float] = []
        self.params = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.params = sum(p.numel() for p in pl_module.parameters())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))
        }
        # what a multi-objective study may trade the optimized metric against: this epoch's seconds
        # (training + validation), and their median so far (the first epoch's warm-up does not count twice)
        self._epoch_times.append(time.perf_counter() - self._epoch_started)
        metrics["time/epoch_s"] = self._epoch_times[-1]
        metrics["time/median_epoch_s"] = statistics.median(self._epoch_times)
        metrics["model/params"] = float(self.params)
        if self.optimized_metric not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise SweeplabError(
                f"optimized_metric={self.optimized_metric!r} was never logged; metrics logged: {logged}"
            )
        metrics[self.optimized_metric] = float(trainer.callback_metrics[self.optimized_metric])
        metrics["epoch"] = trainer.current_epoch + 1  # epochs completed, as people count them
        self.epochs.append(metrics)
        diverged = [k for k in ("train/loss", "val/loss") if math.isnan(metrics.get(k, 0.0))]
        if diverged:  # every later epoch would be NaN too: fail now, with the reason
            raise FloatingPointError(
                f"{diverged[0]} is NaN after epoch {trainer.current_epoch + 1}: training diverged"
            )

    def values(self) -> list[float]:
        return [e[self.optimized_metric] for e in self.epochs]

    def best(self, mode: str) -> dict[str, float] | None:
        """The epoch with the best optimized value (NaN never wins)."""
        finite = [e for e in self.epochs if not math.isnan(e[self.optimized_metric])]
        if not finite:
            return None
        pick = max if mode == "max" else min
        return pick(finite, key=lambda e: e[self.optimized_metric])


class PruningCallback(L.Callback):
    """Reports the optimized metric after every validation epoch (`StudyTrial.report`, the API any
    training loop uses); stops the fit when the pruner says so.

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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return  # MetricHistory reports a metric that is never logged
        value = float(trainer.callback_metrics[self.metric])
        step = self.step_offset + trainer.current_epoch + 1
        self.study_trial.set(ATTR_EPOCHS, self.epochs_before + trainer.current_epoch + 1)
        if self.study_trial.report(value, step):
            self.pruned_at = step
            where = (
                f"step {step} (epoch {trainer.current_epoch + 1} of a fold)"
                if self.step_offset
                else f"epoch {step}"
            )
            log.info("trial %d pruned after %s (%s=%.4f)", self.study_trial.number, where, self.metric, value)
            trainer.should_stop = True


class CompileTimer(L.Callback):
    """Times the first training steps: with torch.compile the first one also compiles, so
    compile time = first step - median of the next `sample` steps. Synchronises the GPU on those
    steps only (none after), so it costs nothing for the rest of the fit."""

    def __init__(self, sample: int = 10) -> None:
        self.sample = sample
        self.steps: list[float] = []
        self._started = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if len(self.steps) <= self.sample:
            self._sync(pl_module)
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if len(self.steps) <= self.sample:
            self._sync(pl_module)
            self.steps.append(time.perf_counter() - self._started)
            if len(self.steps) == self.sample + 1 or len(self.steps) == trainer.num_training_batches:
                log.info(
                    "torch.compile: first step %.2fs, later steps %.4fs: about %.2fs compiling",
                    self.steps[0],
                    self.step_s or 0.0,
                    self.compile_s or 0.0,
                )

    @property
    def step_s(self) -> float | None:
        return statistics.median(self.steps[1:]) if len(self.steps) > 1 else None

    @property
    def compile_s(self) -> float | None:
        """First step minus a typical step (None before two steps were timed)."""
        return max(0.0, self.steps[0] - self.step_s) if self.step_s is not None else None
