"""Replay whole studies on recorded learning curves, without training: pruners judged in seconds.

A curve table holds, for many configurations, the optimized metric after every epoch of an unpruned
run. A replayed study takes configurations in a seeded random order (random search), reports each
curve epoch by epoch to a real Optuna trial with the pruner under test (guard included), and stops a
curve where the pruner says so; rescue then replays the chosen pruned trials in full. Same table, same
seed, same pruner: the same result, every time.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeplab.errors import config_error
from sweeplab.search.pruning import rescue_candidates
from sweeplab.search.records import ATTR_GUARD_SAVED, ATTR_RESCUE_OF
from sweeplab.search.schema import paused_budget

ATTR_CONFIG = "config"  # the row of the curve table a replayed trial is


@dataclass(frozen=True)
class CurveTable:
    """Per configuration: its params and the metric after each epoch (all curves the same length)."""

    params: list[dict[str, str]]
    curves: list[list[float]]

    @classmethod
    def from_csv(cls, path: Path) -> CurveTable:
        if not path.is_file():
            raise config_error("curves", str(path), "no such file")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        epochs = sorted(
            (k for k in (rows[0] if rows else {}) if k.startswith("epoch_")), key=lambda k: int(k[6:])
        )
        if not rows or not epochs:
            raise config_error(
                "curves", str(path), "needs a header with epoch_1, epoch_2, ... and one row per run"
            )
        params = [{k: v for k, v in r.items() if not k.startswith("epoch_")} for r in rows]
        return cls(params, [[float(r[e]) for e in epochs] for r in rows])

    def __len__(self) -> int:
        return len(self.curves)


@dataclass
class ReplayResult:
    best: float  # the study's best value (complete trials, rescues included)
    best_config: int
    epochs: int  # epochs replayed, rescues included
    pruned: list[int] = field(default_factory=list)  # configurations pruned (and not rescued)
    saved: dict[int, list] = field(default_factory=dict)  # configuration -> [[step, rule], ...]
    rescued: list[int] = field(default_factory=list)  # configurations run again in full


def best_of(curve: Sequence[float], maximize: bool = True) -> float:
    """A run's value: the best epoch, as `train()` returns the best checkpoint's metric."""
    finite = [v for v in curve if not math.isnan(v)]
    return (max if maximize else min)(finite) if finite else math.nan


def replay(
    table: CurveTable,
    order: Sequence[int],
    pruner: optuna.pruners.BasePruner,
    direction: str = "maximize",
    rescue_top_k: int = 0,
    resume: bool = False,
) -> ReplayResult:
    """Replay one study: the configurations `order`, in that order, under `pruner`; then rescue.

    As the sweeper does: the last epoch is never pruned; with `resume`, a pruned trial keeps its pause
    while it ranks among the best paused ones (as many as `pause.keep`'s default keeps, checked after each
    prune as `sweeplab.search.pauses.keep_best` does), and a rescue of a kept one costs only the epochs
    after its pause; a rescue of one that fell out, or without `resume`, costs the whole curve."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a fixed name: Hyperband picks a trial's bracket from a hash of study name and trial number
    study = optuna.create_study(
        study_name="replay", direction=direction, pruner=pruner, sampler=optuna.samplers.RandomSampler(0)
    )
    maximize = direction == "maximize"
    epochs = 0
    dropped: set[int] = set()  # pruned trials whose checkpoint the budget removed
    budget = paused_budget(None, rescue_top_k)
    for config in order:
        ran = _run(study, table, config, maximize, prune=True)
        epochs += ran
        if resume and ran < len(table.curves[config]):
            trials = study.get_trials(deepcopy=False)
            kept = {t.number for t in rescue_candidates(trials, study.direction, budget)}
            dropped |= {t.number for t in trials if t.state == TrialState.PRUNED and t.number not in kept}
    picked = rescue_candidates(study.get_trials(deepcopy=False), study.direction, rescue_top_k)
    for original in picked:
        paused = original.last_step if resume and original.number not in dropped else 0
        epochs += _run(
            study,
            table,
            int(original.user_attrs[ATTR_CONFIG]),
            maximize,
            prune=False,
            rescue_of=original.number,
            start=paused or 0,
        )
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    rescued = [int(t.user_attrs[ATTR_CONFIG]) for t in picked]
    return ReplayResult(
        best=best.value,
        best_config=int(best.user_attrs[ATTR_CONFIG]),
        epochs=epochs,
        pruned=[
            int(t.user_attrs[ATTR_CONFIG])
            for t in trials
            if t.state == TrialState.PRUNED and int(t.user_attrs[ATTR_CONFIG]) not in rescued
        ],
        saved={
            int(t.user_attrs[ATTR_CONFIG]): t.user_attrs[ATTR_GUARD_SAVED]
            for t in trials
            if ATTR_GUARD_SAVED in t.user_attrs
        },
        rescued=rescued,
    )


def _run(
    study: optuna.Study,
    table: CurveTable,
    config: int,
    maximize: bool,
    prune: bool,
    rescue_of: int | None = None,
    start: int = 0,
) -> int:
    """Replay one trial (a resumed rescue: from epoch `start`, the epochs before reported as its own);
    returns the epochs it ran."""
    trial = study.ask()
    trial.set_user_attr(ATTR_CONFIG, config)
    if rescue_of is not None:
        trial.set_user_attr(ATTR_RESCUE_OF, rescue_of)
    curve = table.curves[config]
    for epoch, value in enumerate(curve, start=1):
        trial.report(value, epoch)
        if prune and epoch < len(curve) and trial.should_prune():  # the last epoch completes
            study.tell(trial, state=TrialState.PRUNED)
            return epoch
    study.tell(trial, best_of(curve, maximize))
    return len(curve) - start
