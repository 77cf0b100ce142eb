"""Report sections that list trials one per row (the study as a whole is told in sections.py).

Every trial ranked, the Pareto front, the trial exported on request, the pruned trials that may have
been stopped too early, those the guard saved or a rescue ran again, and the failures: the tables a
reader checks a finding against, each trial by its number.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import one_line
from sweeplab.reporting.analysis import EarlyPruned, failures
from sweeplab.reporting.document import Block, Code, Heading, Para, Table, cell
from sweeplab.reporting.export import Export, Flattener
from sweeplab.reporting.next_steps import EXPORT_ERRORS
from sweeplab.reporting.pick import Pick
from sweeplab.reporting.pruner_review import HEADING as PRUNER_COST
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_FOCUS_BEST,
    ATTR_GUARD_SAVED,
    ATTR_RESCUE_OF,
    ATTR_RESUMED,
)
from sweeplab.search.view import StudyView, last_report

log = logging.getLogger("sweeplab.report")


def all_trials(view: StudyView, fallback: int | None) -> list[Block]:
    """Every trial, ranked: complete ones by value, then pruned ones by their value at the epoch they were
    stopped (not comparable with full values, so below them), then failed and unfinished ones."""
    params = view.param_names
    complete = view.ranked()
    pruned = sorted(
        (t for t in view.pruned if last_report(t)[1] is not None and not math.isnan(last_report(t)[1])),
        key=lambda t: -view.sign * float(last_report(t)[1]),
    )
    pruned += [t for t in view.pruned if t not in pruned]
    rest = [t for t in view.trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    epochs = _epochs_reported(view)
    rows = []
    for rank, t in enumerate([*complete, *pruned, *rest], start=1):
        values, state = _ranked_values(view, t)
        rows.append(
            [
                rank if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else "-",
                t.number,
                *values,
                state,
                *([t.user_attrs.get(ATTR_EPOCHS)] if epochs else []),
                _trial_note(view, t, fallback),
                *(t.params.get(p) for p in params),
            ]
        )
    if not rows:
        return []
    return [
        Heading("All trials, ranked"),
        Para(
            f"Complete trials by {view.metric}, then pruned ones by their value at the epoch they were pruned "
            "(a value from fewer epochs, so ranked below), then failed and unfinished ones."
            + ("" if epochs else " The trials reported no epochs, so none are listed.")
        ),
        Table(
            ["rank", "trial", *view.metrics, "state", *(["epochs"] if epochs else []), "note", *params], rows
        ),
    ]


def _epochs_reported(view: StudyView) -> bool:
    """Whether any trial recorded the epochs it ran (an app that reports per epoch through Lightning's
    callback does; one that returns a value only does not, and its tables have no empty epochs column)."""
    return any(ATTR_EPOCHS in t.user_attrs for t in view.trials)


def _ranked_values(view: StudyView, trial: FrozenTrial) -> tuple[list[Any], str]:
    """A trial's values in the ranking (a pruned one's at its last epoch) and how it ended."""
    if trial.state == TrialState.COMPLETE:
        return list(trial.values), "complete"
    if trial.state == TrialState.PRUNED:
        step, value = last_report(trial)
        values = [value, *([None] * (len(view.metrics) - 1))]
        return values, f"pruned at epoch {step}" if step is not None else "pruned"
    return [None] * len(view.metrics), trial.state.name.lower()


def _trial_note(view: StudyView, trial: FrozenTrial, fallback: int | None) -> str:
    notes = []
    if view.best is not None and trial.number == view.best.number:
        notes.append("best")
    if trial.number == fallback:
        notes.append("fallback")
    if ATTR_RESCUE_OF in trial.user_attrs:
        notes.append(f"rescue of trial {trial.user_attrs[ATTR_RESCUE_OF]}")
    if ATTR_FOCUS_BEST in trial.user_attrs:
        notes.append(f"best of study {trial.user_attrs[ATTR_FOCUS_BEST]}")
    if trial.state == TrialState.FAIL:
        notes.append(str(trial.user_attrs.get(ATTR_FAIL_REASON) or "no reason stored"))
    return "; ".join(notes)


def pareto_front(view: StudyView) -> list[Block]:
    """The trade-offs of a multi-objective study: the complete trials no other one beats in every objective."""
    if view.single or not view.front:
        return []
    params = view.param_names
    epochs = _epochs_reported(view)
    rows = [
        [
            t.number,
            *t.values,
            *([t.user_attrs.get(ATTR_EPOCHS)] if epochs else []),
            *(t.params.get(p) for p in params),
        ]
        for t in view.front
    ]
    return [
        Heading("Pareto front"),
        Para(
            "The complete trials no other complete trial matches or beats in every objective: each is a "
            "different trade-off (no order among them). Next steps give the command that exports one as a preset."
        ),
        Table(["trial", *view.metrics, *(["epochs"] if epochs else []), *params], rows),
    ]


def exported_pick(view: StudyView, pick: Pick | None, picked: Export | None) -> list[Block]:
    """Which trial was exported on request, and why; a warning when it is off the Pareto front."""
    if pick is None or picked is None:
        return []
    values = ", ".join(f"{m} {cell(v)}" for m, v in zip(view.metrics, pick.trial.values, strict=True))
    blocks: list[Block] = [
        Heading("Exported trial"),
        Para(
            f"Trial {pick.trial.number} ({values}) was exported as {picked.option} ({picked.path}): "
            f"{pick.reason}."
        ),
    ]
    if pick.dominated_by is not None:
        blocks.append(
            Para(
                f"Warning: trial {pick.trial.number} is not on the Pareto front: trial {pick.dominated_by} "
                "is at least as good in every objective and better in one."
            )
        )
    return blocks


def pruned_early(
    view: StudyView, flattener: Flattener | None, suspects: list[EarlyPruned], top_k: int, ahead: int = 0
) -> list[Block]:
    """The pruned trials that ranked near the top when they were stopped, each with the command that trains
    it in full: where the pruner may have killed the best configuration. `ahead`: how many pruned trials
    beat the winner's own value at their epoch (told in the next section; a top-k rank misses them)."""
    if not view.pruned:
        return []
    if not suspects:
        text = f"No pruned trial ranked in the top {top_k} of the trials at the epoch it was pruned."
        if ahead:
            text += (
                f" That is no all-clear: {ahead} pruned trial{'s were' if ahead != 1 else ' was'} ahead of the "
                f"winner at that epoch (see '{PRUNER_COST}')."
            )
        return [Heading("Possibly pruned too early"), Para(text)]
    return [
        Heading("Possibly pruned too early"),
        Para(
            f"These ranked in the top {top_k} of all trials at the epoch they were pruned: the pruner compared "
            "them with trials that were further along or luckier at that epoch. Each command trains one in full."
        ),
        Table(
            ["trial", "pruned at epoch", view.metric, "rank at that epoch", "params"],
            [
                [s.trial.number, s.step, s.value, f"{s.rank} of {s.peers}", _params(s.trial.params)]
                for s in suspects
            ],
        ),
        Code("\n".join(_full_run_command(s.trial, flattener) for s in suspects)),
    ]


