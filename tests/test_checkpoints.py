"""What a study keeps on disk of its trials' checkpoints (hydra.sweeper.checkpoints.keep)."""

from __future__ import annotations

import socket
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeplab.errors import SweeplabError
from sweeplab.predict.members import from_study
from sweeplab.reporting.files import best_params
from sweeplab.reporting.sections import checkpoints_kept
from sweeplab.search.checkpoints import keep_best, kept, removed_reasons
from sweeplab.search.records import ATTR_CHECKPOINTS, ATTR_HOST, ATTR_OUTPUT_DIR, ATTR_PAUSED
from sweeplab.search.schema import CheckpointsConf, SweeplabSweeperConf
from sweeplab.search.view import StudyView


def _trial(
    study: optuna.Study, tmp_path: Path, value: float | None, state=TrialState.COMPLETE, **attrs
) -> Path:
    """A finished trial whose fit saved one checkpoint file; returns the file."""
    trial = study.ask()
    run = tmp_path / f"run_{trial.number}"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"weights")
    trial.set_user_attr(ATTR_CHECKPOINTS, [str(ckpt)])
    trial.set_user_attr(ATTR_OUTPUT_DIR, str(run))
    trial.set_user_attr(ATTR_HOST, attrs.pop("host", socket.gethostname()))
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    elif state is not None:
        study.tell(trial, state=state)
    return ckpt


def test_only_the_best_complete_trials_keep_their_checkpoints_and_pruned_or_failed_keep_none(tmp_path):
    study = optuna.create_study(direction="maximize")
    files = {v: _trial(study, tmp_path, v) for v in (0.5, 0.9, 0.7, 0.6)}
    pruned = _trial(study, tmp_path, None, TrialState.PRUNED)
    failed = _trial(study, tmp_path, None, TrialState.FAIL)
    keep_best(study, 2)
    assert [v for v, f in files.items() if f.is_file()] == [0.9, 0.7]
    assert not pruned.exists() and not failed.exists()
    assert list(kept(study)) == [1, 2]  # best first
    reasons = removed_reasons(study)
    assert reasons["0"] == "outside the 2 best (hydra.sweeper.checkpoints.keep=2)"
    assert reasons["4"] == "pruned trials keep none" and reasons["5"] == "fail trials keep none"


def test_a_trial_that_falls_out_of_the_best_loses_its_checkpoint_when_a_better_one_finishes(tmp_path):
    study = optuna.create_study(direction="minimize")
    first, second = _trial(study, tmp_path, 0.3), _trial(study, tmp_path, 0.2)
    keep_best(study, 2)
    assert first.is_file() and second.is_file()
    third = _trial(study, tmp_path, 0.1)
    keep_best(study, 2)
    assert not first.exists() and second.is_file() and third.is_file()


def test_keep_null_keeps_every_checkpoint_and_running_trials_are_left_alone(tmp_path):
    study = optuna.create_study()
    files = [_trial(study, tmp_path, v) for v in (0.1, 0.2, 0.3)]
    running = _trial(study, tmp_path, None, state=None)
    keep_best(study, None)
    assert all(f.is_file() for f in files)
    keep_best(study, 0)
    assert not any(f.exists() for f in files) and running.is_file()


def test_another_machines_trials_and_a_paused_trial_keep_their_files(tmp_path):
    study = optuna.create_study()
    elsewhere = _trial(study, tmp_path, 0.9, host="another-node")
    pause = {"checkpoint": str(tmp_path / "paused.ckpt"), "step": 1, "epoch": 1, "fold": None}
    paused = _trial(study, tmp_path, None, TrialState.PRUNED, **{ATTR_PAUSED: pause})
    best = _trial(study, tmp_path, 0.1)
    keep_best(study, 1)
    assert elsewhere.is_file()  # that machine's sweep removes it
    assert paused.is_file()  # a rescue resumes from its paused state and its best checkpoint
    assert best.is_file()


def test_keep_is_a_sweeper_key_of_at_least_zero_with_a_default_of_three():
    assert SweeplabSweeperConf().checkpoints.keep == 3
    with pytest.raises(SweeplabError, match=r"hydra.sweeper.checkpoints.keep=-1: must be an integer >= 0"):
        CheckpointsConf(keep=-1)


def test_predicting_from_more_top_trials_than_kept_says_which_have_no_checkpoint_and_which_key_keeps_more(
    tmp_path,
):
    study = optuna.create_study(study_name="kept", direction="maximize")
    for v in (0.5, 0.9, 0.7):
        _trial(study, tmp_path, v)
    keep_best(study, 2)
    view = StudyView(study, "sqlite:///studies/kept.db")
    with pytest.raises(SweeplabError) as raised:
        from_study(view, 3)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("top_k=3: study 'kept': trial(s) 0 have no checkpoint (outside the 2 best")
    assert "ask top_k=2 or fewer" in message and "hydra.sweeper.checkpoints.keep=3" in message


def test_best_params_and_the_report_list_the_kept_checkpoints(tmp_path):
    study = optuna.create_study(study_name="kept", direction="maximize")
    files = [_trial(study, tmp_path, v) for v in (0.5, 0.9, 0.7)]
    keep_best(study, 2)
    view = StudyView(study, "sqlite:///studies/kept.db")
    assert best_params(view, None)["checkpoints"] == {"1": [str(files[1])], "2": [str(files[2])]}
    text = " ".join(str(b) for b in checkpoints_kept(view))
    assert "Checkpoints kept: 2 trial(s); 1 trial(s) had theirs removed" in text
    assert str(files[1]) in text and str(files[0]) not in text
