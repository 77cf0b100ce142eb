"""One training run: build → fit (reporting to the study, if any) → test the best checkpoint → metrics.json → value.

A k-fold run fits its folds here, one after another; resuming a paused trial lives in `resume.py`, the
run's metrics.json in `results.py`."""

from __future__ import annotations

import copy
import gc
import logging
import math
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.data.datamodule import check_folds
from sweeplab.errors import chain
from sweeplab.launching.handover import follower
from sweeplab.search.records import ATTR_FOLD_VALUES, ATTR_MAX_EPOCHS, ATTR_TEST
from sweeplab.search.trial import job_trial
from sweeplab.training.build import (
    build_datamodule,
    build_module,
    build_trainer,
    check_devices,
    check_sections,
    compile_options,
    optimized_mode,
)
from sweeplab.training.callbacks import CompileTimer, FoldPlace, MetricHistory, PruningCallback, RandomState
from sweeplab.training.results import FoldRun, extra_values, run_metrics, run_value, write_json
from sweeplab.training.resume import ranks_resume, relocated, resume_point, share_resume
from sweeplab.training.spawned import HANDBACK_FILE, HandBack

if TYPE_CHECKING:
    from sweeplab.data import ImageDataModule
    from sweeplab.search.trial import ResumePoint, StudyTrial
    from sweeplab.training.resume import Resume

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | list[float]:
    """Train and test one model; return the best value of `optimized_metric` (what a sweeper optimizes).

    With `extra_objectives`, returns [optimized value, *those metrics at the same epoch]. Inside a
    sweeplab study, the value is reported to the trial every epoch and the fit stops when it is pruned
    (the test split is then skipped: a pruned trial is not a candidate).
    """
    try:
        value = _train(cfg)
    except BaseException as exc:
        # The failed fit's frames (the model, its optimizer, a batch's activations: on a GPU, the memory an
        # out-of-memory error left) hang on the exception's traceback, which lives on with the job's result,
        # in a reference cycle: their locals go now, so the next trial in this process starts without them.
        for one in chain(exc):
            traceback.clear_frames(one.__traceback__)
        release_memory(freeze=False)  # the exception and its traceback are not the process's to keep
        raise
    release_memory()
    return value


