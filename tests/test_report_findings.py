"""What a report must not miss or misstate (issue 34): trials pruned ahead of the winner, a continued sweep
whose trials were all pruned (with commands that run), fixed settings as the trial had them, trend headings
that agree with their buckets, and the gain over the first trial."""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweeplab.reporting import write_study_report
from sweeplab.reporting.document import Heading, Table
from sweeplab.reporting.pruner_review import review_pruning
from sweeplab.reporting.sections import search_space, trends
from sweeplab.search.plan import make_plan
from sweeplab.search.records import ATTR_HOST, ATTR_PID, STUDY_COMMAND, STUDY_PRUNER, STUDY_SETTINGS
from tests.conftest import CONF
from tests.test_reporting import _add, _study, _view

PERCENTILE = {"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0, "n_warmup_steps": 1}
COMMAND = [
    "-m",
    "hparams_search=optuna_fast",
    "hydra.sweeper.pruner.percentile=25",
    "hydra.sweeper.n_trials=14",
]


def _seeds_study(tmp_path: Path) -> optuna.Study:
    """As in the seeds' continued optuna_fast study: a first sweep (pid 100) whose winner had 0.9588 at
    epoch 2; pruned trials with more than that at epoch 2, none in the top 3 there (complete trials led
    the epoch); then a second sweep (pid 200) that added 6 trials, every one pruned."""
    study = _study(tmp_path)
    study.set_user_attr(STUDY_COMMAND, COMMAND)
    study.set_user_attr(STUDY_PRUNER, "PercentilePruner(percentile=25.0)")
    study.set_user_attr(STUDY_SETTINGS, {"pruner": PERCENTILE, "n_trials": 14, "n_jobs": 1})
    first = {ATTR_HOST: "box", ATTR_PID: 100}
    _add(study, TrialState.COMPLETE, {"lr": 0.001}, 0.5, [0.40, 0.45, 0.5], **first)  # trial 0
    _add(study, TrialState.COMPLETE, {"lr": 0.002}, 0.97, [0.90, 0.9588, 0.97], **first)  # 1: the winner
    for i, at_2 in enumerate([0.968, 0.967, 0.966]):  # 2-4: led epoch 2, ended below the winner
        _add(
            study, TrialState.COMPLETE, {"lr": 0.003 + i / 1000}, 0.96 - i / 100, [0.93, at_2, 0.96], **first
        )
    for lr, at_2 in [(0.01, 0.9622), (0.02, 0.9612)]:  # 5, 6: ahead of the winner at epoch 2
        _add(study, TrialState.PRUNED, {"lr": lr}, None, [0.91, at_2], **first)
    _add(study, TrialState.PRUNED, {"lr": 0.05}, None, [0.80, 0.85], **first)  # 7: behind, pruned fairly
    for i in range(6):  # 8-13: the continued sweep, all pruned; 9 is ahead of the winner too
        _add(
            study,
            TrialState.PRUNED,
            {"lr": 0.04 + i / 100},
            None,
            [0.5, 0.9610 if i == 1 else 0.6],
            **{ATTR_HOST: "box", ATTR_PID: 200},
        )
    return study


def test_pruned_trials_ahead_of_the_winner_at_their_epoch_are_flagged_though_none_ranked_top_3(tmp_path):
    view = _view(_seeds_study(tmp_path))
    review = review_pruning(view)
    assert [(a.trial.number, a.step, a.value, a.winner) for a in review.ahead] == [
        (5, 2, 0.9622, 0.9588),
        (6, 2, 0.9612, 0.9588),
        (9, 2, 0.9610, 0.9588),
    ]
    md = write_study_report(view, tmp_path / "out", flattener=None, root_dir=tmp_path).files["report_md"]
    text = md.read_text()
    summary = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    assert (
        "The pruner stopped 3 trials that were ahead of the winner: trial 5 had 0.9622 at epoch 2, "
        "where trial 1 (the best) had 0.9588 (2 more)" in summary
    )
    cost = text.split("## What the pruner cost\n", 1)[1].split("\n## ", 1)[0]
    assert "| 5 | 2 | 0.9622 | 0.9588 | 0.0034 |" in cost and "| 9 | 2 | 0.961 | 0.9588 |" in cost
    assert "| 7 |" not in cost  # behind the winner at its epoch
    early = text.split("## Possibly pruned too early\n", 1)[1].split("\n## ", 1)[0]
    assert "None:" not in early and "That is no all-clear: 3 pruned trials were ahead of the winner" in early


def test_a_minimizing_study_flags_pruned_trials_below_the_winners_loss():
    study = optuna.create_study(direction="minimize")
    dist = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for state, value, curve in [
        (TrialState.COMPLETE, 0.10, {1: 0.5, 2: 0.30, 3: 0.10}),
        (TrialState.PRUNED, None, {1: 0.4, 2: 0.25}),  # lower loss than the winner's 0.30 at epoch 2
        (TrialState.PRUNED, None, {1: 0.6, 2: 0.35}),
    ]:
        study.add_trial(
            create_trial(
                state=state, params={"lr": 0.01}, distributions=dist, value=value, intermediate_values=curve
            )
        )
    from sweeplab.search.view import StudyView

    review = review_pruning(StudyView(study, "memory"))
    assert [(a.trial.number, a.value, a.winner) for a in review.ahead] == [(1, 0.25, 0.30)]


def test_a_continued_sweep_whose_trials_were_all_pruned_is_said_with_commands_that_compose(
    tmp_path, compose_cfg
):
    view = _view(_seeds_study(tmp_path))
    assert review_pruning(view).all_pruned.numbers == list(range(8, 14))
    text = (
        write_study_report(view, tmp_path / "out", flattener=None, root_dir=tmp_path)
        .files["report_md"]
        .read_text()
    )
    summary = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    assert (
        "All 6 trials the latest sweep added to the study (trials 8-13) were pruned: under "
        "PercentilePruner(percentile=25.0), continuing with more trials bought no complete trial."
    ) in summary
    cost = text.split("## What the pruner cost\n", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(line) for line in cost.split("```")[1].splitlines() if line.strip()]
    assert len(commands) == 2
    guarded, gentler = (args[2:] for args in commands)  # python, script, then the overrides
    assert {"hydra.sweeper.guard.leader=true", "hydra.sweeper.rescue.top_k=3"} <= set(guarded)
    # the winner ended at 0.97; 0.9610 is 0.009 below it: the margin saves all three
    assert "hydra.sweeper.guard.margin=0.0091" in guarded
    assert "hydra/sweeper/pruner=median" in gentler and "hydra.sweeper.pruner.n_warmup_steps=3" in gentler
    assert "hydra.sweeper.pruner.percentile=25" not in gentler  # a percentile setting the median lacks
    for args in (guarded, gentler):
        assert "hydra.sweeper.n_trials=28" in args  # 14 counted, as many again
        cfg = compose_cfg([a for a in args if a != "-m"], keep_hydra=True)
        plan = make_plan(cfg.hydra.sweeper, cfg, [], _group_options, root_dir=str(tmp_path))
        assert plan.n_trials == 28
    assert plan.conf.pruner["_target_"] == "optuna.pruners.MedianPruner"
    assert plan.conf.pruner["n_warmup_steps"] == 3


def _group_options(name: str) -> list[str] | None:
    folder = CONF / name.replace(".", "/")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None


def test_a_sweep_whose_trials_mostly_completed_is_not_said_to_be_all_pruned(tmp_path):
    study = _study(tmp_path)
    for i in range(12):
        pid = 100 if i < 6 else 200
        state = TrialState.PRUNED if i in (7, 9) else TrialState.COMPLETE
        _add(
            study,
            state,
            {"lr": 0.001 * (i + 1)},
            None if state == TrialState.PRUNED else 0.5,
            [0.5],
            **{ATTR_HOST: "box", ATTR_PID: pid},
        )
    assert review_pruning(_view(study)).all_pruned is None


def test_fixed_settings_show_a_target_by_its_class_and_interpolations_resolved_or_left_out(tmp_path):
    study = optuna.create_study(direction="maximize")
    dist = {"models.optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE, params={"models.optimizer.lr": 0.01}, distributions=dist, value=0.9
        )
    )
    job = {
        "seed": 42,
        "data": {"in_chans": 3},
        "models": {
            "optimizer": {
                "_target_": "torch.optim.AdamW",
                "_partial_": True,
                "lr": 0.001,
                "weight_decay": 0.01,
                "seed": "${seed}",
                "in_chans": "${data.in_chans}",
                "name": "${optimizers.default}",  # nothing there: not resolvable
            }
        },
    }
    from sweeplab.search.view import StudyView

    blocks = search_space(StudyView(study, "memory"), job)
    rows = {row[0]: row[1:] for row in blocks[-1].rows}
    assert rows == {
        "models.optimizer": ["AdamW", "config (class)"],
        "models.optimizer.weight_decay": [0.01, "config"],
        "models.optimizer.seed": [42, "config"],
        "models.optimizer.in_chans": [3, "config"],
    }


