"""Rescues start as soon as a worker would otherwise idle: once every trial of the study has started."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeplab.search.records import ATTR_FAIL_REASON, ATTR_RESCUE_OF, ATTR_RETRY_OF
from sweeplab.search.rescue import enqueue_rescues, rescued_before
from tests.conftest import sweep

SPACE = {"x": FloatDistribution(0.0, 1.0)}


def _plan(n_trials: int, top_k: int) -> SimpleNamespace:
    """The parts of a SweepPlan that rescues read."""
    return SimpleNamespace(
        n_trials=n_trials, directions=["maximize"], conf=SimpleNamespace(rescue=SimpleNamespace(top_k=top_k))
    )


def _study(pruned: dict[float, float], complete: float, running: float | None) -> optuna.Study:
    """Trials pruned at step 1 (x → value), one complete and, unless None, one running (its step-1 value)."""
    study = optuna.create_study(direction="maximize")
    for x, value in pruned.items():
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED, params={"x": x}, distributions=SPACE, intermediate_values={1: value}
            )
        )
    study.add_trial(
        create_trial(
            value=complete,
            params={"x": 0.9},
            distributions=SPACE,
            intermediate_values={1: complete, 2: complete},
        )
    )
    if running is not None:
        trial = study.ask(SPACE)
        trial.report(running, 1)
    return study


def _queued(study: optuna.Study) -> list[int]:
    return [t.user_attrs[ATTR_RESCUE_OF] for t in study.get_trials(states=(TrialState.WAITING,))]


def test_a_worker_left_idle_by_the_last_running_trial_gets_the_best_ranked_rescue_at_once():
    study = _study({0.1: 0.3, 0.2: 0.6}, complete=0.9, running=0.8)
    assert enqueue_rescues(study, _plan(n_trials=4, top_k=2), exhausted=False, room=1) == 1
    assert _queued(study) == [1]  # 0.6 beat more of the values at step 1 than 0.3


def test_no_rescue_is_queued_while_trials_of_the_study_are_left_to_start():
    study = _study({0.1: 0.3, 0.2: 0.6}, complete=0.9, running=0.8)
    assert enqueue_rescues(study, _plan(n_trials=5, top_k=2), exhausted=False, room=2) == 0
    assert enqueue_rescues(study, _plan(n_trials=5, top_k=2), exhausted=True, room=1) == 1


def test_once_every_trial_has_ended_all_the_remaining_rescues_are_queued_whatever_the_room():
    study = _study({0.1: 0.3, 0.2: 0.6, 0.3: 0.5}, complete=0.9, running=None)
    assert enqueue_rescues(study, _plan(n_trials=4, top_k=3), exhausted=False, room=1) == 3
    assert sorted(_queued(study)) == [0, 1, 2]
    assert enqueue_rescues(study, _plan(n_trials=4, top_k=3), exhausted=False, room=1) == 0


def test_rescues_queued_while_trials_run_count_towards_top_k():
    study = _study({0.1: 0.3, 0.2: 0.6, 0.3: 0.5}, complete=0.9, running=0.8)
    plan = _plan(n_trials=5, top_k=2)
    assert enqueue_rescues(study, plan, exhausted=False, room=1) == 1
    running = study.get_trials(states=(TrialState.RUNNING,))[0]
    study.tell(running.number, 0.95)
    assert enqueue_rescues(study, plan, exhausted=False, room=1) == 1
    assert sorted(_queued(study)) == [1, 2]


def test_of_two_sweeps_that_queued_the_same_rescue_the_later_trial_gives_way():
    study = _study({0.1: 0.3}, complete=0.9, running=None)
    for _ in range(2):
        study.enqueue_trial({"x": 0.1}, user_attrs={ATTR_RESCUE_OF: 0}, skip_if_exists=False)
    first, second = study.ask(SPACE), study.ask(SPACE)
    assert rescued_before(study, first) is None
    assert rescued_before(study, second) == first.number
    study.tell(first, state=TrialState.FAIL)  # lost: its re-run is a rescue of trial 0 too, and runs
    study.enqueue_trial({"x": 0.1}, user_attrs={ATTR_RESCUE_OF: 0, ATTR_RETRY_OF: first.number})
    assert rescued_before(study, study.ask(SPACE)) is None


@pytest.mark.slow
def test_a_rescue_runs_beside_the_last_trial_instead_of_after_it(tmp_path):
    """Grid of 3: the two bad lrs are pruned at their first epoch; lr=0.1 trains 6 epochs of 1 s on one
    worker while the rescue of a pruned trial starts on the other."""
    _, trials = sweep(
        [
            "-m",
            "hydra.sweeper.report=false",
            "hydra/sweeper/sampler=grid",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.upper=1.5",
            "~hydra.sweeper.pruner.n_startup_trials",  # the app's median pruner has it, the threshold has not
            "hydra.sweeper.pruner.n_warmup_steps=0",
            "hydra.sweeper.study_name=curve",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.rescue.top_k=1",
            "lr=choice(0.9,0.8,0.1)",
            "epoch_s=1.0",
        ],
        tmp_path,
        study="curve",
        script="tests/apps/curve.py",
    )
    own = [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs and ATTR_FAIL_REASON not in t.user_attrs]
    (rescue,) = [t for t in trials if ATTR_RESCUE_OF in t.user_attrs]
    (last,) = [t for t in own if t.state == TrialState.COMPLETE]
    assert last.params["lr"] == 0.1 and sorted(t.state for t in own).count(TrialState.PRUNED) == 2
    assert rescue.state == TrialState.COMPLETE and rescue.params["lr"] == 0.8  # ranked best of the pruned
    assert rescue.datetime_start < last.datetime_complete
