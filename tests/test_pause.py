"""Pause, don't kill: a pruned trial keeps the checkpoint of its last epoch, its rescue resumes it there."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeplab.search import pauses
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_MAX_EPOCHS,
    ATTR_PAUSED,
    ATTR_RESCUE_OF,
    ATTR_RESUMED,
    ATTR_TEST,
    STUDY_PAUSED_REMOVED,
)
from sweeplab.search.schema import PauseConf, RescueConf, SweeplabSweeperConf
from sweeplab.search.trial import StudyTrial, address_in
from tests.conftest import QUICK, sweep, sweep_dirs


def test_the_last_step_is_reported_but_never_pruned():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=10.0))  # prunes every value
    first = StudyTrial(study, study.ask())
    assert first.report(0.5, 1) is True
    last = StudyTrial(study, study.ask())
    assert last.report(0.5, 3, last=True) is False and last.trial.storage.get_trial(
        last.trial._trial_id
    ).intermediate_values == {3: 0.5}


def _paused_study(tmp_path: Path, values: dict[int, float]) -> optuna.Study:
    """Pruned trials at step 2 with these values, each with its paused checkpoint on disk."""
    study = optuna.create_study(direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    for number, value in values.items():
        checkpoint = tmp_path / f"{number}.ckpt"
        checkpoint.write_bytes(b"state")
        paused = {"checkpoint": str(checkpoint), "step": 2, "epoch": 2, "fold": None}
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"x": value},
                distributions=dist,
                intermediate_values={1: value, 2: value},
                user_attrs={ATTR_PAUSED: paused},
            )
        )
    return study


def test_the_paused_checkpoints_over_the_budget_are_removed_keeping_the_best_ranked(tmp_path):
    study = _paused_study(tmp_path, {0: 0.3, 1: 0.9, 2: 0.6, 3: 0.1})
    pauses.keep_best(study, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.ckpt", "2.ckpt"]  # the two best at step 2
    assert study.user_attrs[STUDY_PAUSED_REMOVED] == {
        "0": "over the budget of pause.keep=2",
        "3": "over the budget of pause.keep=2",
    }
    pauses.remove_all(study, "the study ended")
    assert list(tmp_path.iterdir()) == []
    assert study.user_attrs[STUDY_PAUSED_REMOVED]["1"] == "the study ended"


def test_a_rescue_whose_checkpoint_was_removed_trains_from_the_first_epoch_and_says_why(tmp_path):
    study = _paused_study(tmp_path, {0: 0.3, 1: 0.9})
    pauses.keep_best(study, keep=1)
    study.enqueue_trial({"x": 0.3}, user_attrs={ATTR_RESCUE_OF: 0})
    rescue = StudyTrial(study, study.ask())
    point = rescue.resume_point()
    assert point.checkpoint is None and point.reason == (
        "trial 0's checkpoint was removed (over the budget of pause.keep=1)"
    )
    study.enqueue_trial({"x": 0.9}, user_attrs={ATTR_RESCUE_OF: 1})
    kept = StudyTrial(study, study.ask()).resume_point()
    assert kept.checkpoint == tmp_path / "1.ckpt" and kept.values == {1: 0.9, 2: 0.9} and kept.step == 2


@pytest.mark.parametrize(
    ("keep", "top_k", "kept"), [(None, 1, 3), (None, 2, 4), (None, 0, 0), (1, 1, 1), (0, 2, 0)]
)
def test_by_default_two_more_paused_checkpoints_are_kept_than_rescue_resumes(keep, top_k, kept):
    """The sweep (which removes) and the trial's job (which saves only when some are kept) agree."""
    conf = SweeplabSweeperConf(pause=PauseConf(keep=keep), rescue=RescueConf(top_k=top_k))
    assert conf.paused_kept == kept
    sweeper = OmegaConf.create({"pause": {"keep": keep}, "rescue": {"top_k": top_k}})
    assert address_in(sweeper, "s", 0, "sqlite://").pause_keep == kept


# ---- real studies through the CLI ----------------------------------------------------------------

