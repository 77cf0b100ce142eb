"""What the pruner cost a study, and the settings that would have kept what it stopped.

A pruner ranks a trial against the other trials at the same epoch, never against the winner's own curve,
so it can stop a configuration that was doing better than the eventual winner was at that point (the
"Hyperband paradox"). And an aggressive pruner can stop every trial a continued sweep adds, so that
"continue with more trials" buys nothing. Both are told from the stored trials alone: intermediate
values, and which sweep (host and process) asked each trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from sweeplab.reporting.document import Block, Bullets, Code, Heading, Para, Table, cell
from sweeplab.reporting.next_steps import continue_command, study_script
from sweeplab.search.records import (
    ATTR_HOST,
    ATTR_PID,
    ATTR_RESCUE_OF,
    STUDY_PRUNER,
    STUDY_SETTINGS,
    counts,
)
from sweeplab.search.view import StudyView, last_report

MIN_ADDED = 5  # a continued sweep whose trials were all pruned is told from this many trials
MIN_STREAK = 10  # without sweeps told apart: the study's last trials all pruned, from this many
RESCUE_MAX = 3  # hydra.sweeper.rescue.top_k suggested: at most this many pruned trials rerun in full
HEADING = "What the pruner cost"


@dataclass
class AheadOfWinner:
    """A pruned trial whose value at its last reported epoch beat the winner's value at that epoch."""

    trial: FrozenTrial
    step: int
    value: float
    winner: float  # the best complete trial's value at `step`


@dataclass
class AllPruned:
    """The trials at the end of the study, every one pruned: a continued sweep's, or simply the last ones."""

    numbers: list[int]
    continued: bool  # True: the trials the latest sweep added to a study earlier sweeps had run


@dataclass
class PrunerReview:
    ahead: list[AheadOfWinner]
    all_pruned: AllPruned | None

    @property
    def found(self) -> bool:
        return bool(self.ahead or self.all_pruned)


def review_pruning(view: StudyView) -> PrunerReview:
    """Both findings; none for a study of several objectives, which Optuna's pruners do not prune."""
    if not view.single:
        return PrunerReview([], None)
    return PrunerReview(ahead_of_winner(view), all_pruned(view))


def ahead_of_winner(view: StudyView) -> list[AheadOfWinner]:
    """Pruned trials ahead of the best complete trial at their last reported epoch (in the study's
    direction), best first; none where the best trial reported nothing at that epoch."""
    best = view.best
    if best is None:
        return []
    found = []
    for trial in view.pruned:
        step, value = last_report(trial)
        winner = best.intermediate_values.get(step) if step is not None else None
        if value is None or winner is None or math.isnan(value) or math.isnan(winner):
            continue
        if view.sign * (value - winner) > 0:
            found.append(AheadOfWinner(trial, step, value, winner))
    return sorted(found, key=lambda a: (-view.sign * a.value, a.trial.number))


def all_pruned(view: StudyView) -> AllPruned | None:
    """The latest sweep's trials where it continued the study and every one of them was pruned (at least
    MIN_ADDED); else the study's last MIN_STREAK or more trials where all were pruned. Rescues (unpruned
    reruns) are left out: they say nothing of what the pruner let finish."""
    tried = [t for t in view.trials if counts(t) and ATTR_RESCUE_OF not in t.user_attrs]
    added = _latest_continuation(tried)
    if len(added) >= MIN_ADDED and all(t.state == TrialState.PRUNED for t in added):
        return AllPruned([t.number for t in added], True)
    streak: list[FrozenTrial] = []
    for trial in reversed(tried):
        if trial.state != TrialState.PRUNED:
            break
        streak.insert(0, trial)
    if MIN_STREAK <= len(streak) < len(tried):
        return AllPruned([t.number for t in streak], False)
    return None


