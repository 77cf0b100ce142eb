"""Several sweeps on one SQLite file: a trial's state changes once, whoever races for it.

Each check starts processes at one instant on the same trials, many times over: without the write lock
taken at BEGIN (`storage._lock_before_reading`) about one in five of 90 trials is taken twice on a 2-core machine.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from sweeplab.search.optuna_access import trial_id
from sweeplab.search.records import ATTR_RETRY_OF, close_interrupted
from sweeplab.search.storage import open_storage

TRIALS = 90
PROCESSES = 3
SPACE = {"x": FloatDistribution(0.0, 1.0)}


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="race", storage=open_storage(url))


def _close_all(url: str, ids: list[int], start: float, won: multiprocessing.Queue) -> None:
    study = _study(url)
    time.sleep(max(0.0, start - time.time()))
    won.put([tid for tid in ids if close_interrupted(study, tid, how="test")])


def _pop_all(url: str, n: int, start: float, won: multiprocessing.Queue) -> None:
    study = _study(url)
    time.sleep(max(0.0, start - time.time()))
    won.put([trial_id(study.ask(SPACE)) for _ in range(n)])


def _race(target, args: tuple) -> list[int]:
    """Run `target(*args, start, queue)` in PROCESSES fresh processes at once; every id each returned."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start = time.time() + 1.0  # after each process has opened the storage
    processes = [context.Process(target=target, args=(*args, start, queue)) for _ in range(PROCESSES)]
    for p in processes:
        p.start()
    taken = [i for _ in processes for i in queue.get(timeout=120)]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return taken


def _new_study(tmp_path: Path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    return url, optuna.create_study(study_name="race", storage=open_storage(url))


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_a_dead_trial_found_by_several_sweeps_at_once_is_closed_and_queued_again_once(tmp_path):
    url, study = _new_study(tmp_path)
    ids = [trial_id(study.ask(SPACE)) for _ in range(TRIALS)]

    closed = _race(_close_all, (url, ids))

    twice = [tid for tid, n in Counter(closed).items() if n > 1]
    assert not twice, f"{len(twice)} of {TRIALS} trials closed by more than one sweep"
    assert sorted(closed) == sorted(ids)
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert sorted(t.user_attrs[ATTR_RETRY_OF] for t in queued) == list(range(TRIALS))


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_a_queued_trial_is_started_by_one_sweep_when_several_ask_at_once(tmp_path):
    url, study = _new_study(tmp_path)
    for i in range(TRIALS):
        study.enqueue_trial({"x": i / TRIALS})

    popped = _race(_pop_all, (url, TRIALS // PROCESSES))

    twice = [tid for tid, n in Counter(popped).items() if n > 1]
    assert not twice, f"{len(twice)} of {TRIALS} queued trials started by more than one sweep"
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
