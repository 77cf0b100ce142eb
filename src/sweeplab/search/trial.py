"""The job's side of a study: its trial, opened in the storage, and the reports it makes to it.

A sweeplab sweep launches trial N as Hydra job N and hands the job its trial's address where its own
launchers run the job (`sweeplab.launching.handover`: in the sweep's process, a worker process, a DDP rank).
A launcher that is not sweeplab's hands the job only its config; the sweep passes the study name there as
`hydra.sweeper.study_name`, and the storage is in the job's own `hydra.sweeper` node, so such a job finds
its trial through the storage alone, in whatever process or machine it runs.

`report(value, step)` (exported as `sweeplab.report`) is the whole API a training loop needs: it reports
an intermediate value and answers whether the study's pruner stops the trial. Lightning's
`sweeplab.training.callbacks.PruningCallback` calls the same `StudyTrial.report`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from sweeplab.config import plain
from sweeplab.launching.handover import follower, handed
from sweeplab.search.optuna_access import storage_of, study_id
from sweeplab.search.outage import DEFAULT_RETRY_S, Outage
from sweeplab.search.pruning import build_pruner
from sweeplab.search.records import (
    ATTR_CHECKPOINTS,
    ATTR_OUTPUT_DIR,
    ATTR_PAUSED,
    ATTR_PRUNED_AT,
    ATTR_RESCUE_OF,
    ATTR_RESUMABLE,
    ATTR_RESUMED,
    ATTR_RETRY_OF,
    ATTR_WORKER_PID,
    STUDY_PAUSED_REMOVED,
)
from sweeplab.search.schema import TARGET, paused_budget
from sweeplab.search.storage import masked, open_storage, resolve_storage


@dataclass(frozen=True)
class ResumePoint:
    """Where a rescue starts: the pruned trial it re-runs, its curve so far, and the checkpoint of the epoch
    it was pruned at (None, with the reason, when there is none to resume: then it trains from scratch)."""

    trial: int
    values: dict[int, float]  # the pruned trial's reported values, by step
    checkpoint: Path | None
    step: int = 0  # the step it was paused at ...
    epoch: int = 0  # ... which is this many epochs into ...
    fold: int | None = None  # ... this fold (k-fold), counted from 0
    reason: str | None = None
    run_dir: Path | None = None  # the pruned trial's job dir (its metrics.json lists its finished folds)


@dataclass
class StudyTrial:
    """The Optuna trial this job is, with the study's pruner. (The sweep that asked the trial records its
    heartbeats: `sweeplab.search.liveness`.)"""

    study: optuna.Study
    trial: optuna.Trial
    pause_keep: int = 0  # > 0: when pruned, the job keeps a checkpoint to resume from (pause.keep)
    address: TrialAddress | None = None  # how another process opens this trial (Lightning's ddp_spawn)
    resumable: bool = False  # each epoch, the job saves its state for a re-run (resume_interrupted)

    @property
    def number(self) -> int:
        return self.trial.number

    @cached_property
    def rescue(self) -> bool:
        """A rescue re-runs a pruned trial to its full budget: it reports, and is never pruned."""
        return ATTR_RESCUE_OF in self.trial.user_attrs

    def set(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def report(self, value: float, step: int, last: bool = False) -> bool:
        """Report `value` at `step`; True when the study's pruner stops this trial. The decision is stored
        on the trial (`pruned_at_epoch`), so the sweeper stores it PRUNED whatever the job then returns.

        NaN is not reported (it compares with nothing; the trial fails when it returns it), nor is anything
        of a study with several objectives (Optuna prunes single objectives only); a rescue is never pruned,
        and neither is a trial at its `last` step: it has run its whole budget, so it completes.
        """
        if math.isnan(value) or len(self.study.directions) > 1:
            return False
        self.trial.report(value, step)
        if self.rescue or last or not self.trial.should_prune():
            return False
        self.set(ATTR_PRUNED_AT, step)
        return True

    def record(self, value: float, step: int) -> None:
        """Report `value` at `step` without asking the pruner: a fit told to stop that went on anyway."""
        if not math.isnan(value) and len(self.study.directions) == 1:
            self.trial.report(value, step)
            self.set(ATTR_PRUNED_AT, step)

    def unprune(self) -> None:
        """The pruner said stop and the fit ran its whole budget anyway: store the trial as it ended
        (COMPLETE with its value), not PRUNED."""
        self.set(ATTR_PRUNED_AT, None)

    def record_checkpoints(self, paths: list[str]) -> None:
        """Checkpoint files a fit of this trial saved (a k-fold trial's fits add theirs): the sweep keeps
        only the best trials' (`hydra.sweeper.checkpoints.keep`)."""
        known = [str(p) for p in self.trial.user_attrs.get(ATTR_CHECKPOINTS) or []]
        new = [p for p in paths if p not in known]
        if new:
            self.set(ATTR_CHECKPOINTS, known + new)

    def record_pause(self, checkpoint: Path, step: int, epoch: int, fold: int | None) -> None:
        """The checkpoint of the epoch this trial was pruned at: a rescue resumes it there."""
        self.set(ATTR_PAUSED, {"checkpoint": str(checkpoint), "step": step, "epoch": epoch, "fold": fold})

    def record_resumable(
        self, checkpoint: Path | None, step: int = 0, epoch: int = 0, fold: int | None = None
    ) -> None:
        """The state this trial saved at its last finished epoch (None: none any more, the fit ended)."""
        where = (
            {"checkpoint": str(checkpoint), "step": step, "epoch": epoch, "fold": fold}
            if checkpoint
            else None
        )
        self.set(ATTR_RESUMABLE, where)

    def _numbered(self, number: int) -> optuna.trial.FrozenTrial:
        storage = storage_of(self.study)
        return storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(study_id(self.study), number)
        )

    def resume_point(self) -> ResumePoint | None:
        """For the re-run of an interrupted trial that saved its state: the trial and its last finished
        epoch; for a rescue: the pruned trial it re-runs and where to resume it; None for any other trial."""
        retry = self.trial.user_attrs.get(ATTR_RETRY_OF)
        if retry is not None:
            interrupted = self._numbered(int(retry))
            saved = interrupted.user_attrs.get(ATTR_RESUMABLE)
            if saved:
                return self._resume_at(interrupted, saved)
        if not self.rescue:
            return None
        number = int(self.trial.user_attrs[ATTR_RESCUE_OF])
        original = self._numbered(number)
        paused = original.user_attrs.get(ATTR_PAUSED)
        if not paused:
            return ResumePoint(number, {}, None, reason=f"trial {number} kept no checkpoint (pause.keep=0)")
        removed = (self.study.user_attrs.get(STUDY_PAUSED_REMOVED) or {}).get(str(number))
        if removed:
            return ResumePoint(
                number, {}, None, reason=f"trial {number}'s checkpoint was removed ({removed})"
            )
        return self._resume_at(original, paused)

    def _resume_at(self, original: optuna.trial.FrozenTrial, paused: dict[str, Any]) -> ResumePoint:
        """Where `original` saved its state (`paused`: checkpoint, step, epoch, fold), with its curve so far."""
        number = original.number
        values = {int(k): float(v) for k, v in original.intermediate_values.items()}
        checkpoint = Path(paused["checkpoint"])
        if not checkpoint.is_file():
            return ResumePoint(
                number, {}, None, reason=f"trial {number}'s checkpoint {checkpoint} is not on this machine"
            )
        step = int(paused["step"])
        where = original.user_attrs.get(ATTR_OUTPUT_DIR)
        return ResumePoint(
            number,
            {k: v for k, v in values.items() if k <= step},
            checkpoint,
            step,
            int(paused["epoch"]),
            paused.get("fold"),
            run_dir=Path(where) if where else None,
        )

    def continue_curve(self, point: ResumePoint) -> None:
        """Report the values of the trial this one resumes, up to where it resumes, as its own, so that its
        curve is the configuration's whole curve (the pruner is asked again from the next epoch on, and
        never for a rescue)."""
        for step, value in sorted(point.values.items()):
            if not math.isnan(value):
                self.trial.report(value, step)
        self.set(
            ATTR_RESUMED,
            {"trial": point.trial, "step": point.step, "checkpoint": str(point.checkpoint)}
            if point.checkpoint is not None
            else {"trial": point.trial, "reason": point.reason},
        )


