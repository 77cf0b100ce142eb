"""One training run: build → fit (reporting to the study, if any) → test the best checkpoint → metrics.json → value."""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.data.datamodule import check_folds
from sweeplab.errors import config_error
from sweeplab.search.records import ATTR_FOLD_VALUES, ATTR_MAX_EPOCHS, ATTR_TEST
from sweeplab.search.trial import StudyTrial, current_trial
from sweeplab.training.build import (
    build_datamodule,
    build_module,
    build_trainer,
    compile_options,
    optimized_mode,
)
from sweeplab.training.callbacks import CompileTimer, MetricHistory, PruningCallback

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
    runs: list[FoldRun] = []
    for fold in [None] if folds is None else range(folds):
        run = _fit(cfg, mode, study_trial, fold, epochs_before=sum(len(r.epochs) for r in runs))
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
        "epochs_run": sum(len(r.epochs) for r in runs),
        "pruned_at_epoch": pruned_at,
        "trial": study_trial.number if study_trial else None,
        "best_checkpoint": one.best_checkpoint if one else None,
        "classes": list(runs[0].classes),  # the model's outputs, in order (what predict labels with)
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    if folds is not None:
        result["folds"] = [
            {
                "fold": i,
                "value": r.value,
                "best_epoch": r.best["epoch"] if r.best else None,
                "epochs_run": len(r.epochs),
                "test": r.test,
                "best_checkpoint": r.best_checkpoint,
            }
            for i, r in enumerate(runs)
        ]
    if runs[0].compile_s is not None:
        result["compile_s"] = runs[0].compile_s
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
    cfg: DictConfig, mode: str, study_trial: StudyTrial | None, fold: int | None, epochs_before: int
) -> FoldRun:
    """Build and fit one model (fold `fold` of a k-fold run, in its own `fold_<i>/` dir), then test it."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # each fold starts from the same seed
    if fold is not None:
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):  # checkpoints and logs of each fold in its own dir
            cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / f"fold_{fold}")
    dm = build_datamodule(cfg, fold)
    module = build_module(cfg, dm)
    history = MetricHistory(str(cfg.optimized_metric))
    callbacks: list[L.Callback] = [history]
    pruning = None
    if study_trial:
        offset = (fold or 0) * int(cfg.trainer.max_epochs)
        pruning = PruningCallback(study_trial, str(cfg.optimized_metric), offset, epochs_before)
        callbacks.append(pruning)
    compile_timer = CompileTimer() if compile_options(cfg) is not None else None
    if compile_timer:
        callbacks.append(compile_timer)
    trainer = build_trainer(cfg, extra_callbacks=callbacks)
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
    trainer.fit(module, datamodule=dm)
    pruned_at = pruning.pruned_at if pruning else None
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test = (
        []
        if pruned_at is not None
        else trainer.test(module, datamodule=dm, ckpt_path=best_path or None, verbose=False)
    )
    best = history.best(mode)
    return FoldRun(
        epochs=history.epochs,
        best=best,
        value=best[str(cfg.optimized_metric)] if best else math.nan,
        test={k: float(v) for k, v in (test[0] if test else {}).items()},
        best_checkpoint=best_path or None,
        pruned_at=pruned_at,
        classes=dm.classes,
        compile_s=compile_timer.compile_s if compile_timer else None,
    )


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
