"""Bad study settings are refused before the first trial, with one line, and nothing is written to a storage."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from hydra.errors import ConfigCompositionException

from sweeplab.errors import SweeplabError
from sweeplab.search.opening import open_study
from sweeplab.search.plan import make_plan
from sweeplab.search.pruning import sampler_name
from tests.conftest import CONF, QUICK, sweep


def _group_options(name: str) -> list[str] | None:
    folder = CONF / name.replace(".", "/")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None


@pytest.fixture
def plan_for(compose_cfg, tmp_path):
    """make_plan(...) for `hparams_search=optuna_fast` plus overrides and sweep arguments."""

    def _plan(overrides=(), arguments=()):
        cfg = compose_cfg(["hparams_search=optuna_fast", *overrides], keep_hydra=True)
        return make_plan(cfg.hydra.sweeper, cfg, list(arguments), _group_options, root_dir=str(tmp_path))

    return _plan


def test_default_plan_uses_the_embedded_storage_outside_the_sweep_dir(plan_for, tmp_path):
    plan = plan_for()
    assert plan.study_name == "digits_test_resnet_fast"
    assert plan.storage_url == f"sqlite:///{tmp_path.resolve()}/studies/digits_test_resnet_fast.db"
    assert plan.directions == ["maximize"]
    assert isinstance(plan.pruner, optuna.pruners.PercentilePruner)
    assert plan.quick_overrides == ["trainer.max_epochs=3"]  # the fast space searches data.batch_size itself
    assert not (tmp_path / "studies").exists()  # planning writes nothing


@pytest.mark.parametrize(
    ("overrides", "arguments", "message"),
    [
        (
            [],
            ["models.optimizer.lr=interval(0.1, 0.01)"],
            r"models.optimizer.lr='interval\(0.1, 0.01\)': an empty or inverted range",
        ),
        ([], ["models.optimizer.lr=tag(log, interval(0, 0.1))"], r"a log range needs low > 0"),
        (
            [],
            ["models.optimizer.lrr=interval(0.1, 0.2)"],
            r"'models.optimizer.lrr' is not a key of the composed config \(did you mean models.optimizer.lr",
        ),
        (
            [],
            ["model=choice(test_resnet, resnet_18)"],
            r"model='resnet_18': no such option in config group model; allowed: .*resnet18",
        ),
        (
            ["hydra.sweeper.direction=upward"],
            [],
            r"hydra.sweeper.direction='upward': allowed: minimize, maximize",
        ),
        (["hydra.sweeper.direction=minimize"], [], r"contradicts optimized_mode=max"),
        (
            ["hydra.sweeper.direction=[maximize,minimize]"],
            [],
            r"gives 2 direction\(s\) but each trial returns 1 value",
        ),
        (["hydra.sweeper.n_trials=0"], [], r"hydra.sweeper.n_trials=0: must be an integer >= 1"),
        (["hydra.sweeper.max_failure_rate=1.5"], [], r"max_failure_rate=1.5: must lie in \[0, 1\]"),
        (["hydra.sweeper.timeout=-1"], [], r"hydra.sweeper.timeout=-1"),
        (["hydra.sweeper.sampler._target_=optuna.samplers.NoSuchSampler"], [], r"hydra.sweeper.sampler"),
        (["hydra.sweeper.pruner.percentile=250"], [], r"hydra.sweeper.pruner"),
        (
            ["hydra.sweeper.quick_validation.train_fraction=0"],
            [],
            r"train_fraction=0.0: must lie in \(0, 1\]",
        ),
    ],
)
def test_bad_study_settings_fail_before_any_trial(plan_for, tmp_path, overrides, arguments, message):
    with pytest.raises(SweeplabError, match=message) as info:
        plan_for(overrides, arguments)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("arguments", [["logger=[]"], ["logger=null"], ["logger=[csv,tensorboard]"]])
def test_group_overrides_hydra_accepts_are_accepted_in_a_study(plan_for, arguments):
    plan = plan_for([], arguments)
    assert plan.space.fixed == {"logger": arguments[0].split("=", 1)[1]}


def test_a_list_of_group_options_is_checked_option_by_option(plan_for):
    with pytest.raises(SweeplabError, match=r"^logger='tensorbord': no such option in config group logger"):
        plan_for([], ["logger=[csv,tensorbord]"])


@pytest.mark.parametrize("option", ["sampler=bayes", "pruner=asha"])
def test_unknown_sampler_or_pruner_lists_the_options(compose_cfg, option):
    with pytest.raises(ConfigCompositionException, match=r"Could not find 'hydra/sweeper/"):
        compose_cfg(["hparams_search=optuna", f"hydra/sweeper/{option}"], keep_hydra=True)


SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "grid": "GridSampler",
    "cmaes": "CmaEsSampler",
    "nsgaii": "NSGAIISampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_builds(plan_for, sampler):
    if sampler == "grid":  # a grid needs discrete params: its grid is built from them
        plan = plan_for(
            ["hydra.sweeper.params=null", "hydra/sweeper/sampler=grid"],
            ["models.optimizer.lr=choice(0.001, 0.01)", "data.batch_size=range(32, 96, 32)"],  # end excluded
        )
        assert plan.sampler._search_space == {
            "data.batch_size": [32, 64],
            "models.optimizer.lr": [0.001, 0.01],
        }
    else:
        plan = plan_for([f"hydra/sweeper/sampler={sampler}"])
    assert sampler_name(plan.sampler) == SAMPLERS[sampler]


@pytest.mark.parametrize(
    "pruner",
    ["median", "percentile", "successive_halving", "hyperband", "threshold", "patient", "wilcoxon", "none"],
)
def test_every_pruner_builds(plan_for, pruner):
    overrides = [f"hydra/sweeper/pruner={pruner}"]
    if pruner == "threshold":
        overrides.append("hydra.sweeper.pruner.lower=0.2")
    plan = plan_for(overrides)
    assert isinstance(plan.pruner, optuna.pruners.BasePruner)


def test_unreachable_storage_is_one_line_without_the_password(plan_for):
    plan = plan_for(["hydra.sweeper.storage=postgresql://user:secret@127.0.0.1:9/optuna"])
    with pytest.raises(
        SweeplabError,
        match=r"hydra.sweeper.storage='postgresql://user:\*\*\*@127.0.0.1:9/optuna': cannot open it",
    ) as info:
        open_study(plan)
    assert "secret" not in str(info.value)


def test_the_sweep_command_is_stored_with_storage_passwords_masked(plan_for, monkeypatch):
    url = "postgresql://user:secret@db.example:5432/optuna"
    monkeypatch.setattr(
        sys, "argv", ["runners/train.py", "-m", "hparams_search=optuna_fast", f"hydra.sweeper.storage={url}"]
    )
    plan = plan_for()
    assert plan.command == [
        "-m",
        "hparams_search=optuna_fast",
        "hydra.sweeper.storage=postgresql://user:***@db.example:5432/optuna",
    ]


def test_a_changed_search_space_is_refused_unless_allowed(plan_for, tmp_path):
    open_study(plan_for())
    changed = plan_for([], ["models.optimizer.lr=tag(log, interval(1e-3, 1e-1))"])
    with pytest.raises(
        SweeplabError,
        match=r"was run with another search space \(models.optimizer.lr: Float\(.*allow_space_change=true",
    ):
        open_study(changed)
    allowed = plan_for(
        ["hydra.sweeper.allow_space_change=true"], ["models.optimizer.lr=tag(log, interval(1e-3, 1e-1))"]
    )
    assert open_study(allowed).study_name == "digits_test_resnet_fast"
    assert Path(tmp_path / "studies" / "digits_test_resnet_fast.db").is_file()


def _finished_study(values: list[float]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for v in values:
        study.add_trial(optuna.trial.create_trial(value=v, params={}, distributions={}))
    return study


def _sweep(plan, study):
    from sweeplab.launching.executors import LauncherBatches
    from sweeplab.search.loop import StudySweep

    return StudySweep(plan, study, LauncherBatches(lambda overrides, idx: [], plan.n_jobs))


def test_patience_stops_after_n_finished_trials_without_a_new_best(plan_for):
    plan = plan_for(["hydra.sweeper.stop.patience=3"])
    assert (
        _sweep(plan, _finished_study([0.5, 0.9, 0.8, 0.7])).stop_reason(
            _finished_study([0.5, 0.9, 0.8, 0.7]).trials
        )
        is None
    )
    study = _finished_study([0.5, 0.9, 0.8, 0.7, 0.85])
    assert "stop.patience=3: 3 finished trials without a new best" in _sweep(plan, study).stop_reason(
        study.trials
    )


def test_target_stops_once_the_best_reaches_it(plan_for):
    plan = plan_for(["hydra.sweeper.stop.target=0.95"])
    assert _sweep(plan, _finished_study([0.9])).stop_reason(_finished_study([0.9]).trials) is None
    study = _finished_study([0.9, 0.96])
    assert "stop.target=0.95 reached by trial 1" in _sweep(plan, study).stop_reason(study.trials)


def test_timeout_stops_the_study(plan_for):
    plan = plan_for(["hydra.sweeper.timeout=5"])
    sweep = _sweep(plan, _finished_study([]))
    assert sweep.stop_reason([]) is None
    sweep.started -= 6
    assert "timeout=5s reached" in sweep.stop_reason([])


def test_hydra_discovers_the_installed_sweeper_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper" in names


def test_ctrl_c_stores_the_running_trial_as_interrupted_and_queues_its_params(plan_for):
    from sweeplab.launching.executors import LauncherBatches
    from sweeplab.search.loop import StudySweep
    from sweeplab.search.records import ATTR_FAIL_REASON, ATTR_RETRY_OF, INTERRUPTED

    plan = plan_for()
    study = open_study(plan)
    study.add_trial(
        optuna.trial.create_trial(value=0.5, params={}, distributions={})
    )  # ids and numbers differ

    def interrupted_launch(overrides, first_job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StudySweep(plan, study, LauncherBatches(interrupted_launch, plan.n_jobs)).run()
    trials = study.get_trials(deepcopy=False)
    killed = trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL and killed.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    queued = trials[2]
    assert queued.state == optuna.trial.TrialState.WAITING and queued.user_attrs[ATTR_RETRY_OF] == 1
    assert queued.system_attrs["fixed_params"] == killed.params


@pytest.mark.slow
def test_a_grid_smaller_than_n_trials_runs_each_point_once_and_stops(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_fast",
        "~search",
        "hydra/sweeper/sampler=grid",
        "models.optimizer.lr=choice(0.001, 0.002)",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.report=false",
        "exp_name=grid",
        *QUICK,
    ]
    result, trials = sweep(args, tmp_path, study="grid_fast")
    assert sorted(t.params["models.optimizer.lr"] for t in trials) == [0.001, 0.002]
    assert all(t.state.is_finished() for t in trials)
    assert "the grid sampler has started every point of its grid" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "arguments", "message"),
    [
        (
            [],
            ["data.batch_size=0"],
            r"^data\.batch_size=0: must be at least 1 \(found before the study started, in a",
        ),
        ([], ["models.optimizer.lr=0"], r"^models\.optimizer\.lr=0: must be a number > 0 \(found before"),
        (["data.img_size=2"], [], r"^data\.img_size=2: too small for test_resnet"),
        (["data=image_folder", "data.root=/nonexistent"], [], r"^data\.root='/nonexistent': no such folder"),
        (
            ["trainer.devices=2", "trainer.strategy=ddp", "hydra.sweeper.devices_per_trial=1"],
            [],
            r"^trainer\.devices=2: a trial of this study trains on hydra\.sweeper\.devices_per_trial=1 device"
            r"\(s\); set hydra\.sweeper\.devices_per_trial=2 \(",
        ),
        (
            ["trainer.devices=[0,1]", "hydra.sweeper.devices_per_trial=3"],
            [],
            r"^trainer\.devices=\[0, 1\]: a trial of this study trains on hydra\.sweeper\.devices_per_trial=3",
        ),
        (
            ["trainer.devices=2", "hydra.sweeper.devices_per_trial=2", "trainer.strategy=ddp_fork"],
            [],
            r"^trainer\.strategy='ddp_fork': a trial's forked ranks would share its worker's storage connection;"
            r" use trainer\.strategy=ddp \(Lightning's default launcher\) or ddp_spawn \(",
        ),
        (["+trainer.num_nodes=2"], [], r"^trainer\.num_nodes=2: a study's trial trains on one machine"),
        # a choice the space can take, though the config's own value is fine
        (
            [],
            ["models.net.name=choice(test_resnet, resnet_18)"],
            r"^models\.net\.name='resnet_18': not a timm model",
        ),
    ],
)
def test_a_config_a_trial_would_reject_is_refused_before_the_study_is_written(
    compose_cfg, tmp_path, overrides, arguments, message
):
    def compose(extra):
        return compose_cfg(["hparams_search=optuna_fast", *overrides, *extra], keep_hydra=True)

    cfg = compose([])
    with pytest.raises(SweeplabError, match=message):
        make_plan(cfg.hydra.sweeper, cfg, arguments, _group_options, root_dir=str(tmp_path), compose=compose)
    assert not (tmp_path / "studies").exists()