@dataclass(frozen=True)
class TrialAddress:
    """Where a job's trial lives, in plain values. A process that Lightning's `ddp_spawn` launcher starts
    has no Hydra config: rank 0 there opens its trial from the address that came with the trainer."""

    storage: str
    storage_retry: float | None  # hydra.sweeper.storage_retry (None: the default)
    study_name: str
    number: int
    pruner: dict[str, Any] | None
    guard: dict[str, Any] | None
    pause_keep: int
    resume_interrupted: bool = False

    def open(self) -> StudyTrial:
        """The trial, with the study's pruner; a storage that cannot be reached now is retried (its sweep
        has the study open, so it went away: a database restarting as the job starts)."""
        retry = self.storage_retry
        outage = Outage(masked(self.storage), DEFAULT_RETRY_S if retry is None else retry)
        storage = outage.call(open_storage, self.storage, retry_s=retry)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=build_pruner(self.pruner, self.guard)
        )
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id(study), self.number)
        return StudyTrial(
            study,
            optuna.Trial(study, trial_id),
            pause_keep=self.pause_keep,
            address=self,
            resumable=self.resume_interrupted,
        )


def trial_address() -> TrialAddress | None:
    """The address of the running Hydra job's trial as its own config says it, or None outside a sweeplab
    study and on a trial's extra DDP ranks (rank 0 alone reports): for a job whose launcher handed it nothing
    (`sweeplab.launching.handover`), such as submitit's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or follower():
        return None
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    if hydra_cfg.mode != RunMode.MULTIRUN or sweeper.get("_target_") != TARGET:
        return None
    study_name = sweeper.get("study_name")
    if not study_name:
        return None  # launched without the sweeper (e.g. a job re-run by hand): nothing to report to
    storage = resolve_storage(sweeper.get("storage"), study_name, hydra_cfg.runtime.cwd)
    return address_in(sweeper, str(study_name), int(hydra_cfg.job.num), storage)


def address_in(sweeper: DictConfig, study_name: str, number: int, storage: str) -> TrialAddress:
    """Trial `number`'s address, with the pruner and settings of the `hydra.sweeper` node `sweeper`."""
    retry = sweeper.get("storage_retry")
    keep = paused_budget(
        OmegaConf.select(sweeper, "pause.keep", default=None),
        OmegaConf.select(sweeper, "rescue.top_k", default=0),
    )
    return TrialAddress(
        storage=storage,
        storage_retry=float(retry) if retry is not None else None,
        study_name=study_name,
        number=number,
        pruner=plain(sweeper.get("pruner")),
        guard=plain(sweeper.get("guard")),
        pause_keep=int(keep),
        resume_interrupted=bool(sweeper.get("resume_interrupted")),
    )