def _latest_continuation(tried: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials of the sweep (host and process) that asked the last trial, where that sweep started
    after every other sweep's last trial (it continued the study, not ran beside it); else none."""
    owned = [t for t in tried if ATTR_PID in t.user_attrs]  # a trial no sweep asked belongs to none
    sweeps: dict[tuple[object, object], list[FrozenTrial]] = {}
    for trial in owned:
        sweeps.setdefault((trial.user_attrs.get(ATTR_HOST), trial.user_attrs[ATTR_PID]), []).append(trial)
    if len(sweeps) < 2:
        return []
    latest = sweeps.pop((owned[-1].user_attrs.get(ATTR_HOST), owned[-1].user_attrs[ATTR_PID]))
    before = max(t.number for trials in sweeps.values() for t in trials)
    return latest if latest[0].number > before else []


def summary_lines(view: StudyView, review: PrunerReview) -> list[str]:
    """The findings in a sentence each, for the report's summary."""
    lines = []
    if review.ahead and view.best is not None:
        a = review.ahead[0]
        more = f" ({len(review.ahead) - 1} more)" if len(review.ahead) > 1 else ""
        n = len(review.ahead)
        lines.append(
            f"The pruner stopped {n} trial{'s that were' if n != 1 else ' that was'} "
            f"ahead of the winner: trial {a.trial.number} had {cell(a.value)} at epoch {a.step}, where trial "
            f"{view.best.number} (the best) had {cell(a.winner)}{more}; see '{HEADING}'."
        )
    if review.all_pruned is not None:
        lines.append(_all_pruned_sentence(view, review.all_pruned))
    return lines


def _all_pruned_sentence(view: StudyView, found: AllPruned) -> str:
    span = f"trials {found.numbers[0]}-{found.numbers[-1]}"
    pruner = view.attr(STUDY_PRUNER) or "this pruner"
    if found.continued:
        return (
            f"All {len(found.numbers)} trials the latest sweep added to the study ({span}) were pruned: under "
            f"{pruner}, continuing with more trials bought no complete trial."
        )
    return (
        f"The study's last {len(found.numbers)} trials ({span}) were all pruned: under {pruner}, more "
        "trials are unlikely to complete."
    )


def pruner_cost(view: StudyView, review: PrunerReview) -> list[Block]:
    """The trials pruned ahead of the winner, the sweep whose trials were all pruned, and what to change."""
    if not review.found:
        return []
    blocks: list[Block] = [Heading(HEADING)]
    if review.ahead and view.best is not None:
        blocks += _ahead_table(view, view.best.number, review.ahead)
    if review.all_pruned is not None:
        blocks.append(Para(_all_pruned_sentence(view, review.all_pruned)))
    return blocks + _changes(view, review)


def _ahead_table(view: StudyView, winner: int, ahead: list[AheadOfWinner]) -> list[Block]:
    return [
        Para(
            f"The pruner stopped these trials although, at the last epoch they reported, each was doing better "
            f"than trial {winner}, the eventual best, was at that epoch: a pruner ranks a trial against the "
            "other trials at the same epoch, not against the winner's own curve, so it can stop the "
            "configuration that would have won."
        ),
        Table(
            ["trial", "pruned at epoch", view.metric, f"trial {winner} at that epoch", "ahead by"],
            [[a.trial.number, a.step, a.value, a.winner, abs(a.value - a.winner)] for a in ahead],
        ),
    ]


def _changes(view: StudyView, review: PrunerReview) -> list[Block]:
    """Each setting that keeps such trials, and the study's command continued with it."""
    guard, rescue = _guard_overrides(view, review), _rescue_override(review)
    pruner, switching = _pruner_overrides(view, review)
    warmup = pruner[-1].rsplit("=", 1)[1]
    margin = (
        ", or within the margin of the best finished trial's value (this margin covers the trials above)"
        if len(guard) > 1
        else ""
    )
    items = [
        f"{' '.join(guard)}: the guard vetoes a prune where the trial's value is the best any trial reported "
        f"at that epoch{margin}",
        f"{' '.join(pruner)}: the median pruner (gentler than a percentile or Hyperband one), pruning no "
        f"trial before epoch {warmup}, past the epochs these trials were stopped at",
        f"{rescue}: once the study has its n_trials, the pruned trials that ranked best at their epoch run "
        "again in full",
    ]
    blocks: list[Block] = [Para("What to change (settings of hydra.sweeper):"), Bullets(items)]
    script = study_script(view)
    guarded = continue_command(view, script, *guard, rescue)
    gentler = continue_command(
        view, script, *pruner, drop=lambda key: switching and key.startswith("hydra.sweeper.pruner.")
    )
    if guarded is None or gentler is None:
        lines = f"{' '.join([*guard, rescue])}\n{' '.join(pruner)}"
        return [*blocks, Para("Add either line to the study's command:"), Code(lines)]
    return [
        *blocks,
        Para("The study continued with the guard and rescue, or with the gentler pruner:"),
        Code(f"{guarded[0]}\n{gentler[0]}"),
    ]


def _guard_overrides(view: StudyView, review: PrunerReview) -> list[str]:
    """The leader rule, and a margin that covers the trials pruned ahead of the winner."""
    overrides = ["hydra.sweeper.guard.leader=true"]
    best = view.best
    if review.ahead and best is not None:
        gap = max(view.sign * (best.values[0] - a.value) for a in review.ahead)
        overrides.append(f"hydra.sweeper.guard.margin={_round_up(gap)}")
    return overrides


def _rescue_override(review: PrunerReview) -> str:
    """Rescue as many of the found trials as RESCUE_MAX allows."""
    found = len(review.ahead) or len(review.all_pruned.numbers if review.all_pruned else [])
    return f"hydra.sweeper.rescue.top_k={max(1, min(RESCUE_MAX, found))}"


def _pruner_overrides(view: StudyView, review: PrunerReview) -> tuple[list[str], bool]:
    """The median pruner warmed up past the epochs the found trials were stopped at, and whether that
    switches pruners (then the study's own settings of the other pruner are left out: the median may
    lack them)."""
    by_number = {t.number: t for t in view.trials}
    stopped = [a.trial for a in review.ahead] or [
        by_number[n] for n in (review.all_pruned.numbers if review.all_pruned else [])
    ]
    warmup = 1 + max((last_report(t)[0] or 0 for t in stopped), default=0)
    target = str(((view.attr(STUDY_SETTINGS) or {}).get("pruner") or {}).get("_target_", ""))
    switching = not target.endswith(".MedianPruner")
    overrides = ["hydra/sweeper/pruner=median"] if switching else []
    return [*overrides, f"hydra.sweeper.pruner.n_warmup_steps={warmup}"], switching


def _round_up(gap: float) -> str:
    """A margin over `gap` (the guard saves values strictly within it), to two significant digits
    (0.0378 -> 0.038, 0.04 -> 0.041); 0 where no gap is left."""
    if gap <= 0:
        return "0"
    exponent = math.floor(math.log10(gap)) - 1
    margin = (math.floor(gap / 10**exponent) + 1) * 10**exponent
    return str(round(margin, -exponent)) if exponent < 0 else str(int(margin))
