"""Callbacks a run gets: a per-epoch record of validation metrics (with a check that the optimized one
exists), the report to its study trial that lets the pruner stop it, and torch.compile's timing."""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from sweeplab.errors import SweeplabError, did_you_mean, one_line
from sweeplab.launching.handover import follower
from sweeplab.search.records import ATTR_EPOCHS, ATTR_MAX_EPOCHS, ATTR_PRUNE_REFUSED
from sweeplab.training.spawned import Origin

if TYPE_CHECKING:
    from sweeplab.search.trial import StudyTrial, TrialAddress

log = logging.getLogger(__name__)

PAUSED_CHECKPOINT = "paused.ckpt"  # in the run's (or fold's) checkpoints/ dir
RESUMABLE_CHECKPOINT = "resumable.ckpt"  # beside it: the state of the last finished epoch, while the fit runs
RANDOM_STATE = "sweeplab_random_state"  # the key of the generators' states in a checkpoint


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, with epochs counted from 1 (`Epoch 3/8`) as every line sweeplab prints does."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"


class MetricHistory(L.Callback):
    """Keeps every epoch's validation metrics (plain floats), for metrics.json, pruning and reports."""

    HANDED_BACK = ("epochs", "_epoch_times", "params")  # what a fit in spawned processes returns (`HandBack`)

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

    def state_dict(self) -> dict[str, Any]:
        """Kept in checkpoints, so a resumed fit's history (best epoch, metrics.json) spans the whole run."""
        return {"epochs": list(self.epochs), "epoch_times": list(self._epoch_times)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))
        self._epoch_times = list(state_dict.get("epoch_times", []))

    def best(self, mode: str) -> dict[str, float] | None:
        """The epoch with the best optimized value (NaN never wins)."""
        finite = [e for e in self.epochs if not math.isnan(e[self.optimized_metric])]
        if not finite:
            return None
        pick = max if mode == "max" else min
        return pick(finite, key=lambda e: e[self.optimized_metric])


@dataclass(frozen=True)
class FoldPlace:
    """Where one fit sits in its trial, which the pruning report needs to count steps and epochs: its fold,
    the steps and epochs before it, whether it ends the trial, and where it leaves a paused checkpoint.
    The defaults: a trial's only fit, from its first epoch, leaving no checkpoint when pruned."""

    fold: int | None = None  # the fold this fit validates on, from 0 (None: not a k-fold run)
    step_offset: int = 0  # steps of the earlier folds (fold * max_epochs)
    epochs_before: int = 0  # epochs this job ran in earlier folds
    last_fold: bool = True  # its last epoch is the trial's last step
    resumed_epochs: int = 0  # epochs of this fit restored from a checkpoint, not run here
    pause_dir: Path | None = None  # where a pruned fit leaves its checkpoint (None: it leaves none)


