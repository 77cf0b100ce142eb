"""A study's checkpoints on disk: each trial's job records the files its fits saved (`ATTR_CHECKPOINTS`, by
`sweeplab.PruningCallback`), and the sweep keeps those of the `checkpoints.keep` best complete trials only,
removing a trial's files when it falls out of them; pruned and failed trials keep none (a pruned trial whose
paused checkpoint is still kept keeps its files too: a rescue resumes from both). A sweep removes only files
of trials asked on its own machine (another machine's disk is that machine's sweep's to clean). A finished
trial's attributes cannot change, so what was removed, and why, is kept on the study
(`STUDY_CHECKPOINTS_REMOVED`)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.pauses import paused
from sweeplab.search.pauses import removed_reasons as paused_removed
from sweeplab.search.records import (
    ATTR_CHECKPOINTS,
    ATTR_HOST,
    STUDY_CHECKPOINTS_REMOVED,
    front,
    ranked,
)

log = logging.getLogger("sweeplab.sweep")

KEY = "hydra.sweeper.checkpoints.keep"


def removed_reasons(study: optuna.Study) -> dict[str, str]:
    """Trial number (as text) → why its checkpoints were removed."""
    return dict(study.user_attrs.get(STUDY_CHECKPOINTS_REMOVED) or {})


def with_checkpoints(study: optuna.Study, ranked: list[FrozenTrial]) -> int:
    """How many of the best-ranked trials, from the first on, still have their checkpoints: the largest
    top_k a prediction from the study can use."""
    removed = removed_reasons(study)
    return next((i for i, t in enumerate(ranked) if str(t.number) in removed), len(ranked))


def kept(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> dict[int, list[str]]:
    """Trial number → the checkpoint files it still keeps, best-ranked trial first."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    removed = removed_reasons(study)
    holding = {
        t.number: [str(p) for p in t.user_attrs[ATTR_CHECKPOINTS]]
        for t in trials
        if t.user_attrs.get(ATTR_CHECKPOINTS) and str(t.number) not in removed
    }
    rank = {t.number: i for i, t in enumerate(best_first(study, trials))}
    return {n: holding[n] for n in sorted(holding, key=lambda n: (rank.get(n, len(rank)), n))}


def best_first(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials in the order `keep` counts them: by value, or for several objectives the Pareto front
    first (oldest first), then the others by number."""
    if len(study.directions) == 1:
        return ranked(trials, study.direction)
    on_front = front(study)
    numbers = {t.number for t in on_front}
    rest = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.number not in numbers),
        key=lambda t: t.number,
    )
    return on_front + rest


def keep_best(study: optuna.Study, keep: int | None) -> None:
    """Remove the checkpoints of this machine's finished trials outside the `keep` best (None: keep all)."""
    if keep is None:
        return
    trials = study.get_trials(deepcopy=False)
    removed = removed_reasons(study)
    here = socket.gethostname()
    holding = [
        t
        for t in trials
        if t.state.is_finished()
        and t.user_attrs.get(ATTR_CHECKPOINTS)
        and str(t.number) not in removed
        and t.user_attrs.get(ATTR_HOST, here) == here
    ]
    if not holding:
        return
    best = {t.number for t in best_first(study, trials)[:keep]}
    pausing = {t.number for t in paused(trials, paused_removed(study))}
    dropped = []
    for trial in holding:
        if trial.number in best or trial.number in pausing:
            continue
        for path in trial.user_attrs[ATTR_CHECKPOINTS]:
            Path(str(path)).unlink(missing_ok=True)
        removed[str(trial.number)] = _why(trial, keep)
        dropped.append(trial.number)
    if dropped:
        study.set_user_attr(STUDY_CHECKPOINTS_REMOVED, removed)
        log.debug("removed the checkpoints of trials %s (%s=%d)", dropped, KEY, keep)


def _why(trial: FrozenTrial, keep: int) -> str:
    if trial.state == TrialState.COMPLETE:
        return f"outside the {keep} best ({KEY}={keep})"
    return f"{trial.state.name.lower()} trials keep none"
