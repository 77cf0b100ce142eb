"""The machine-readable results of a study: best_params.json, all_trials.csv, study_stats.json, optimization_results.yaml."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from optuna.trial import FrozenTrial

from sweeplab.reporting.analysis import study_stats
from sweeplab.search.checkpoints import kept
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_GUARD_SAVED,
    ATTR_MAX_EPOCHS,
    ATTR_OUTPUT_DIR,
    ATTR_PRUNED_AT,
    ATTR_RESCUE_OF,
    ATTR_RETRY_OF,
)
from sweeplab.search.view import StudyView, dumps, last_report


def write_files(
    view: StudyView,
    out_dir: Path,
    retrain: str | None,
    stats: dict[str, Any] | None = None,
    picked: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the four result files into `out_dir`; `retrain` trains the best trial; `stats` if already computed.

    `picked` records a trial exported on request (runners/report.py pick.*) in best_params.json.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "best_params": out_dir / "best_params.json",
        "all_trials": out_dir / "all_trials.csv",
        "study_stats": out_dir / "study_stats.json",
        "optimization_results": out_dir / "optimization_results.yaml",
    }
    extra = {"picked": picked} if picked else {}
    paths["best_params"].write_text(dumps({**best_params(view, retrain), **extra}))
    write_trials_csv(view, paths["all_trials"])
    paths["study_stats"].write_text(dumps(stats if stats is not None else study_stats(view)))
    OmegaConf.save(OmegaConf.create(results_payload(view)), paths["optimization_results"])
    return paths


def best_params(view: StudyView, retrain: str | None) -> dict[str, Any]:
    # the checkpoint files the study keeps (hydra.sweeper.checkpoints.keep), by trial, best first
    checkpoints = {str(n): paths for n, paths in kept(view.study, view.trials).items()}
    if not view.single:
        return {
            "study_name": view.name,
            "metrics": view.metrics,
            "directions": view.directions,
            "pareto_front": view.front_rows(),
            "checkpoints": checkpoints,
        }
    best = view.best
    return {
        "study_name": view.name,
        "metric": view.metric,
        "direction": view.directions[0],
        "trial": best.number if best else None,
        "value": best.values[0] if best else None,
        "params": dict(best.params) if best else {},
        "retrain": retrain,
        "checkpoints": checkpoints,
    }


def trial_row(view: StudyView, t: FrozenTrial) -> dict[str, Any]:
    """One all_trials.csv row: Optuna's column names (value/values_i, params_<name>) plus sweeplab's records."""
    row: dict[str, Any] = {"number": t.number, "state": t.state.name}
    if view.single:
        row["value"] = t.values[0] if t.values else None
    else:
        for i in range(len(view.directions)):
            row[f"values_{i}"] = t.values[i] if t.values else None
    for name in view.param_names:
        row[f"params_{name}"] = t.params.get(name)
    step, value = last_report(t)
    row.update(
        datetime_start=t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
        duration_s=round(t.duration.total_seconds(), 3) if t.duration is not None else None,
        epochs_run=t.user_attrs.get(ATTR_EPOCHS),
        max_epochs=t.user_attrs.get(ATTR_MAX_EPOCHS),
        last_step=step,
        last_value=value,
        pruned_at_epoch=t.user_attrs.get(ATTR_PRUNED_AT),
        fail_reason=t.user_attrs.get(ATTR_FAIL_REASON),
        retry_of=t.user_attrs.get(ATTR_RETRY_OF),
        rescue_of=t.user_attrs.get(ATTR_RESCUE_OF),
        guard_saved="; ".join(
            f"{rule} at epoch {step}" for step, rule in t.user_attrs.get(ATTR_GUARD_SAVED, [])
        )
        or None,
        output_dir=t.user_attrs.get(ATTR_OUTPUT_DIR),
    )
    return row


def write_trials_csv(view: StudyView, path: Path) -> None:
    rows = [trial_row(view, t) for t in view.trials]
    header = list(trial_row(view, view.trials[0]).keys()) if rows else ["number", "state", "value"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def results_payload(view: StudyView) -> dict[str, Any]:
    """optimization_results.yaml, exactly as the stock hydra-optuna-sweeper writes it, for the scripts that
    read it: `best_params` and `best_value`, or for several objectives `solutions` (the Pareto front, each
    with its `params` and `values`). A study without a complete trial has neither. sweeplab's own fields
    (counts, the retrain command, the best trial's number) are in best_params.json and study_stats.json."""
    payload: dict[str, Any] = {"name": "optuna"}
    best = view.best
    if best is not None:
        payload.update(best_params=dict(best.params), best_value=best.values[0])
    elif not view.single:
        payload["solutions"] = [{"params": dict(t.params), "values": list(t.values)} for t in view.front]
    return payload