def _full_run_command(trial: FrozenTrial, flattener: Flattener | None) -> str:
    """The command that trains a pruned trial in full, headed by its number; the reason in the log when the
    trial no longer recomposes (the report still lists it)."""
    try:
        line = flattener.trial_command(trial) if flattener else None
    except EXPORT_ERRORS as exc:
        line = None
        log.warning("no command for trial %d: %s", trial.number, one_line(exc, with_type=False))
    return f"# trial {trial.number}\n{line}" if line else f"# trial {trial.number}: no command (see log)"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={cell(v)}" for k, v in params.items())


def guard_and_rescue(view: StudyView) -> list[Block]:
    """The prunes the guard vetoed (rule, epoch) and the pruned trials run again in full."""
    return _guard_saved(view) + _rescued(view)


def _guard_saved(view: StudyView) -> list[Block]:
    """The trials a guard rule kept running, with the epochs and rules that vetoed their prunes."""
    saved = [t for t in view.trials if t.user_attrs.get(ATTR_GUARD_SAVED)]
    if not saved:
        return []
    return [
        Heading("Saved by the guard"),
        Para(
            "The pruner would have stopped these trials; a guard rule (hydra.sweeper.guard) kept them running."
        ),
        Table(
            ["trial", "state", view.metric, "saved at epoch (rule)"],
            [
                [
                    t.number,
                    t.state.name,
                    t.values[0] if t.values else None,
                    ", ".join(f"{step} ({rule})" for step, rule in t.user_attrs[ATTR_GUARD_SAVED]),
                ]
                for t in saved
            ],
        ),
    ]


def _rescued(view: StudyView) -> list[Block]:
    """The rescues beside the trials they rescued: where each was paused, how it resumed, how it ended."""
    rescues = [t for t in view.trials if ATTR_RESCUE_OF in t.user_attrs]
    if not rescues:
        return []
    by_number = {t.number: t for t in view.trials}
    return [
        Heading("Rescued"),
        Para(
            "Pruned trials that ranked best at their prune step, run again unpruned with the same params "
            "(hydra.sweeper.rescue.top_k); their results count like any trial's. A rescue resumes its "
            "trial from the checkpoint of the epoch it was paused at (hydra.sweeper.pause.keep) and trains "
            "only the remaining epochs: its curve continues the paused one (in the learning-curves plot, "
            "one curve per configuration, the pause marked x)."
        ),
        Table(
            [
                "trial",
                "rescue of",
                "paused at epoch",
                f"{view.metric} then",
                "resumed",
                "epochs run",
                "state",
                view.metric,
            ],
            [_rescue_row(t, by_number.get(int(t.user_attrs[ATTR_RESCUE_OF]))) for t in rescues],
        ),
    ]


def _rescue_row(rescue: FrozenTrial, original: FrozenTrial | None) -> list[Any]:
    step = original.last_step if original else None
    at_prune = original.intermediate_values.get(step) if original and step is not None else None
    return [
        rescue.number,
        rescue.user_attrs[ATTR_RESCUE_OF],
        step,
        at_prune,
        _resumed(rescue),
        rescue.user_attrs.get(ATTR_EPOCHS),
        rescue.state.name,
        rescue.values[0] if rescue.values else None,
    ]


def _resumed(rescue: FrozenTrial) -> str:
    """How a rescue started: from the paused checkpoint, or from the first epoch and why."""
    resumed = rescue.user_attrs.get(ATTR_RESUMED)
    if not resumed:
        return "-"
    if resumed.get("checkpoint"):
        return f"from its checkpoint at step {resumed['step']}"
    return f"from the first epoch: {resumed.get('reason')}"


def failed_trials(view: StudyView) -> list[Block]:
    """The failed trials grouped by reason."""
    groups = failures(view)
    if not groups:
        return []
    return [
        Heading("Failures"),
        Para('"interrupted" trials were stopped by a killed or interrupted sweep; their params ran again.'),
        Table(
            ["reason", "trials", "trial numbers"],
            [[r, len(n), ", ".join(map(str, n))] for r, n in groups.items()],
        ),
    ]
