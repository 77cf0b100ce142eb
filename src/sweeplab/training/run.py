"""One training run: build → fit (reporting to the study, if any) → test the best checkpoint → metrics.json → value."""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.data.datamodule import check_folds
from sweeplab.errors import config_error
from sweeplab.search.records import ATTR_FOLD_VALUES, ATTR_MAX_EPOCHS, ATTR_TEST
from sweeplab.search.trial import ResumePoint, StudyTrial, current_trial
from sweeplab.training.build import (
    build_datamodule,
    build_module,
    build_trainer,
    compile_options,
    optimized_mode,
)
from sweeplab.training.callbacks import CompileTimer, MetricHistory, PruningCallback, RandomState

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | list[float]:
    """Train and test one model; return the best value of `optimized_metric` (what a sweeper optimizes).

    With `extra_objectives`, returns [optimized value, *those metrics at the same epoch]. Inside a
    sweeplab study, the value is reported to the trial every epoch and the fit stops when it is pruned
    (the test split is then skipped: a pruned trial is not a candidate).
    """
    try:
        return _train(cfg)
    finally:
        release_memory()


def release_memory() -> None:
    """Free the finished run's model, optimizer and activations (Lightning holds them in reference
    cycles), so the next trial in this process starts with the GPU memory the first one had. The
    process-wide data cache stays: sharing it is the point.

    What survives the collection (modules, caches) lives as long as the process, so it is frozen out
    of later collections: the next trial's collection walks only that trial's objects (about 1 ms
    instead of 0.2-0.5 s with torch, Lightning and timm loaded)."""
    gc.collect()
    gc.freeze()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class FoldRun:
    """One fitted model: its validation metrics per epoch, test metrics and where it stopped (plain
    values only: the callbacks would keep the trainer and model alive)."""

    epochs: list[dict[str, float]]
    best: dict[str, float] | None  # the epoch with the best optimized value
    value: float  # that value (NaN when no epoch validated)
    test: dict[str, float]
    best_checkpoint: str | None
    pruned_at: int | None
    classes: tuple[str, ...]
    compile_s: float | None = None
    ran: int = -1  # epochs trained by this job (less than len(epochs) when resumed); -1: len(epochs)

    def __post_init__(self) -> None:
        if self.ran < 0:
            self.ran = len(self.epochs)


def _train(cfg: DictConfig) -> float | list[float]:
    started = time.perf_counter()
    mode = optimized_mode(cfg)
    folds, _ = check_folds(cfg.data.get("folds"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Hydra keeps the unresolved config in .hydra/; this is what the run actually used.
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    study_trial = current_trial()
    if study_trial:  # the budget pruning saves from: every fold's epochs
        study_trial.set(ATTR_MAX_EPOCHS, int(cfg.trainer.max_epochs) * (folds or 1))
    resume = _resume_point(study_trial, folds)
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
            break  # a pruned trial is not a candidate: no later folds, no test
        if fold is not None and fold + 1 < folds:
            release_memory()  # before the next fold; train() releases after the last

    # k folds: the value is the mean of the folds' best values (each fold's best epoch, as for one run)
    value = _mean([r.value for r in runs])
    extra = [str(m) for m in cfg.get("extra_objectives") or []]
    extra_values = [_mean([_metric_at(r.best, m) for r in runs]) for m in extra]
    pruned_at = runs[-1].pruned_at
    one = runs[0] if folds is None else None
    result = {
        "optimized_metric": str(cfg.optimized_metric),
        "optimized_mode": mode,
        "value": value,
        "extra_objectives": dict(zip(extra, extra_values, strict=True)),
        # k folds: each key's mean over the folds' best epochs (and test metrics)
        "best_val": one.best if one else _mean_dicts([r.best for r in runs], drop="epoch"),
        "last_val": one.epochs[-1] if one and one.epochs else None,
        "test": one.test if one else (_mean_dicts([r.test for r in runs]) or {}),  # {}: pruned
        "epochs_run": sum(r.ran for r in runs),  # by this job (a resumed rescue: the epochs after the pause)
        "pruned_at_epoch": pruned_at,
        "trial": study_trial.number if study_trial else None,
        "best_checkpoint": one.best_checkpoint if one else None,
        "classes": list(runs[-1].classes),  # the model's outputs, in order (what predict labels with)
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    if folds is not None:
        result["folds"] = [
            {
                "fold": i,
                "value": r.value,
                "best_epoch": r.best["epoch"] if r.best else None,
                "epochs_run": r.ran,
                "test": r.test,
                "best_checkpoint": r.best_checkpoint,
            }
            for i, r in enumerate(runs)
        ]
    if runs[0].compile_s is not None:
        result["compile_s"] = runs[0].compile_s
    if resume is not None:
        result["resumed_from"] = {
            "trial": resume.point.trial,
            "step": resume.point.step,
            "fold": resume.point.fold,
            "checkpoint": str(resume.point.checkpoint),
        }
    write_json(output_dir / "metrics.json", result)
    if study_trial and result["test"]:  # the report's deep dive on the best trial shows them
        study_trial.set(ATTR_TEST, result["test"])
    log.info(
        "%s best %.4f (%s)%s; test %s; %.1fs",
        cfg.optimized_metric,
        value,
        f"epoch {one.best['epoch']}" if one and one.best else f"mean of {len(runs)} fold(s)",
        " [pruned]" if pruned_at is not None else "",
        ", ".join(f"{k}={v:.4f}" for k, v in result["test"].items()) or "skipped",
        result["wall_time_s"],
    )
    return [float(value), *extra_values] if extra else float(value)


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
    if fold is not None:
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):  # checkpoints and logs of each fold in its own dir
            cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / f"fold_{fold}")
    dm = build_datamodule(cfg, fold)
    module = build_module(cfg, dm)
    history = MetricHistory(str(cfg.optimized_metric))
    callbacks: list[L.Callback] = [history, RandomState()]
    pruning = None
    resumed = resume.epoch if resume is not None else 0
    if study_trial:
        folds = dm.folds or 1
        pruning = PruningCallback(
            study_trial,
            str(cfg.optimized_metric),
            step_offset=(fold or 0) * int(cfg.trainer.max_epochs),
            epochs_before=epochs_before,
            last_fold=fold is None or fold == folds - 1,
            pause_dir=Path(cfg.paths.output_dir) / "checkpoints",
            fold=fold,
            resumed_epochs=resumed,
        )
        callbacks.append(pruning)
    compile_timer = CompileTimer() if compile_options(cfg) is not None else None
    if compile_timer:
        callbacks.append(compile_timer)
    trainer = build_trainer(cfg, extra_callbacks=callbacks, resuming=resume is not None)
    ckpt_path = relocated(resume.checkpoint, trainer) if resume is not None and resume.checkpoint else None
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
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if ckpt_path is not None:
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
        ran=len(epochs) - resumed,
    )