def release_memory(freeze: bool = True) -> None:
    """Free the finished run's model, optimizer and activations (Lightning holds them in reference
    cycles), so the next trial in this process starts with the GPU memory the first one had. The
    process-wide data cache stays: sharing it is the point.

    With `freeze`, what survives the collection (modules, caches) lives as long as the process, so it is
    frozen out of later collections: the next trial's collection walks only that trial's objects (about 1 ms
    instead of 0.2-0.5 s with torch, Lightning and timm loaded)."""
    gc.collect()
    if freeze:
        gc.freeze()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train(cfg: DictConfig) -> float | list[float]:
    started = time.perf_counter()
    check_sections(cfg)
    check_devices(cfg)  # where the sweep ran no `check`: a trainer its sweep cannot place fails here
    mode = optimized_mode(cfg)
    folds, _ = check_folds(cfg.data.get("folds"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    writes = not follower()  # a trial's extra DDP ranks train with rank 0, which writes the run's files
    if writes:  # Hydra keeps the unresolved config in .hydra/; this is what the run actually used.
        (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    study_trial = job_trial()  # handed to the job by its launcher; None outside a study
    if study_trial:  # the budget pruning saves from: every fold's epochs
        study_trial.set(ATTR_MAX_EPOCHS, int(cfg.trainer.max_epochs) * (folds or 1))
    if writes:
        resume = resume_point(study_trial, folds)
        share_resume(resume, output_dir)
    else:
        resume = ranks_resume(output_dir)
    runs = _fit_folds(cfg, mode, study_trial, folds, resume)
    if writes:
        share_resume(None, output_dir)  # the ranks read it as they started

    value, extra = run_value(runs), extra_values(cfg, runs)
    result = run_metrics(
        cfg,
        runs,
        mode=mode,
        folds=folds,
        objective=[value, *extra],
        trial=study_trial.number if study_trial else None,
        resumed=resume.point if resume is not None else None,
        started=started,
    )
    if writes:
        write_json(output_dir / "metrics.json", result)
    if study_trial and result["test"]:  # the report's deep dive on the best trial shows them
        study_trial.set(ATTR_TEST, result["test"])
    one = runs[0] if folds is None else None
    log.info(
        "%s best %.4f (%s)%s; test %s; %.1fs; outputs in %s",
        cfg.optimized_metric,
        value,
        f"epoch {one.best['epoch']}" if one and one.best else f"mean of {len(runs)} fold(s)",
        " [pruned]" if result["pruned_at_epoch"] is not None else "",
        ", ".join(f"{k}={v:.4f}" for k, v in result["test"].items()) or "skipped",
        result["wall_time_s"],
        _shown(output_dir),
    )
    return [float(value), *extra] if extra else float(value)


def _shown(folder: Path) -> str:
    """`folder` as a user finds it from where the command ran: relative below the working dir, else whole."""
    folder = folder.resolve()
    return str(folder.relative_to(Path.cwd())) if folder.is_relative_to(Path.cwd()) else str(folder)


def _fit_folds(
    cfg: DictConfig, mode: str, study_trial: StudyTrial | None, folds: int | None, resume: Resume | None
) -> list[FoldRun]:
    """Fit the one model, or each fold in turn after those a resumed trial had finished; a pruned fold
    ends the run (a pruned trial is not a candidate: no later folds, no test)."""
    runs: list[FoldRun] = resume.earlier_folds if resume else []
    for fold in [None] if folds is None else range(len(runs), folds):
        here = resume is not None and fold == resume.point.fold
        run = _fit(
            cfg,
            mode,
            study_trial,
            fold,
            epochs_before=sum(r.ran for r in runs),
            resume=resume.point if here and resume is not None else None,
        )
        runs.append(run)
        if fold is not None:
            log.info(
                "fold %d/%d: %s %.4f%s",
                fold + 1,
                folds,
                cfg.optimized_metric,
                run.value,
                " [pruned]" if run.pruned_at is not None else "",
            )
            if study_trial and run.pruned_at is None:  # the folds that ran to the end
                study_trial.set(ATTR_FOLD_VALUES, [r.value for r in runs])
        if run.pruned_at is not None:
            break
        if fold is not None and fold + 1 < folds:
            release_memory()  # before the next fold; train() releases after the last
    return runs


def _fit(
    cfg: DictConfig,
    mode: str,
    study_trial: StudyTrial | None,
    fold: int | None,
    epochs_before: int,
    resume: ResumePoint | None = None,
) -> FoldRun:
    """Build and fit one model (fold `fold` of a k-fold run, in its own `fold_<i>/` dir), then test it;
    `resume`: continue a paused trial's fit from its checkpoint instead of from the first epoch."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # each fold starts from the same seed
    cfg = _fold_config(cfg, fold)
    dm = build_datamodule(cfg, fold)
    module = build_module(cfg, dm)
    history = MetricHistory(str(cfg.optimized_metric))
    callbacks: list[L.Callback] = [history, RandomState()]
    resumed = resume.epoch if resume is not None else 0
    pruning = _pruning_callback(cfg, study_trial, fold, dm.folds, epochs_before, resumed)
    if pruning:
        callbacks.append(pruning)
    compile_timer = CompileTimer() if compile_options(cfg) is not None else None
    if compile_timer:
        callbacks.append(compile_timer)
    handed = [c for c in (history, pruning, compile_timer, dm) if c is not None]
    hand_back = HandBack(Path(cfg.paths.output_dir) / HANDBACK_FILE, *handed)  # under ddp_spawn
    callbacks.append(hand_back)
    trainer = build_trainer(cfg, extra_callbacks=callbacks, resuming=resume is not None)
    writes = not follower()  # a trial's extra DDP rank resumes from the copy rank 0 writes
    ckpt_path = (
        relocated(resume.checkpoint, trainer, writes) if resume is not None and resume.checkpoint else None
    )
    _log_data(cfg, study_trial, fold, dm)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    hand_back.take()
    if ckpt_path is not None and writes:
        Path(ckpt_path).unlink(missing_ok=True)  # a copy: the paused trial's own stays until the study ends
    pruned_at = pruning.pruned_at if pruning else None
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    epochs, best = list(history.epochs), history.best(mode)  # testing a checkpoint restores its history
    test = (
        []
        if pruned_at is not None
        else trainer.test(module, datamodule=dm, ckpt_path=best_path or None, verbose=False)
    )
    return FoldRun(
        epochs=epochs,
        best=best,
        value=best[str(cfg.optimized_metric)] if best else math.nan,
        test={k: float(v) for k, v in (test[0] if test else {}).items()},
        best_checkpoint=best_path or None,
        pruned_at=pruned_at,
        classes=dm.classes,
        compile_s=compile_timer.compile_s if compile_timer else None,
        data=dict(dm.data_stats),
        ran=len(epochs) - resumed,
    )


def _fold_config(cfg: DictConfig, fold: int | None) -> DictConfig:
    """The config of fold `fold`: the run's, with checkpoints and logs in its own `fold_<i>/` dir."""
    if fold is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / f"fold_{fold}")
    return cfg


def _pruning_callback(
    cfg: DictConfig,
    study_trial: StudyTrial | None,
    fold: int | None,
    folds: int | None,
    epochs_before: int,
    resumed: int,
) -> PruningCallback | None:
    """Inside a study, the callback that reports this fit's epochs to its trial, or on a trial's extra DDP
    ranks follows rank 0's decisions (None outside a study)."""
    if not study_trial and not follower():
        return None
    place = FoldPlace(
        fold=fold,
        step_offset=(fold or 0) * int(cfg.trainer.max_epochs),
        epochs_before=epochs_before,
        last_fold=fold is None or fold == (folds or 1) - 1,
        resumed_epochs=resumed,
        pause_dir=Path(cfg.paths.output_dir) / "checkpoints",
    )
    return PruningCallback(str(cfg.optimized_metric), study_trial=study_trial, place=place)


def _log_data(cfg: DictConfig, study_trial: StudyTrial | None, fold: int | None, dm: ImageDataModule) -> None:
    log.info(
        "%s%sdata: %d train / %d val / %d test images, %d classes, %dpx; model: %s",
        f"trial {study_trial.number}: " if study_trial else "",
        f"fold {fold + 1}/{dm.folds}: " if fold is not None else "",
        len(dm.splits["train"]),
        len(dm.splits["val"]),
        len(dm.splits["test"]),
        dm.num_classes,
        dm.img_size,
        cfg.models.net.name,
    )