class PruningCallback(L.Callback):
    """Reports a logged metric after every validation epoch (`StudyTrial.report`, the API any training loop
    uses); stops the fit when the pruner says so, and then, where the study keeps paused trials
    (`pause.keep`), saves a checkpoint of that epoch for a rescue to resume from.

    Any Lightning app adds it by config alone (`callbacks.prune: {_target_: sweeplab.PruningCallback,
    monitor: val/acc}`): it takes the trial its job was handed, and the study's direction says which way is better.
    Outside a sweeplab study it does nothing. sweeplab's own runs pass their trial and place in the trial.

    Step = epochs completed (1, 2, ...), so a pruner's warm-up and Hyperband's resources count epochs.
    A k-fold run fits its folds one after another: fold f (from 0) reports its own value at epoch e as
    step `f * max_epochs + e` (`FoldPlace.step_offset` = f * max_epochs). Every trial of a study splits
    the same folds with the same budget, so a step means the same fold and epoch in every trial: values at
    one step are comparable, and a hopeless trial is pruned during its first fold. The last epoch of the
    last fold is the trial's last step: it is reported, never pruned.

    A trainer may refuse to stop (`trainer.min_epochs`, another callback resetting `should_stop`): the trial
    is then stored PRUNED at the epoch the fit did stop, or COMPLETE when it ran its whole budget, with the
    epochs it really ran, and `ATTR_PRUNE_REFUSED` says so (the sweep warns once).

    A trial trained with DDP (`hydra.sweeper.devices_per_trial` > 1): rank 0 reports and asks the pruner
    once per epoch; its decision is broadcast, so every rank stops after the same epoch and saves the paused
    (and each epoch the resumable) checkpoint together (the ranks Lightning starts with the trial's own
    command have no trial: `sweeplab.launching.ranks`).
    Under `ddp_spawn` the callback is pickled into the ranks with its trial's address: rank 0 opens the trial
    there (`sweeplab.training.spawned`).
    """

    HANDED_BACK = ("pruned_at", "_asked_at")  # what a fit in spawned processes returns (`HandBack`)

    def __init__(
        self,
        monitor: str | None = None,
        *,
        study_trial: StudyTrial | None = None,
        place: FoldPlace | None = None,
        metric: str | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            wrong = sorted(unknown)[0]
            raise SweeplabError(
                f"sweeplab.PruningCallback: unknown argument {wrong!r}"
                f"{did_you_mean(wrong, ['monitor'])}; it takes monitor=<a metric the LightningModule logs>"
            )
        if not (monitor or metric):
            raise SweeplabError(
                "sweeplab.PruningCallback: monitor is missing; set it to the metric to prune on, as the "
                "LightningModule logs it (monitor: val/acc)"
            )
        self.monitor = str(monitor or metric)
        self.place = place or FoldPlace()
        self.pruned_at: int | None = None  # the step the fit stopped at, once the pruner said stop
        self._asked_at: int | None = None  # the step the pruner said stop at
        self._trial = study_trial
        self._own = (
            study_trial is None
        )  # built from an app's config: it takes the job's trial, checks `monitor`
        self._ranks = False  # a trial's DDP training: rank 0's decisions are sent to every rank
        self._pause = study_trial is not None and bool(study_trial.pause_keep)
        self._resumable = study_trial is not None and study_trial.resumable
        self._address: TrialAddress | None = None  # set when pickled: the trial, for a spawned rank 0
        self._origin: Origin | None = None  # set when pickled: the process that launched the fit

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into the processes of a spawning launcher: the trial goes as its address (a storage
        connection does not cross processes), found now where an app's callback has not looked yet."""
        from sweeplab.search.trial import job_address

        trial = self._trial
        address = trial.address if trial is not None else (job_address() if self._own else None)
        return {**self.__dict__, "_trial": None, "_address": address, "_origin": Origin.here()}

    @property
    def metric(self) -> str:
        """`monitor`, under the name sweeplab's own runs gave it."""
        return self.monitor

    @property
    def study_trial(self) -> StudyTrial | None:
        return self._trial

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._origin is not None and self._origin.elsewhere():  # a rank the launcher spawned
            self._origin.join(trainer.global_rank)
            if stage == "fit" and self._address is not None and trainer.global_rank == 0:
                self._trial = self._address.open()
        elif self._own and stage == "fit":
            from sweeplab.search.trial import job_trial  # handed to the job; None outside a study

            self._trial = job_trial()
        # a trial's extra DDP ranks have no trial of their own: they follow rank 0's decisions
        self._ranks = trainer.world_size > 1 and (
            self._trial is not None or self._address is not None or follower()
        )
        self._pause = self._trial is not None and bool(self._trial.pause_keep)
        self._resumable = self._trial is not None and self._trial.resumable

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        budget = trainer.max_epochs
        if self._own and self._trial is not None and budget is not None and budget > 0:
            self._trial.set(ATTR_MAX_EPOCHS, int(budget))  # what an unpruned trial runs: the report's savings

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._trial is not None:
            self._ask(trainer)
        if self._ranks:  # rank 0 asked the pruner, once; every rank stops after the same epoch
            self.pruned_at, self._asked_at, self._pause, self._resumable = trainer.strategy.broadcast(
                (self.pruned_at, self._asked_at, self._pause, self._resumable), src=0
            )
            if self.pruned_at is not None:
                trainer.should_stop = True

    def _ask(self, trainer: L.Trainer) -> None:
        """Report this epoch's value to the trial; stop the fit where the pruner says so."""
        trial = self._trial
        assert trial is not None
        if self.monitor not in trainer.callback_metrics:
            if not self._own:
                return  # sweeplab's runs: MetricHistory says that their optimized metric is never logged
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise SweeplabError(
                f"sweeplab.PruningCallback: monitor={self.monitor!r} was never logged; metrics logged: {logged}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch + 1
        step = self.place.step_offset + epoch
        trial.set(ATTR_EPOCHS, self.place.epochs_before + epoch - self.place.resumed_epochs)
        if self._asked_at is not None:  # told to stop, the fit went on: report what it really does
            trial.record(value, step)
            self.pruned_at = step
            trainer.should_stop = True  # again, should another callback have reset it
            return
        last = self.place.last_fold and trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if trial.report(value, step, last=last):
            self.pruned_at = self._asked_at = step
            where = f"step {step} (epoch {epoch} of a fold)" if self.place.step_offset else f"epoch {step}"
            log.info("trial %d pruned after %s (%s=%.4f)", trial.number, where, self.monitor, value)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The pause: after the epoch's validation and checkpointing, so the saved state is the one the next
        epoch would have started from (model, optimizer, scheduler, loops, callbacks, random state). Every
        rank saves (a collective call under DDP); rank 0 writes the file and records it."""
        pause_dir = self.place.pause_dir
        if self.pruned_at is None and pause_dir is not None and self._resumable:
            self._save_resumable(trainer, pause_dir / RESUMABLE_CHECKPOINT)
        if self.pruned_at is None or pause_dir is None or not self._pause:
            return
        path = pause_dir / PAUSED_CHECKPOINT
        trainer.save_checkpoint(path)
        if self._trial is not None:
            self._trial.record_pause(path, self.pruned_at, trainer.current_epoch + 1, self.place.fold)
            log.info("trial %d paused: %s", self._trial.number, path)

    def _save_resumable(self, trainer: L.Trainer, path: Path) -> None:
        """The state the next epoch starts from, for a re-run of this trial should it be interrupted before it
        ends (`resume_interrupted`); one file, replaced whole (a kill while it is written leaves the last one).
        Every rank saves (a collective call under DDP); rank 0 writes the file and records it."""
        epoch = trainer.current_epoch + 1
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch:
            return  # the fit's last epoch: nothing is left to resume
        partial = path.with_suffix(".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            partial.replace(path)
        if self._trial is not None:
            self._trial.record_resumable(path, self.place.step_offset + epoch, epoch, self.place.fold)

    def _drop_resumable(self, trainer: L.Trainer) -> None:
        """The fit ended: its resumable state is nobody's to resume."""
        pause_dir = self.place.pause_dir
        if not self._resumable or pause_dir is None or not (pause_dir / RESUMABLE_CHECKPOINT).exists():
            return
        if trainer.is_global_zero:
            (pause_dir / RESUMABLE_CHECKPOINT).unlink(missing_ok=True)
        if self._trial is not None:
            self._trial.record_resumable(None)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A failed trial keeps no checkpoint: the sweep must know what to remove. The fit's own error is
        what the trial fails with, so a second one here (the storage gone too) is only logged. A fit stopped
        by a signal or Ctrl-C (not an error) keeps its resumable state: the sweep decides whether it resumes."""
        try:
            if isinstance(exception, Exception):
                self._drop_resumable(trainer)
            self._record_checkpoints(trainer)
        except Exception as exc:
            log.warning("the checkpoints of this fit were not recorded for removal: %s", one_line(exc))

    def _record_checkpoints(self, trainer: L.Trainer) -> None:
        """Tell the trial which files the fit's ModelCheckpoint callbacks saved, so that the sweep keeps only
        the best trials' (`hydra.sweeper.checkpoints.keep`)."""
        if self._trial is None:
            return
        paths: list[str] = []
        for saver in trainer.checkpoint_callbacks:
            if isinstance(saver, ModelCheckpoint):
                paths += [*saver.best_k_models, saver.best_model_path, saver.last_model_path]
        files = [str(Path(p).resolve()) for p in dict.fromkeys(paths) if p and Path(p).is_file()]
        if files:
            self._trial.record_checkpoints(files)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the fit's checkpoints; where the pruner said stop and the fit went on, record what
        happened: a fit that ran its whole budget saved nothing and completes; one that stopped later than
        asked is pruned where it stopped."""
        self._drop_resumable(trainer)
        self._record_checkpoints(trainer)
        trial, asked = self._trial, self._asked_at
        if trial is None or asked is None or self.pruned_at == asked:
            return
        budget = trainer.max_epochs
        ran_all = budget is not None and budget > 0 and trainer.current_epoch >= budget
        if ran_all:
            self.pruned_at = None
            trial.unprune()
        trial.set(
            ATTR_PRUNE_REFUSED,
            {
                "asked_at": asked,
                "stopped_at": self.pruned_at,
                "epochs_run": self.place.epochs_before + trainer.current_epoch - self.place.resumed_epochs,
                "why": _why_not_stopped(trainer, asked - self.place.step_offset),
            },
        )


def _why_not_stopped(trainer: L.Trainer, epoch: int) -> str:
    """What kept a fit going after `trainer.should_stop` was set at `epoch` (epochs counted from 1)."""
    min_epochs = trainer.fit_loop.min_epochs
    if min_epochs and epoch < min_epochs:
        return f"trainer.min_epochs={min_epochs}"
    min_steps = trainer.fit_loop.epoch_loop.min_steps
    if min_steps:
        return f"trainer.min_steps={min_steps}"
    return "another callback reset trainer.should_stop"


class RandomState(L.Callback):
    """Saves the random number generators' states in every checkpoint and restores them on resume, so a fit
    resumed from the checkpoint of epoch e draws the same batches, augmentations and dropout masks as the
    fit that ran on past e (Lightning restores model, optimizer, scheduler and loops, not these)."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint[RANDOM_STATE] = {  # tensors and plain values only: loadable with weights_only=True
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [
                str(kind),
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(gauss),
            ],
            "python": random.getstate(),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RANDOM_STATE)
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, cached = state["python"]
        random.setstate((version, tuple(internal), cached))


class CompileTimer(L.Callback):
    """Times the first training steps: with torch.compile the first one also compiles, so
    compile time = first step - median of the next `sample` steps. Synchronises the GPU on those
    steps only (none after), so it costs nothing for the rest of the fit."""

    HANDED_BACK = ("steps",)  # what a fit in spawned processes returns (`HandBack`)

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