def _opened(address: TrialAddress) -> StudyTrial:
    """The job's trial, opened, with where the job runs recorded on it."""
    from hydra.core.hydra_config import HydraConfig

    trial = address.open()
    if HydraConfig.initialized():
        trial.set(ATTR_OUTPUT_DIR, str(HydraConfig.get().runtime.output_dir))
    trial.set(ATTR_WORKER_PID, os.getpid())
    return trial


_FOUND: dict[tuple[Any, ...], StudyTrial | None] = {}


def job_trial() -> StudyTrial | None:
    """The running job's trial: the one its launcher handed it (`sweeplab.launching.handover`), opened once;
    where the launcher handed nothing, the one its Hydra config names, looked up once per job (jobs that
    share a process each get their own). None outside a study and on a trial's extra DDP ranks."""
    given = handed()
    if given is not None:
        return given.trial(_opened)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    where = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None, throw_on_missing=False)
    key = (os.getpid(), where, OmegaConf.select(hydra_cfg, "job.num", default=None, throw_on_missing=False))
    if key not in _FOUND:
        _FOUND.clear()  # only the running job's trial is ever reported to
        address = trial_address()
        _FOUND[key] = _opened(address) if address is not None else None
    return _FOUND[key]


def job_address() -> TrialAddress | None:
    """The running job's trial's address, as `job_trial` would open it (for a process it starts)."""
    given = handed()
    if given is not None:
        return given.address if given.rank == 0 else None
    return trial_address()


def report(value: float, step: int, last: bool = False) -> bool:
    """Report an intermediate value of this job's trial at `step`; True when the study's pruner says stop.

    For a training loop without Lightning: call it once per epoch (or any step that means the same in
    every trial) and stop when it returns True; the trial is stored PRUNED with its last reported value.
    `last=True` at the final step: the trial has run its budget and is not pruned there.
    Outside a sweeplab study (a single run, another sweeper) it does nothing and returns False.
    """
    trial = job_trial()
    return trial.report(float(value), int(step), bool(last)) if trial is not None else False
