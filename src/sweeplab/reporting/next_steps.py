"""The report's Next steps: what to run after a study, each step with the command that runs it.

Kept apart from the sections, which say what happened: these builders recompose trials into commands
(retrain, check over seeds, fallback, focused study, more trials, Pareto exports), and leave a step out
where a trial no longer recomposes rather than print a wrong command. The submission path (k-fold
ensemble, predict) is built by submission.py, which only sweeplab's own training app can follow.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import FrozenTrial

from sweeplab.errors import SweeplabError, one_line
from sweeplab.reporting.document import Block, Bullets, Code, Heading, Para, cell
from sweeplab.reporting.export import Export, Flattener, command_line
from sweeplab.reporting.pick import Pick, pick_trial, round_budget
from sweeplab.reporting.submission import submission_steps
from sweeplab.search.records import STUDY_COMMAND, STUDY_SCRIPT, STUDY_SETTINGS, counts
from sweeplab.search.space import focus_count, format_value, override_key
from sweeplab.search.storage import default_storage, masked
from sweeplab.search.view import StudyView

log = logging.getLogger("sweeplab.report")

SEEDS = "42,777,2024"  # the seeds a winner is validated over
CLOSE_FALLBACK = 0.1  # a fallback nearer the best than this (param distance) is said to differ little
REPORT_SCRIPT = "report.py"  # beside the training script (runners/)
# Recomposing a trial fails like this when configs changed since the study ran (a group or key removed).
EXPORT_ERRORS = (SweeplabError, HydraException, OmegaConfBaseException)


class Outcome(Protocol):
    """What the next steps read of a study's report (a `StudyReport`): what was exported, and why not."""

    pick: Pick | None
    picked: Export | None
    preset: Export | None
    focused: Export | None
    retrain: str | None
    notes: list[str]


def study_script(view: StudyView) -> str:
    """The training script the study ran, as its commands call it (sweeplab's own where none is stored)."""
    return str(view.attr(STUDY_SCRIPT) or "runners/train.py")


def next_action(view: StudyView, retrain: str | None, script: str) -> tuple[str, str | None]:
    """The one thing to do next, for the summary: (what, its command or None)."""
    best = view.best
    if best is not None:
        if retrain:
            return f"retrain trial {best.number} in full", retrain
        return f"retrain trial {best.number} in full (no command could be built: see Next steps)", None
    if not view.single and view.front:
        return "export one trial of the Pareto front as a preset; the commands are under Next steps", None
    more = continue_command(view, script)
    return ("run more trials of this study", more[0]) if more else ("run the study", None)


def next_steps(
    view: StudyView,
    report: Outcome,
    flattener: Flattener | None,
    space: dict[str, str] | None,
    root_dir: Path,
    second: tuple[FrozenTrial, float] | None,
) -> list[Block]:
    """What to run next, each with its command: retrain, check over seeds (only for an app whose config has a
    `seed` key), a fallback configuration, a focused study, more trials; then what could not be produced."""
    script = study_script(view)
    seeded = _has_seed(flattener)
    blocks: list[Block] = [Heading("Next steps")]
    blocks += _retrain_picked(report, flattener, seeded)
    if not view.single:
        blocks += _pareto_exports(view, root_dir)
    blocks += _retrain_best(report, flattener, seeded)
    if report.preset is not None:
        blocks += submission_steps(view, report.retrain, _app_job(flattener), script, root_dir)
    if second is not None and flattener is not None:
        blocks += _fallback(view, flattener, *second)
    blocks += _focused_study(view, space, report.focused)
    blocks += _more_trials(view, script)
    blocks += [Bullets([f"not produced: {note}" for note in report.notes])] if report.notes else []
    return blocks


def _app_job(flattener: Flattener | None) -> dict[str, Any] | None:
    """The app's own config, or None where it cannot be composed here (the export says why)."""
    try:
        return flattener.root_job if flattener is not None else None
    except EXPORT_ERRORS:
        return None


def _has_seed(flattener: Flattener | None) -> bool:
    """Whether the app's config has a `seed` key (then the report offers a check across seeds)."""
    return "seed" in (_app_job(flattener) or {})


def _retrain_picked(report: Outcome, flattener: Flattener | None, seeded: bool) -> list[Block]:
    """The trial the user exported comes first: it is the one they chose to train."""
    if not (report.pick and report.picked):
        return []
    blocks: list[Block] = [
        Para(
            f"Retrain trial {report.pick.trial.number} in full ({report.pick.reason}). The preset is {report.picked.path}:"
        ),
        Code(report.picked.command),
    ]
    return blocks + (_seed_check(report.picked.command, flattener) if seeded else [])


def _retrain_best(report: Outcome, flattener: Flattener | None, seeded: bool) -> list[Block]:
    """The best trial trained in full, by its preset where one was written, else by its own overrides."""
    if not report.retrain:
        return []
    where = f" (preset written to {report.preset.path})" if report.preset else ""
    blocks: list[Block] = [Para(f"Retrain the best trial in full{where}:"), Code(report.retrain)]
    return blocks + (_seed_check(report.retrain, flattener) if seeded else [])


def _focused_study(view: StudyView, space: dict[str, str] | None, focused: Export | None) -> list[Block]:
    """The narrower space as YAML (to copy where it was not written), and the command of a study on it."""
    if not space:
        return []
    yaml_text = OmegaConf.to_yaml(OmegaConf.create({"hydra": {"sweeper": {"params": space}}}))
    where = f" (written to {focused.path})" if focused else ""
    blocks: list[Block] = [
        Para(
            f"A narrower search space spanning the top {focus_count(len(view.complete))} complete trials{where}:"
        ),
        Code(f"# @package _global_\n{yaml_text}".rstrip()),
    ]
    return blocks + ([Para("Run a focused study on it:"), Code(focused.command)] if focused else [])


