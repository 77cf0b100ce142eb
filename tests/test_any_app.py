"""sweeplab's sweeper sweeps any Hydra app with the block its users wrote for the stock hydra-optuna-sweeper.

The apps in tests/apps are written the way the stock plugin's users write them (a function of x and y, two
objectives, a custom search space hook that reads the app's own config, a loop that reports per epoch);
their configs only select sweeplab's sweeper. None of them has a key of sweeplab's train config.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from optuna.trial import TrialState

import sweeplab
from sweeplab.errors import SweeplabError
from sweeplab.search.plan import make_plan
from sweeplab.search.records import ATTR_PRUNED_AT
from sweeplab.search.space import SearchSpace
from tests.conftest import ROOT, Swept, load_trials, sweep, sweep_dirs

APPS = ROOT / "tests" / "apps"


def _no_groups(name: str) -> list[str] | None:
    return None


@pytest.fixture
def plain_plan(tmp_path):
    """make_plan for a tests/apps config, composed as Hydra composes it for `python <app>.py -m ...`."""

    def _plan(app: str, overrides=(), arguments=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(APPS / "conf"), version_base=None, job_name=app):
            cfg = compose(app, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            return make_plan(cfg.hydra.sweeper, cfg, list(arguments), _no_groups, root_dir=str(tmp_path))
        finally:
            GlobalHydra.instance().clear()

    return _plan


def test_an_app_without_sweeplabs_train_keys_is_planned_from_its_stock_block(plain_plan, tmp_path):
    plan = plain_plan("sphere")
    assert plan.directions == ["minimize"]  # no optimized_mode to contradict it
    assert plan.study_name == "sphere"  # the app's job name: two apps in one directory never share a study
    assert plan.metrics == ["value"]
    assert set(plan.space.distributions) == {"x", "y"}
    assert not (tmp_path / "studies").exists()


def test_two_directions_need_no_extra_objectives_key(plain_plan):
    plan = plain_plan("pareto")
    assert plan.directions == ["minimize", "minimize"]
    assert plan.metrics == ["value_0", "value_1"]


def test_a_block_without_params_runs_the_fixed_config(plain_plan):
    plan = plain_plan("sphere", ["hydra.sweeper.params=null"])
    assert plan.space.all_distributions() == {}


def test_the_custom_search_space_hook_gets_the_apps_whole_config(plain_plan):
    plan = plain_plan("sphere", ["hydra.sweeper.custom_search_space=tests.apps.hooks.z_near_x"])
    trial = optuna.create_study().ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    plan.custom_search_space(trial)  # reads cfg.max_z_difference_from_x, a key of the app
    assert abs(trial.params["z"] - trial.params["x"]) <= 0.5


@pytest.mark.parametrize(
    ("sweep", "points"),
    [
        ("range(-1.0, 1.0, step=1)", [-1.0, 0.0]),  # a stepped float range: its end excluded
        ("range(1, 5)", [1, 2, 3, 4]),
        ("range(0, 10, step=3)", [0, 3, 6, 9]),  # Hydra's range (the stock plugin drops the 9)
        ("range(0.0, 1.0, step=0.25)", [0.0, 0.25, 0.5, 0.75]),
        ("int(interval(1, 4))", [1, 2, 3]),
        ("choice(a, b)", ["a", "b"]),
    ],
)
def test_grid_points_are_the_stock_plugins(sweep, points):
    assert SearchSpace.parse({"x": sweep}).grid == {"x": points}


def test_a_continuous_interval_has_no_grid_points():
    with pytest.raises(SweeplabError, match=r"^x='interval\(...\)': a continuous range has no grid points"):
        SearchSpace.parse({"x": "interval(0.0, 1.0)"}).grid  # noqa: B018


def test_the_grid_sampler_gets_the_stock_grid(plain_plan):
    plan = plain_plan(
        "sphere",
        ["hydra/sweeper/sampler=grid", "hydra.sweeper.params=null"],
        ["x=range(-1.0, 1.0, step=1)", "y=range(1, 3)"],
    )
    assert plan.sampler._search_space == {"x": [-1.0, 0.0], "y": [1, 2]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["hydra/sweeper/sampler=motpe"],
            r"^hydra.sweeper.sampler._target_='optuna.samplers.MOTPESampler': was removed from Optuna; "
            r"TPESampler samples several objectives",
        ),
        (
            ["+hydra.sweeper.search_space={x: {type: float, low: 0, high: 1}}"],
            r"^hydra.sweeper.search_space='...': was removed from the stock plugin \(Hydra 1.2\); "
            r"write the space in hydra.sweeper.params",
        ),
    ],
)
def test_the_stock_plugins_removed_keys_say_what_replaced_them(plain_plan, tmp_path, overrides, message):
    with pytest.raises(SweeplabError, match=message):
        plain_plan("pareto", overrides)
    assert not (tmp_path / "studies").exists()


def test_quick_validation_on_an_app_without_the_train_keys_is_one_line(plain_plan, tmp_path):
    with pytest.raises(
        SweeplabError, match=r"^hydra.sweeper.quick_validation.epochs=3: sets trainer.max_epochs, "
    ):
        plain_plan("sphere", ["hydra.sweeper.quick_validation.epochs=3"])
    assert not (tmp_path / "studies").exists()


def test_report_outside_a_study_does_nothing():
    GlobalHydra.instance().clear()
    assert sweeplab.report(0.5, 1) is False


def _app(name: str, args: list[str], cwd: Path, study: str | None = None) -> Swept:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return sweep(["-m", *args], cwd, study, script=f"tests/apps/{name}.py", env=env, timeout=180)


def _logged_command(result: subprocess.CompletedProcess, prefix: str) -> list[str]:
    line = next(x for x in (result.stdout + result.stderr).splitlines() if prefix in x)
    return shlex.split(line.split(prefix, 1)[1])


@pytest.mark.slow
def test_a_tutorial_app_is_swept_and_its_best_trial_retrained_as_printed(tmp_path):
    result, trials = _app("sphere", [], tmp_path, study="sphere")
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert (
            t.params["y"] in (-5, 0, 5) and -5.5 <= t.params["x"] <= 5.5 and (2 * t.params["x"]).is_integer()
        )
        assert t.value == (t.params["x"] - 2) ** 2 + (t.params["y"] - 1) ** 2 + t.params["x"] ** 2
    best = min(trials, key=lambda t: t.value)
    (sweep,) = sweep_dirs(tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results == {"name": "optuna", "best_params": best.params, "best_value": best.value}

    command = _logged_command(result, "retrain it: ")
    assert command[1] == str(APPS / "sphere.py") and os.path.samefile(command[0], sys.executable)
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)  # as printed
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    used = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert {k: used[k] for k in best.params} == best.params


@pytest.mark.slow
def test_each_trial_of_a_parallel_study_runs_in_a_process_not_forked_from_the_threaded_sweep(tmp_path):
    args = ["hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4", "hydra.sweeper.report=false"]
    result, trials = _app("lineage", args, tmp_path, study="lineage")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), result.stderr[-2000:]
    (sweep_dir,) = sweep_dirs(tmp_path)
    records = [json.loads((sweep_dir / str(t.number) / "lineage.json").read_text()) for t in trials]
    sweep_pid = trials[0].user_attrs["pid"]  # the sweep that owned the trials
    assert len({r["pid"] for r in records}) == 4  # one process per trial
    for record in records:
        # forked from a fork server the sweep started by exec, which runs no threads: never from the sweep
        assert record["parent"] != sweep_pid and record["grandparent"] == sweep_pid
        assert "multiprocessing.forkserver" in record["parent_cmdline"] and record["parent_threads"] == 1
        assert record["cwd"] == str(tmp_path)  # in the sweep's working directory, as its jobs were
    assert [r["handed"] for r in records] == [t.number for t in trials]  # each job was handed its trial


@pytest.mark.slow
def test_two_apps_in_one_directory_keep_their_own_studies_and_two_objectives_need_no_extra_keys(tmp_path):
    for name in ("sphere", "pareto"):
        _app(name, ["hydra.sweeper.n_trials=4", "hydra.sweeper.report=false"], tmp_path)
    assert sorted(p.name for p in (tmp_path / "studies").glob("*.db")) == ["pareto.db", "sphere.db"]
    pareto = load_trials(tmp_path, "pareto")
    assert len(pareto) == 4 and all(len(t.values) == 2 for t in pareto)
    sweep = sweep_dirs(tmp_path)[-1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results) == {"name", "solutions"}
    assert all(set(s) == {"params", "values"} for s in results["solutions"])


@pytest.mark.slow
def test_a_hook_a_grid_and_a_block_without_params_run_as_with_the_stock_plugin(tmp_path):
    hook = _app(
        "sphere",
        [
            "hydra.sweeper.custom_search_space=hooks.z_near_x",  # beside the app, as the stock docs put it
            "hydra.sweeper.study_name=hook",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.report=false",
        ],
        tmp_path,
        study="hook",
    )
    for t in hook.trials:
        assert abs(t.params["z"] - t.params["x"]) <= 0.5

    grid = _app(
        "sphere",
        [
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.params=null",
            "x=range(-1.0, 1.0, step=1)",
            "y=range(1, 3)",
            "hydra.sweeper.study_name=grid",
            "hydra.sweeper.n_trials=10",
            "hydra.sweeper.report=false",
        ],
        tmp_path,
        study="grid",
    )
    points = sorted((t.params["x"], t.params["y"]) for t in grid.trials)
    assert points == [(-1.0, 1), (-1.0, 2), (0.0, 1), (0.0, 2)]

    trials = _app(
        "sphere",
        ["hydra.sweeper.params=null", "x=1.5", "hydra.sweeper.study_name=fixed", "hydra.sweeper.n_trials=2"],
        tmp_path,
        study="fixed",
    ).trials
    assert [t.params for t in trials] == [{}, {}] and {t.value for t in trials} == {0.25 + 1 + 2.25}


@pytest.mark.slow
def test_a_plain_training_loop_reports_each_epoch_and_is_pruned(tmp_path):
    result, trials = _app("curve", ["hydra.sweeper.report=false"], tmp_path, study="curve")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 10
    for t in complete:
        assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6]
    for t in pruned:
        last = max(t.intermediate_values)
        assert last < 6 and t.user_attrs[ATTR_PRUNED_AT] == last
        assert t.value == t.intermediate_values[last]  # stored with its last reported value
        ran = json.loads((Path(t.user_attrs["output_dir"]) / "epochs.json").read_text())
        assert ran["epochs"] == last  # the loop stopped when report() said so
    assert "PRUNED at step" in result.stdout + result.stderr


@pytest.mark.slow
def test_the_docs_pruning_example_runs_and_is_pruned(tmp_path):
    readme = (ROOT / "docs" / "any-app.md").read_text()
    example = (
        readme.split("**Pruning without Lightning.**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    )
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "curve.yaml").write_text((APPS / "conf" / "curve.yaml").read_text())
    (tmp_path / "curve.py").write_text(example + "\n\nif __name__ == '__main__':\n    curve()\n")
    result = subprocess.run(
        [sys.executable, "curve.py", "-m", "hydra.sweeper.report=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = {t.state for t in load_trials(tmp_path, "curve")}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED}
