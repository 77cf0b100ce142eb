"""Which trial `runners/report.py` exports besides the best one: by number (`pick.trial`) or by a budget (`pick.budget`).

A multi-objective study has no best trial, only a Pareto front; the user chooses the trade-off. Every
mistake is one `config_error` line, raised before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from sweeplab.errors import config_error
from sweeplab.search.records import sign
from sweeplab.search.view import StudyView


@dataclass(frozen=True)
class Pick:
    """The trial to export and why: `reason` names the setting (report, log and the preset's header repeat it)."""

    trial: FrozenTrial
    reason: str
    dominated_by: int | None = None  # a complete trial that dominates it (multi-objective, off the front)

    @property
    def preset_suffix(self) -> str:
        """Picked presets are `optimized/<study>_trial<N>`: picking several never overwrites one."""
        return f"_trial{self.trial.number}"


def pick_trial(view: StudyView, trial: Any = None, budget: Any = None) -> Pick | None:
    """The trial named by `pick.trial` or `pick.budget` (at most one of them), or None when neither is set."""
    if trial is not None and budget is not None:
        raise config_error(
            "pick", {"trial": trial, "budget": budget}, "set pick.trial or pick.budget, not both"
        )
    if trial is not None:
        return _by_number(view, trial)
    if budget is not None:
        return _by_budget(view, budget)
    return None


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """True when values `a` are at least as good as `b` in every objective and better in one."""
    signs = [sign(d) for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def round_budget(value: float, direction: str, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits, outward (up for a minimized objective): a budget that
    a trial with this value still meets, short enough to type."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(value))))
    outward = math.ceil if direction == "minimize" else math.floor
    rounded = float(f"{outward(value * scale) / scale:.{digits}g}")
    meets = rounded >= value if direction == "minimize" else rounded <= value
    return rounded if meets else value  # float error rounded it past the value


def _by_number(view: StudyView, number: Any) -> Pick:
    complete = {t.number: t for t in view.complete}
    if not isinstance(number, int) or isinstance(number, bool):
        raise config_error("pick.trial", number, "must be a trial number (an integer)")
    if number not in complete:
        states = {t.number: t.state.name for t in view.trials}
        what = f"trial {number} is {states[number]}" if number in states else f"no trial {number}"
        front = "" if view.single else f"; Pareto front: {_numbers([t.number for t in view.front])}"
        raise config_error(
            "pick.trial",
            number,
            f"{what} in study {view.name}; complete trials: {_numbers(sorted(complete))}{front}",
        )
    trial = complete[number]
    beaten = next(
        (t.number for t in view.complete if dominates(t.values, trial.values, view.directions)), None
    )
    return Pick(trial, f"picked by number, pick.trial={number}", beaten if not view.single else None)


def _by_budget(view: StudyView, budget: Any) -> Pick:
    if isinstance(budget, bool) or not isinstance(budget, int | float) or math.isnan(budget):
        raise config_error("pick.budget", budget, "must be a number (a bound on the second objective)")
    if view.single:
        raise config_error(
            "pick.budget",
            budget,
            f"needs a study with several objectives; {view.name} optimizes only {view.metric} "
            "(pick.trial=<n> exports any trial)",
        )
    first, second = view.metrics[0], view.metrics[1]
    signs = [sign(d) for d in view.directions]
    bound = "<=" if signs[1] < 0 else ">="
    within = [t for t in view.complete if signs[1] * t.values[1] >= signs[1] * budget]
    if not within:
        closest = max(view.complete, key=lambda t: signs[1] * t.values[1], default=None)
        achievable = (
            f"the {'smallest' if signs[1] < 0 else 'largest'} achieved is {closest.values[1]:.6g} "
            f"(trial {closest.number})"
            if closest
            else "the study has no complete trial"
        )
        raise config_error(
            "pick.budget", budget, f"no complete trial has {second} {bound} {budget}; {achievable}"
        )
    # best first objective; ties by the better second objective, then the others (so the pick is on the front)
    best = max(within, key=lambda t: tuple(s * v for s, v in zip(signs, t.values, strict=True)))
    return Pick(
        best,
        f"picked by budget, pick.budget={budget}: the best {first} among the trials with {second} {bound} {budget}",
    )


def _numbers(numbers: list[int], most: int = 20) -> str:
    """Trial numbers for an error line: the first `most`, then how many there are."""
    text = ", ".join(map(str, numbers[:most])) or "none"
    return f"{text}, ... ({len(numbers)} in all)" if len(numbers) > most else text