def test_a_trend_heading_follows_its_buckets_when_spearman_points_the_other_way(tmp_path):
    study = _study(tmp_path)
    # the largest depths' bucket has the best mean (one very good trial), yet rho is negative
    for depth, value in zip(range(1, 9), [0.60, 0.59, 0.58, 0.57, 0.56, 0.55, 0.54, 0.99], strict=True):
        _add(study, TrialState.COMPLETE, {"depth": depth}, value, [value])
    blocks = trends(_view(study))
    title = next(b.text for b in blocks if isinstance(b, Heading) and b.text.startswith("depth"))
    table = next(b for b in blocks if isinstance(b, Table))
    best = max(table.rows, key=lambda r: r[2])[0]
    assert "smaller values did better" not in title and "larger values did better" not in title
    assert title.endswith(f"no clear direction: the best mean is at {best})") and best == "[4.5, 8]"


def test_the_summary_gives_the_gain_over_the_first_trial_beside_the_median(tmp_path):
    study = _study(tmp_path)
    _add(study, TrialState.COMPLETE, {"lr": 0.001}, 0.80, [0.80])
    _add(study, TrialState.COMPLETE, {"lr": 0.002}, 0.90, [0.90])
    _add(study, TrialState.COMPLETE, {"lr": 0.003}, 0.85, [0.85])
    text = (
        write_study_report(_view(study), tmp_path / "out", flattener=None, root_dir=tmp_path)
        .files["report_md"]
        .read_text()
    )
    assert (
        "Trial 1 reached the best val/f1, 0.9, 0.05 better than the median of the 3 complete trials (0.85); "
        "the first configuration tried (trial 0) reached 0.8: the best is 0.1 better than it (+12.5%)."
    ) in text


