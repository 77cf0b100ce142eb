"""Paused trials: a pruned trial's job leaves the checkpoint of the epoch it was pruned at (`paused` on the
trial), and a rescue resumes it there. The sweep keeps at most `pause.keep` of these checkpoints, the
pruned trials rescue would pick first, and removes the rest as they fall out; when the study ends, none is
needed any more and all are removed. A finished trial's attributes cannot change, so what was removed, and
why, is kept on the study (`sweeplab:paused_removed`)."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from sweeplab.search.pruning import rescue_candidates
from sweeplab.search.records import ATTR_PAUSED, ATTR_RESCUE_OF, ATTR_RESUMABLE, STUDY_PAUSED_REMOVED

log = logging.getLogger("sweeplab.sweep")


def paused(trials: list[FrozenTrial], removed: dict[str, str]) -> list[FrozenTrial]:
    """Finished trials whose paused checkpoint is still kept (only pruned ones can be rescued: the others
    are never among the best-ranked, so the budget removes theirs)."""
    return [
        t
        for t in trials
        if t.state.is_finished() and ATTR_PAUSED in t.user_attrs and str(t.number) not in removed
    ]


def removed_reasons(study: optuna.Study) -> dict[str, str]:
    """Trial number (as text) → why its paused checkpoint was removed."""
    return dict(study.user_attrs.get(STUDY_PAUSED_REMOVED) or {})


def keep_best(study: optuna.Study, keep: int) -> None:
    """Remove the paused checkpoints beyond the `keep` best-ranked ones, and those a rescue has resumed."""
    trials = study.get_trials(deepcopy=False)
    removed = removed_reasons(study)
    kept = paused(trials, removed)
    if not kept:
        return
    rescues = [t for t in trials if ATTR_RESCUE_OF in t.user_attrs]
    rescued = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in rescues if t.state.is_finished()}
    pending = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in rescues if not t.state.is_finished()}
    best = {t.number for t in rescue_candidates(trials, study.direction, keep, exclude=rescued)}
    drop = {t.number: t for t in kept if t.number not in best | pending}
    for number, trial in drop.items():
        why = "its rescue resumed it" if number in rescued else f"over the budget of pause.keep={keep}"
        _remove(trial, why, removed)
    if drop:
        study.set_user_attr(STUDY_PAUSED_REMOVED, removed)


def remove_all(study: optuna.Study, why: str) -> None:
    """The study has ended: no paused trial will be resumed."""
    removed = removed_reasons(study)
    kept = paused(study.get_trials(deepcopy=False), removed)
    for trial in kept:
        _remove(trial, why, removed)
    if kept:
        study.set_user_attr(STUDY_PAUSED_REMOVED, removed)
        log.info("removed the paused checkpoints of trials %s: %s", [t.number for t in kept], why)


def remove_resumables(study: optuna.Study) -> None:
    """The study has ended: the states interrupted trials saved (`resume_interrupted`) have been resumed by
    their re-runs, or never will be."""
    for trial in study.get_trials(deepcopy=False):
        saved = trial.user_attrs.get(ATTR_RESUMABLE)
        path = Path(str(saved.get("checkpoint") or "")) if trial.state.is_finished() and saved else None
        if path is not None and path.name:
            path.unlink(missing_ok=True)  # another machine's disk: left there


def _remove(trial: FrozenTrial, why: str, removed: dict[str, str]) -> None:
    path = Path(str(trial.user_attrs[ATTR_PAUSED].get("checkpoint", "")))
    if path.name:
        path.unlink(missing_ok=True)  # another machine's disk: nothing to remove here
    removed[str(trial.number)] = why
