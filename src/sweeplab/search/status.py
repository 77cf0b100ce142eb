"""The console's one line per finished trial: what a person watching a sweep reads.

Apart from the loop, which only says when a trial finished and how long the sweep has run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.records import ATTR_EPOCHS, ATTR_FAIL_REASON, ATTR_PRUNED_AT, counted, front
from sweeplab.search.rescue import own_trials

log = logging.getLogger("sweeplab.sweep")


def status_line(
    study: optuna.Study,
    n_trials: int,
    n_objectives: int,
    frozen: FrozenTrial,
    started: float,
    finished_here: int,
) -> None:
    """One line for the finished trial `frozen`: its state and value, the study's count and best, the time
    since `started` (the sweep's `time.monotonic()` at its start) and the time left at this session's pace
    (`finished_here`: the trials this sweep has finished)."""
    number, state = frozen.number, frozen.state
    done, total = len(counted(own_trials(study.get_trials(deepcopy=False)))), n_trials
    elapsed = time.monotonic() - started
    left = ""
    if finished_here and done < total:
        left = f" left~{duration(elapsed / finished_here * (total - done))}"
    value = _fmt(frozen.values) if frozen.values else "-"
    extra = f" fail_reason={frozen.user_attrs.get(ATTR_FAIL_REASON)}" if state == TrialState.FAIL else ""
    pruned = f" at step {frozen.user_attrs.get(ATTR_PRUNED_AT)}" if state == TrialState.PRUNED else ""
    log.info(
        "[%d/%d] trial %d %s%s value=%s%s best=%s elapsed=%s%s%s",
        min(done, total),
        total,
        number,
        state.name,
        pruned,
        value,
        _progress(frozen),
        best_text(study, n_objectives),
        duration(elapsed),
        left,
        extra,
    )


def _progress(frozen: FrozenTrial) -> str:
    if ATTR_EPOCHS in frozen.user_attrs:
        return f" epochs={frozen.user_attrs[ATTR_EPOCHS]}"
    if frozen.intermediate_values:
        return f" steps={max(frozen.intermediate_values)}"
    return ""


def best_text(study: optuna.Study, n_objectives: int) -> str:
    """The study's best value and trial, or the size of its Pareto front for several objectives."""
    if n_objectives > 1:
        return f"{len(front(study))} on the Pareto front"
    try:
        best = study.best_trial
    except ValueError:
        return "-"
    return f"{best.value:.4f} (trial {best.number})"


def duration(seconds: float) -> str:
    """12.3s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt(values: Sequence[float]) -> str:
    return ",".join(f"{v:.4f}" for v in values)
