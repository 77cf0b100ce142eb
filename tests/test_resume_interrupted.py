"""A trial stopped by SIGTERM (a scheduler's preemption, `scancel`, a time limit) resumes where it was: the
sweep that runs its params again starts from its last finished epoch. Ctrl-C's trials start over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_RESUMABLE,
    ATTR_RESUMED,
    ATTR_RETRY_OF,
    INTERRUPTED,
)
from tests.conftest import QUICK, ROOT

EPOCHS = 4
ARGS = [
    "-m",
    "hparams_search=optuna_fast",
    "exp_name=preempt",
    "hydra.sweeper.n_trials=2",
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.quick_validation.enabled=false",
    "hydra.sweeper.report=false",
    f"trainer.max_epochs={EPOCHS}",
    *[q for q in QUICK if not q.startswith("+trainer.limit_train_batches")],
    "+trainer.limit_train_batches=20",  # an epoch of a second or two: time to stop a trial between two
]
STUDY = "preempt_fast"


def _run(cwd: Path, n_jobs: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "runners" / "train.py"), *ARGS, f"hydra.sweeper.n_jobs={n_jobs}"],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""},
        stdout=(cwd / "sweep.log").open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{cwd / 'studies' / STUDY}.db").trials


def _stop_after_an_epoch(cwd: Path, sweep: subprocess.Popen, signum: int) -> int:
    """Signal the sweep's process group (as a scheduler does) once trial 0 has saved a finished epoch; the
    epoch it saved."""
    deadline = time.monotonic() + 120
    while True:
        assert sweep.poll() is None and time.monotonic() < deadline, (cwd / "sweep.log").read_text()[-3000:]
        try:
            saved = _trials(cwd)[0].user_attrs.get(ATTR_RESUMABLE)
        except (KeyError, IndexError, sqlalchemy.exc.SQLAlchemyError):  # no study, trial or schema yet
            saved = None
        if saved:
            break
        time.sleep(0.1)
    os.killpg(sweep.pid, signum)
    assert sweep.wait(timeout=60) == 128 + signum, (cwd / "sweep.log").read_text()[-3000:]
    return int(_trials(cwd)[0].user_attrs[ATTR_RESUMABLE]["epoch"]) if signum == signal.SIGTERM else 0


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])  # in the sweep's process, and in a worker process
def test_a_trial_stopped_by_sigterm_resumes_from_its_last_finished_epoch_when_its_params_run_again(
    tmp_path, n_jobs
):
    saved = _stop_after_an_epoch(tmp_path, _run(tmp_path, n_jobs), signal.SIGTERM)
    stopped = _trials(tmp_path)[0]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    assert 1 <= saved < EPOCHS
    checkpoint = Path(stopped.user_attrs[ATTR_RESUMABLE]["checkpoint"])
    assert checkpoint.is_file()

    again = _run(tmp_path, n_jobs)
    assert again.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    (rerun,) = [t for t in _trials(tmp_path) if t.user_attrs.get(ATTR_RETRY_OF) == stopped.number]
    assert rerun.state == TrialState.COMPLETE
    assert rerun.params == stopped.params
    assert rerun.user_attrs[ATTR_RESUMED]["trial"] == stopped.number
    assert rerun.user_attrs[ATTR_RESUMED]["step"] == saved
    assert rerun.user_attrs[ATTR_EPOCHS] == EPOCHS - saved  # the epochs before the stop are not trained again
    assert sorted(rerun.intermediate_values) == list(range(1, EPOCHS + 1))  # one curve, continued
    for step in range(1, saved + 1):
        assert rerun.intermediate_values[step] == stopped.intermediate_values[step]
    assert not checkpoint.exists()  # the study ended: the saved state is removed
    assert not list(tmp_path.rglob("resumable.ckpt"))


@pytest.mark.slow
def test_a_trial_stopped_by_ctrl_c_starts_over_when_its_params_run_again(tmp_path):
    _stop_after_an_epoch(tmp_path, _run(tmp_path, 1), signal.SIGINT)
    stopped = _trials(tmp_path)[0]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs.get(ATTR_RESUMABLE) is None
    again = _run(tmp_path, 1)
    assert again.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    (rerun,) = [t for t in _trials(tmp_path) if t.user_attrs.get(ATTR_RETRY_OF) == stopped.number]
    assert ATTR_RESUMED not in rerun.user_attrs
    assert rerun.user_attrs[ATTR_EPOCHS] == EPOCHS