def test_the_gain_is_over_the_first_complete_trial_where_the_first_was_pruned(tmp_path):
    study = _study(tmp_path)
    _add(study, TrialState.PRUNED, {"lr": 0.001}, None, [0.3])
    _add(study, TrialState.COMPLETE, {"lr": 0.002}, 0.60, [0.60])
    _add(study, TrialState.COMPLETE, {"lr": 0.003}, 0.75, [0.75])
    text = (
        write_study_report(_view(study), tmp_path / "out", flattener=None, root_dir=tmp_path)
        .files["report_md"]
        .read_text()
    )
    assert (
        "the first configuration tried (trial 0) was pruned at epoch 1 with 0.3; the best is 0.15 better "
        "than the first complete trial (trial 1, 0.6) (+25.0%)."
    ) in text


def test_without_sweeps_told_apart_the_studys_last_ten_trials_all_pruned_are_said(tmp_path):
    study = _study(tmp_path)
    _add(study, TrialState.COMPLETE, {"lr": 0.001}, 0.9, [0.5, 0.9])
    for i in range(10):  # no host or pid stored: which sweep asked them is unknown
        _add(study, TrialState.PRUNED, {"lr": 0.002 + i / 1000}, None, [0.4])
    view = _view(study)
    found = review_pruning(view).all_pruned
    assert found.numbers == list(range(1, 11)) and not found.continued
    text = (
        write_study_report(view, tmp_path / "out", flattener=None, root_dir=tmp_path)
        .files["report_md"]
        .read_text()
    )
    assert "The study's last 10 trials (trials 1-10) were all pruned" in text
    assert "hydra.sweeper.rescue.top_k=3" in text and "hydra.sweeper.guard.margin" not in text


def test_a_trend_of_too_few_trials_is_one_range_and_says_no_trend_is_read(tmp_path):
    study = _study(tmp_path)
    for depth, value in zip(range(1, 6), [0.5, 0.6, 0.7, 0.8, 0.9], strict=True):
        _add(study, TrialState.COMPLETE, {"depth": depth}, value, [value])
    blocks = trends(_view(study))
    title = next(b.text for b in blocks if isinstance(b, Heading) and b.text.startswith("depth"))
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert table.rows == [["[1, 5]", 5, pytest.approx(0.7), 0.9]]  # not five buckets of one trial
    assert title == "depth (5 complete trials: too few to split into ranges, no trend read)"