def _more_trials(view: StudyView, script: str) -> list[Block]:
    """The study's own command, continued with as many trials again (none where no command was stored)."""
    more = continue_command(view, script)
    if not more:
        return []
    command, added = more
    return [
        Para(
            f"Or continue this study with {added} more trials, as many again as it was run with "
            "(the stored trials count toward n_trials):"
        ),
        Code(command),
    ]


def continue_command(
    view: StudyView, script: str, *extra: str, drop: Callable[[str], bool] = lambda key: False
) -> tuple[str, int] | None:
    """The study's own command with n_trials raised by as many trials as it was configured for (by those
    that count so far, for a study that stored no settings), and that number. `extra` overrides replace
    the command's own for the same keys; `drop` leaves out others (a pruner's settings when it changes)."""
    command = view.attr(STUDY_COMMAND)
    if command is None:
        return None
    counted = sum(1 for t in view.trials if counts(t))
    added = int((view.attr(STUDY_SETTINGS) or {}).get("n_trials") or max(counted, 1))
    replaced = {override_key(a) for a in extra} | {"hydra.sweeper.n_trials"}
    kept = [a for a in command if override_key(a) not in replaced and not drop(override_key(a))]
    return command_line(script, *kept, *extra, f"hydra.sweeper.n_trials={counted + added}"), added


def _fallback(view: StudyView, flattener: Flattener, trial: FrozenTrial, distance: float) -> list[Block]:
    """The second configuration to try: a good trial unlike the best one, with the command that trains it."""
    try:
        command = flattener.trial_command(trial)
    except EXPORT_ERRORS as exc:
        log.warning("no command for the fallback trial %d: %s", trial.number, one_line(exc, with_type=False))
        return []
    rank = [t.number for t in view.ranked()].index(trial.number) + 1
    close = (
        " The top trials agree closely, so this fallback differs little from the best."
        if distance < CLOSE_FALLBACK
        else ""
    )
    return [
        Para(
            f"Fallback, if the best does not hold up: trial {trial.number} ({view.metric} {cell(trial.values[0])}, "
            f"rank {rank}) is the trial among the top {max(2, focus_count(len(view.complete)))} whose params "
            f"differ most from the best's (distance {distance:.2f}; 0: the same params, 1: as far apart as the "
            f"space allows).{close} Train it in full:"
        ),
        Code(command),
    ]


def _seed_check(retrain: str, flattener: Flattener | None) -> list[Block]:
    """The retrain command over SEEDS; where settings follow the seed (the data split), the same with them
    held at the seed the study ran with, so that the spread is the training seed's alone."""
    blocks: list[Block] = [
        Para("Check that it holds across seeds (a summary with mean and std is written to the sweep dir):"),
        Code(_multirun(retrain, f"seed={SEEDS}")),
    ]
    followers = flattener.following("seed") if flattener is not None else []
    if followers:
        seed = format_value(flattener.root_job["seed"]) if flattener is not None else ""
        held = [f"{k}={seed}" for k in followers]
        blocks += [
            Para(
                f"{', '.join(followers)} follow{'s' if len(followers) == 1 else ''} the seed, so each seed above "
                "also trains and measures on another data split, and the spread includes the split's. "
                f"To vary only the training seed, hold {'it' if len(followers) == 1 else 'them'} fixed:"
            ),
            Code(_multirun(retrain, f"seed={SEEDS}", *held)),
        ]
    return blocks


def _multirun(command: str, *sweep: str) -> str:
    """`python <script> <args>` as `python <script> -m <args> <sweep>` (the sweep's keys replace the args')."""
    interpreter, script, *args = shlex.split(command)
    keys = {override_key(a) for a in sweep}
    args = [a for a in args if override_key(a) not in keys]
    return shlex.join([interpreter, script, "-m", *args, *sweep])


def _pareto_exports(view: StudyView, root_dir: Path) -> list[Block]:
    """The commands that export one trial of the front as a preset: by number, or by a budget on the second objective."""
    front = sorted(view.front, key=lambda t: t.values[1])
    if not front:
        return []
    script = Path(study_script(view)).with_name(REPORT_SCRIPT)
    if not (root_dir / script).is_file():
        return []  # an app without sweeplab's report runner beside it
    base = [f"study_name={view.name}"]
    if view.storage_url != masked(default_storage(view.name, root_dir)):  # report.py runs from root_dir
        base.append(f"storage={view.storage_url}")
    lines = []
    for t in front:
        values = ", ".join(f"{m}={cell(v)}" for m, v in zip(view.metrics, t.values, strict=True))
        lines.append(
            f"# trial {t.number}: {values}\n{command_line(str(script), *base, f'pick.trial={t.number}')}"
        )
    budget = round_budget(front[len(front) // 2].values[1], view.directions[1])
    example = pick_trial(view, budget=budget).trial.number
    bound = "at most" if view.directions[1] == "minimize" else "at least"
    return [
        Para(
            "Export a trial of the Pareto front as a preset (optimized/<study>_trial<N>), with the command that "
            "retrains it, by its number:"
        ),
        Code("\n".join(lines)),
        Para(
            f"or as the best {view.metric} among the trials whose {view.metrics[1]} is {bound} a budget "
            f"(here: trial {example}):"
        ),
        Code(command_line(str(script), *base, f"pick.budget={budget}")),
    ]