ONE_CONFIG = [  # one trial; a seeded sampler gives trial 0 the same lr in every study
    "-m",
    "hparams_search=optuna_fast",
    "~search",
    "hydra/sweeper/sampler=random",
    "models.optimizer.lr=tag(log, interval(1e-3, 1e-2))",
    "hydra.sweeper.n_trials=1",
    "hydra.sweeper.quick_validation.enabled=false",
    "hydra.sweeper.report=false",
    "trainer.max_epochs=5",
    *QUICK,
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("folds", "warmup"),
    [(None, 2), (2, 7)],  # one split: paused after epoch 2 or 3; 2 folds of 5: paused in the second fold
    ids=["one split", "2 folds"],
)
def test_a_paused_trial_resumed_by_its_rescue_reaches_the_values_of_an_unpaused_run(tmp_path, folds, warmup):
    """Exact on the CPU: the same seed, deterministic kernels; values compared to 1e-6. The pruner
    (a threshold no value reaches) prunes the only trial as soon as its warm-up ends; rescue resumes it."""
    extra = [f"data.folds={folds}"] if folds else []
    (reference,) = sweep(
        [*ONE_CONFIG, *extra, "exp_name=straight", "hydra/sweeper/pruner=none"],
        tmp_path,
        study="straight_fast",
    ).trials
    pruned, rescue = sweep(
        [
            *ONE_CONFIG,
            *extra,
            "exp_name=paused",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=2.0",
            f"hydra.sweeper.pruner.n_warmup_steps={warmup}",
            "hydra.sweeper.rescue.top_k=1",
        ],
        tmp_path,
        study="paused_fast",
    ).trials
    assert pruned.params == reference.params == rescue.params
    assert pruned.state == TrialState.PRUNED and rescue.state == TrialState.COMPLETE
    pause = pruned.user_attrs[ATTR_PAUSED]
    step = pause["step"]
    assert pause["fold"] == (1 if folds else None) and step == max(pruned.intermediate_values)
    assert rescue.user_attrs[ATTR_RESUMED] == {"trial": 0, "step": step, "checkpoint": pause["checkpoint"]}
    budget = 5 * (folds or 1)
    assert rescue.user_attrs[ATTR_MAX_EPOCHS] == budget
    assert rescue.user_attrs[ATTR_EPOCHS] == budget - step  # only the epochs after the pause ran
    # one curve: the paused trial's values, then the resumed ones, equal to the unpaused run's at every step
    assert sorted(rescue.intermediate_values) == list(range(1, budget + 1))
    for s, value in reference.intermediate_values.items():
        assert rescue.intermediate_values[s] == pytest.approx(value, abs=1e-6), s
    assert rescue.value == pytest.approx(reference.value, abs=1e-6)
    for key, value in reference.user_attrs[ATTR_TEST].items():  # the best checkpoint spans the whole curve
        assert rescue.user_attrs[ATTR_TEST][key] == pytest.approx(value, abs=1e-6), key
    assert not Path(pause["checkpoint"]).exists()  # the study ended: no paused checkpoint is left


@pytest.mark.slow
def test_a_study_with_two_rescues_resumes_them_for_their_remaining_epochs(tmp_path):
    swept = sweep(
        [
            "-m",
            "hparams_search=optuna_fast",
            "exp_name=pause",
            "hydra/sweeper/sampler=random",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.pruner.n_warmup_steps=1",
            "hydra.sweeper.n_trials=8",
            "hydra.sweeper.quick_validation.epochs=4",
            "hydra.sweeper.rescue.top_k=2",
            "models.optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            *QUICK,
        ],
        tmp_path,
        study="pause_fast",
    )
    trials = {t.number: t for t in swept.trials}
    rescues = [t for t in trials.values() if ATTR_RESCUE_OF in t.user_attrs]
    assert len(rescues) == 2
    sweep_dir = sweep_dirs(tmp_path, "pause")[-1]
    report = (sweep_dir / "report.md").read_text()
    rows = {
        int(r.split(" | ")[0].lstrip("| ")): r
        for r in report.split("## Rescued\n", 1)[1].split("\n## ")[0].splitlines()
        if r.startswith("| ") and r[2].isdigit()
    }
    for rescue in rescues:
        original = trials[rescue.user_attrs[ATTR_RESCUE_OF]]
        step = original.user_attrs[ATTR_PAUSED]["step"]
        assert rescue.user_attrs[ATTR_RESUMED]["step"] == step
        assert rescue.user_attrs[ATTR_EPOCHS] == 4 - step  # the budget minus the epochs before the pause
        curve = rescue.intermediate_values
        assert {s: curve[s] for s in original.intermediate_values} == original.intermediate_values
        assert rescue.value == max(curve.values())  # its final value: the best of its whole curve
        row = rows[rescue.number]
        assert (
            f"from its checkpoint at step {step}" in row
            and f"| {4 - step} | COMPLETE | {rescue.value:.4g} |" in row
        )
        metrics = json.loads((Path(rescue.user_attrs["output_dir"]) / "metrics.json").read_text())
        assert metrics["epochs_run"] == 4 - step and metrics["resumed_from"]["trial"] == original.number
    assert not list(tmp_path.rglob("paused.ckpt"))  # removed when the study ended


@pytest.mark.slow
def test_a_grid_that_runs_out_before_n_trials_still_rescues_its_pruned_trials(tmp_path):
    result, trials = sweep(
        [
            *[
                a
                for a in ONE_CONFIG
                if not a.startswith(
                    ("hydra/sweeper/sampler", "models.optimizer.lr", "hydra.sweeper.n_trials")
                )
            ],
            "hydra/sweeper/sampler=grid",
            "models.optimizer.lr=choice(0.002, 0.004)",
            "hydra.sweeper.n_trials=5",
            "exp_name=grid",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=2.0",
            "hydra.sweeper.pruner.n_warmup_steps=2",
            "hydra.sweeper.rescue.top_k=1",
        ],
        tmp_path,
        study="grid_fast",
    )
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[2].user_attrs[ATTR_RESCUE_OF] in (0, 1) and trials[2].user_attrs[ATTR_EPOCHS] == 3
    assert "the grid sampler has started every point of its grid" in result.stdout + result.stderr
