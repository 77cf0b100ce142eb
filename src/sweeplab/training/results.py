"""What a run leaves behind: each fitted model's outcome (`FoldRun`) and the run's metrics.json, where the
folds of a k-fold run are averaged into the one value a sweeper optimizes."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from sweeplab.errors import config_error

if TYPE_CHECKING:
    from pathlib import Path

    from sweeplab.search.trial import ResumePoint


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
    data: dict[str, Any] | None = None  # how the datamodule got its images (decoded, or read from the cache)

    def __post_init__(self) -> None:
        if self.ran < 0:
            self.ran = len(self.epochs)


def run_value(runs: list[FoldRun]) -> float:
    """The optimized value: the mean of the folds' best values (each fold's best epoch, as for one run)."""
    return _mean([r.value for r in runs])


def extra_values(cfg: DictConfig, runs: list[FoldRun]) -> list[float]:
    """Each of `extra_objectives` at the best epoch, averaged over the folds as the optimized value is."""
    return [_mean([_metric_at(r.best, str(m)) for r in runs]) for m in cfg.get("extra_objectives") or []]


def run_metrics(
    cfg: DictConfig,
    runs: list[FoldRun],
    *,
    mode: str,
    folds: int | None,
    objective: list[float],
    trial: int | None,
    resumed: ResumePoint | None,
    started: float,
) -> dict[str, Any]:
    """The content of metrics.json. `objective`: [optimized value, *extra_objectives values]; `started`:
    the run's `time.perf_counter()` at its start (for its wall time)."""
    extra = [str(m) for m in cfg.get("extra_objectives") or []]
    one = runs[0] if folds is None else None
    result = {
        "optimized_metric": str(cfg.optimized_metric),
        "optimized_mode": mode,
        "value": objective[0],
        "extra_objectives": dict(zip(extra, objective[1:], strict=True)),
        # k folds: each key's mean over the folds' best epochs (and test metrics)
        "best_val": one.best if one else _mean_dicts([r.best for r in runs], drop="epoch"),
        "last_val": one.epochs[-1] if one and one.epochs else None,
        "test": one.test if one else (_mean_dicts([r.test for r in runs]) or {}),  # {}: pruned
        "epochs_run": sum(r.ran for r in runs),  # by this job (a resumed rescue: the epochs after the pause)
        "pruned_at_epoch": runs[-1].pruned_at,
        "trial": trial,
        "best_checkpoint": one.best_checkpoint if one else None,
        "classes": list(runs[-1].classes),  # the model's outputs, in order (what predict labels with)
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    if folds is not None:
        result["folds"] = [_fold_record(i, r) for i, r in enumerate(runs)]
    stats = [r.data for r in runs if r.data]
    if stats:  # summed over folds: a later fold reads what the first decoded
        result["data"] = {
            "images_decoded": sum(int(s["images_decoded"]) for s in stats),
            "read_s": round(sum(float(s["read_s"]) for s in stats), 3),
            "cache": stats[0].get("cache"),
            "mapped": stats[0].get("mapped"),
        }
    if runs[0].compile_s is not None:
        result["compile_s"] = runs[0].compile_s
    if resumed is not None:
        result["resumed_from"] = {
            "trial": resumed.trial,
            "step": resumed.step,
            "fold": resumed.fold,
            "checkpoint": str(resumed.checkpoint),
        }
    return result


def _fold_record(fold: int, run: FoldRun) -> dict[str, Any]:
    """One fold in metrics.json (what a rescue that resumes a later fold reads back: `resume.py`)."""
    return {
        "fold": fold,
        "value": run.value,
        "best_epoch": run.best["epoch"] if run.best else None,
        "epochs_run": run.ran,
        "test": run.test,
        "best_checkpoint": run.best_checkpoint,
    }


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return str(obj)


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