@dataclass
class Resume:
    """A rescue that resumes its pruned trial: where, and the folds that trial had already finished."""

    point: ResumePoint
    earlier_folds: list[FoldRun]


def _resume_point(study_trial: StudyTrial | None, folds: int | None) -> Resume | None:
    """For a rescue: its curve so far reported, and where to resume (None: train from the first epoch,
    with the reason logged and stored on the trial)."""
    point = study_trial.resume_point() if study_trial else None
    if study_trial is None or point is None:
        return None
    earlier: list[FoldRun] = []
    if point.checkpoint is not None and (point.fold is not None) != (folds is not None):
        point = replace(
            point, checkpoint=None, reason=f"trial {point.trial} was paused with other data.folds"
        )
    if point.checkpoint is not None and point.fold:
        earlier = _finished_folds(point)
        if len(earlier) < point.fold:
            point = replace(
                point, checkpoint=None, reason=f"trial {point.trial}'s finished folds are not on this machine"
            )
    if point.checkpoint is None:
        point = replace(point, values={})
    study_trial.continue_curve(point)
    if point.checkpoint is None:
        log.warning(
            "trial %d (rescue of trial %d) trains from the first epoch: %s",
            study_trial.number,
            point.trial,
            point.reason,
        )
        return None
    log.info(
        "trial %d resumes trial %d at step %d from %s",
        study_trial.number,
        point.trial,
        point.step,
        point.checkpoint,
    )
    return Resume(point, earlier)


def _finished_folds(point: ResumePoint) -> list[FoldRun]:
    """The folds the paused trial finished before the one it was paused in, from its metrics.json."""
    if point.run_dir is None or not (point.run_dir / "metrics.json").is_file():
        return []
    data = json.loads((point.run_dir / "metrics.json").read_text())
    metric = str(data.get("optimized_metric"))
    runs = []
    for record in (data.get("folds") or [])[: point.fold or 0]:
        best = {"epoch": record.get("best_epoch"), metric: record["value"]}
        runs.append(
            FoldRun(
                epochs=[],
                best=best,
                value=float(record["value"]),
                test=dict(record.get("test") or {}),
                best_checkpoint=record.get("best_checkpoint"),
                pruned_at=None,
                classes=tuple(data.get("classes") or ()),
            )
        )
    return runs


def relocated(checkpoint: Path, trainer: L.Trainer) -> str:
    """A copy of the paused checkpoint for this run's dirs: the checkpoint callback's saved state (its best
    model and score so far) points into this run's checkpoints/, where the paused run's best model is
    copied, so the best checkpoint and its test metrics span the whole curve, as in an unpaused run."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saver = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if saver is not None and saver.dirpath is not None:
        here = Path(saver.dirpath)
        here.mkdir(parents=True, exist_ok=True)
        for key, value in state.get("callbacks", {}).items():
            if not key.startswith("ModelCheckpoint") or not value.get("dirpath"):
                continue
            there = Path(value["dirpath"])
            best = value.get("best_model_path")
            if best and Path(best).is_file():
                shutil.copy2(best, here / Path(best).name)
            value["dirpath"] = str(here)
            for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
                value[name] = _moved(value.get(name), there, here)
            value["best_k_models"] = {
                _moved(k, there, here): v for k, v in (value.get("best_k_models") or {}).items()
            }
        target = here / "resume_from.ckpt"
    else:
        target = checkpoint.with_name("resume_from.ckpt")
    torch.save(state, target)
    return str(target)


def _moved(path: str | None, there: Path, here: Path) -> str | None:
    """`path` under `there` as the same path under `here` (other paths as they are)."""
    if not path or not Path(path).is_relative_to(there):
        return path
    return str(here / Path(path).relative_to(there))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def _mean_dicts(rows: list[dict[str, float] | None], drop: str = "") -> dict[str, float] | None:
    """Key-wise means over the rows (keys every row has); None when a row is missing."""
    if not rows or any(not r for r in rows):
        return None
    keys = [k for k in rows[0] if k != drop and all(k in r for r in rows)]
    return {k: _mean([r[k] for r in rows]) for k in keys}  # type: ignore[index]


def _metric_at(epoch: dict[str, float] | None, metric: str) -> float:
    if epoch is None:
        return math.nan
    if metric not in epoch:
        logged = ", ".join(sorted(epoch))
        raise config_error("extra_objectives", metric, f"was never logged; metrics logged: {logged}")
    return float(epoch[metric])


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return str(obj)
