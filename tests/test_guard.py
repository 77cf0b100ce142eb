"""The guard keeps a would-be winner from being pruned; rescue runs the best-ranked pruned trials again."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks._replay import CurveTable, replay
from sweeplab.errors import SweeplabError
from sweeplab.search.pruning import Guard, GuardedPruner, rescue_candidates
from sweeplab.search.records import ATTR_GUARD_SAVED, ATTR_PAUSED, ATTR_RESCUE_OF, ATTR_RESUMED
from sweeplab.search.space import format_value
from tests.conftest import QUICK, run_cli, sweep, sweep_dirs

STEADY = [0.90, 0.970, 0.972, 0.974, 0.975, 0.975, 0.975, 0.975]
# a late bloomer: a hair under the median at epochs 2-4, the best of all at the end
BLOOMER = [0.80, 0.966, 0.969, 0.971, 0.976, 0.980, 0.985, 0.990]


def _table(*curves: list[float]) -> CurveTable:
    return CurveTable([{"row": str(i)} for i in range(len(curves))], [list(c) for c in curves])


def _median() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def test_unguarded_median_pruning_kills_the_eventual_best_and_the_guarded_one_keeps_it():
    table = _table(*[[v - 0.001 * i for v in STEADY] for i in range(5)], BLOOMER)
    order = range(len(table))
    unpruned_best = max(max(c) for c in table.curves)

    plain = replay(table, order, _median())
    guarded = replay(table, order, GuardedPruner(_median(), Guard(leader=True, margin=0.01)))

    assert 5 in plain.pruned and plain.best < unpruned_best  # the winner was thrown away at epoch 2
    assert guarded.best == unpruned_best and guarded.best_config == 5
    # below the median at epochs 2-4, but within 0.01 of the best finished value (0.975)
    assert guarded.saved[5] == [[2, "margin"], [3, "margin"], [4, "margin"]]
    assert guarded.epochs > plain.epochs


def _always_prune_study(guard: Guard, direction: str = "maximize") -> optuna.Study:
    # ThresholdPruner with an impossible bar says "prune" at every step: only the guard can keep a trial
    inner = (
        optuna.pruners.ThresholdPruner(lower=2.0)
        if direction == "maximize"
        else optuna.pruners.ThresholdPruner(upper=-2.0)
    )
    return optuna.create_study(direction=direction, pruner=GuardedPruner(inner, guard))


def _run(study: optuna.Study, curve: list[float]) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    for step, value in enumerate(curve, 1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            break
    else:
        study.tell(trial, max(curve))
    return study.trials[-1]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_each_guard_rule_vetoes_only_its_own_case(direction):
    sign = 1 if direction == "maximize" else -1
    leader = _always_prune_study(Guard(leader=True), direction)
    first = _run(leader, [sign * 0.5, sign * 0.6])
    second = _run(leader, [sign * 0.4, sign * 0.7])
    assert first.state == TrialState.COMPLETE and first.user_attrs[ATTR_GUARD_SAVED] == [
        [1, "leader"],
        [2, "leader"],
    ]
    assert second.state == TrialState.PRUNED and second.last_step == 1  # behind trial 0 at epoch 1

    threshold = _always_prune_study(Guard(threshold=sign * 0.5), direction)
    assert _run(threshold, [sign * 0.6, sign * 0.4]).user_attrs[ATTR_GUARD_SAVED] == [[1, "threshold"]]
    assert threshold.trials[-1].state == TrialState.PRUNED and threshold.trials[-1].last_step == 2

    margin = _always_prune_study(Guard(margin=0.05), direction)
    assert _run(margin, [sign * 0.9]).state == TrialState.PRUNED  # nothing finished yet: no bar
    margin.enqueue_trial({})
    done = margin.ask()
    margin.tell(done, sign * 0.9)
    assert _run(margin, [sign * 0.86, sign * 0.8]).user_attrs[ATTR_GUARD_SAVED] == [[1, "margin"]]


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"margin": -0.1}, "margin"),
        ({"threshold": "high"}, "threshold"),
        ({"leader": "yes"}, "leader"),
        ({"lead": True}, "lead"),
    ],
)
def test_bad_guard_settings_name_the_key(node, key):
    with pytest.raises(SweeplabError, match=rf"^hydra\.sweeper\.guard\.{key}="):
        Guard.from_config(node)


def test_rescue_picks_the_pruned_trials_that_ranked_best_at_their_prune_step():
    study = optuna.create_study(direction="maximize")
    curves = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.45], [0.55, 0.58], [0.1]]  # trials 0-4
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
        if len(curve) == 3:
            study.tell(trial, max(curve))
        else:
            study.tell(trial, state=TrialState.PRUNED)
    # at their step: trial 3 beats 1 of 2 others at epoch 2 (0.58 > 0.5), trial 2 beats 1 of 3, trial 4 none
    assert [t.number for t in rescue_candidates(study.trials, study.direction, 2)] == [3, 2]
    assert [t.number for t in rescue_candidates(study.trials, study.direction, 2, exclude=[3])] == [2, 4]


def test_replayed_rescue_runs_exactly_k_pruned_trials_in_full():
    table = _table(*[[v - 0.002 * i for v in STEADY] for i in range(8)], BLOOMER)
    result = replay(table, range(len(table)), _median(), rescue_top_k=2)
    assert len(result.rescued) == 2 and set(result.rescued).isdisjoint(result.pruned)
    assert result.best == max(max(table.curves[c]) for c in [*range(len(table))] if c not in result.pruned)


@pytest.mark.slow
def test_rescue_resumes_exactly_k_pruned_trials_with_their_params_to_the_full_budget(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_fast",
        "exp_name=rescue",
        "hydra.sweeper.n_trials=8",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.1",  # says prune after every epoch: only the guard keeps a trial
        "hydra.sweeper.guard.leader=true",
        "hydra.sweeper.rescue.top_k=2",
        *QUICK,
    ]
    trials = {t.number: t for t in sweep(args, tmp_path, study="rescue_fast").trials}
    rescues = [t for t in trials.values() if ATTR_RESCUE_OF in t.user_attrs]
    own = [t for t in trials.values() if ATTR_RESCUE_OF not in t.user_attrs]
    assert len(own) == 8 and len(rescues) == 2
    assert trials[0].state == TrialState.COMPLETE and trials[0].user_attrs[ATTR_GUARD_SAVED][0] == [
        1,
        "leader",
    ]
    for rescue in rescues:
        original = trials[rescue.user_attrs[ATTR_RESCUE_OF]]
        assert original.state == TrialState.PRUNED
        assert rescue.params == original.params
        assert rescue.state == TrialState.COMPLETE
        # resumed where it was paused: the curve reaches the full budget, only the epochs after the pause ran
        paused = original.user_attrs[ATTR_PAUSED]
        assert rescue.user_attrs[ATTR_RESUMED]["step"] == paused["step"] == max(original.intermediate_values)
        assert max(rescue.intermediate_values) == rescue.user_attrs["max_epochs"] == 3
        assert rescue.user_attrs["epochs_run"] == 3 - paused["step"]
    expected = rescue_candidates(own, optuna.study.StudyDirection.MAXIMIZE, 2)
    assert sorted(r.user_attrs[ATTR_RESCUE_OF] for r in rescues) == sorted(t.number for t in expected)

    # the same command again: the study is done and rescued; nothing more runs
    again = sweep(args, tmp_path, study="rescue_fast")
    assert len(again.trials) == 10

    sweep_dir = sweep_dirs(tmp_path, "rescue")[0]
    report = (sweep_dir / "report.md").read_text()
    assert "## Saved by the guard" in report and "## Rescued" in report
    with (sweep_dir / "all_trials.csv").open() as f:
        rows = {int(r["number"]): r for r in csv.DictReader(f)}
    assert {n for n, r in rows.items() if r["rescue_of"]} == {r.number for r in rescues}
    assert rows[0]["guard_saved"].startswith("leader at epoch 1")
    stats = json.loads((sweep_dir / "study_stats.json").read_text())
    assert stats["pruner"] == "ThresholdPruner (guard: leader)"


@pytest.mark.slow
def test_a_focused_study_searches_inside_the_earlier_space_and_starts_from_its_best(tmp_path):
    sweep(
        [
            "-m",
            "hparams_search=optuna_fast",
            "exp_name=stage",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.report=false",
            *QUICK,
        ],
        tmp_path,
    )
    earlier = optuna.load_study(
        study_name="stage_fast", storage=f"sqlite:///{tmp_path / 'studies' / 'stage_fast.db'}"
    )
    focused_args = [
        "-m",
        "hparams_search=optuna_focused",
        "exp_name=stage",
        "hydra.sweeper.focus.from=stage_fast",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.quick_validation.epochs=2",
        "hydra.sweeper.report=false",
        *QUICK,
    ]
    sweep(focused_args, tmp_path)
    study = optuna.load_study(
        study_name="stage_focused", storage=f"sqlite:///{tmp_path / 'studies' / 'stage_focused.db'}"
    )
    assert study.user_attrs["sweeplab:focused_from"] == "stage_fast"
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 2
    overrides = trials[0].user_attrs["overrides"]
    for name, value in earlier.best_trial.params.items():  # the earlier best runs first
        # a choice narrowed to one value is no longer searched: every trial gets it as a fixed override
        assert trials[0].params.get(name) == value or f"{name}={format_value(value)}" in overrides
    old_space = earlier.best_trial.distributions
    for t in trials:
        for name, dist in t.distributions.items():  # every range lies inside the earlier one
            old = old_space[name]
            best = earlier.best_trial.params[name]
            if hasattr(dist, "low"):
                assert old.low <= dist.low <= best <= dist.high <= old.high
            else:
                assert set(dist.choices) <= set(old.choices) and best in dist.choices

    missing = run_cli(
        ["-m", "hparams_search=optuna_focused", "exp_name=stage", "hydra.sweeper.focus.from=nope", *QUICK],
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    assert "hydra.sweeper.focus.from=" in missing.stderr and "nope" in missing.stderr
    study = optuna.load_study(
        study_name="stage_focused", storage=f"sqlite:///{tmp_path / 'studies' / 'stage_focused.db'}"
    )
    assert len(study.trials) == 2  # the refused run wrote nothing
