"""Any app's study is exported as the app composes it, and each setup of a command keeps its own study.

`tests/apps/nulls.py` is shaped like lightning-hydra-template: groups that default to `null` (`logger`,
`experiment`, `debug`), an optional group without a file (`local`), a group a command can drop
(`~callbacks`), list values. Its exports are checked by composing them with Hydra and comparing with the
config the trial ran with.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from sweeplab.errors import SweeplabError
from sweeplab.reporting.export import Flattener, export_preset
from sweeplab.search.opening import choose_study, open_study
from sweeplab.search.plan import make_plan
from sweeplab.search.records import ATTR_OVERRIDES, STUDY_CONFIG_DIR
from tests.conftest import CONF, ROOT, load_trials, run_cli, sweep, sweep_dirs

APP_CONF = ROOT / "tests" / "apps" / "conf_nulls"
# what a lightning-hydra-template user types: an experiment, a dropped group, an empty list, a list
SETUP = ["experiment=wide", "~callbacks", "tags=[]", "trainer.devices=[0,1]"]


def _compose_app(overrides: list[str]) -> DictConfig:
    """The nulls app's config for `overrides`, with its `hydra` node, from the directory a command runs in."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(APP_CONF), version_base="1.3"):
            return compose("nulls", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _job(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data


def _trial(overrides: list[str]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=1.0, user_attrs={ATTR_OVERRIDES: overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        ["x=0.5"],  # every null group left null, the optional group without a file left alone
        [*SETUP, "x=0.5", "model.width=8"],
        ["experiment=narrow", "debug=fast", "logger=csv", "x=1.0"],
        ["experiment=wide", "model=small", "~callbacks", "+extra.note=hi", "tags=[a,'b c']"],
    ],
)
def test_a_trial_of_an_app_with_null_groups_is_exported_and_commanded_as_it_ran(
    tmp_path, monkeypatch, overrides
):
    monkeypatch.chdir(tmp_path)  # the generated configs are found under the directory a command runs in
    ran = _job(_compose_app(overrides))
    flattener = Flattener(_compose_app, "tests/apps/nulls.py")
    trial = _trial(overrides)

    command = shlex.split(flattener.trial_command(trial))
    assert not any(a.endswith("=null") for a in command)  # Hydra refuses a group set to null on the line
    assert _job(_compose_app(command[2:])) == ran

    preset = export_preset(flattener, trial, "nulls", tmp_path, "test")
    printed = shlex.split(preset.command)
    assert printed[2:] == [*flattener.searchpath, "+preset=optimized/nulls"]
    assert _job(_compose_app(printed[2:])) == ran


def _app(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return sweep(["-m", *args], cwd, script="tests/apps/nulls.py", env=env, timeout=180, **kwargs).result


def _said(result: subprocess.CompletedProcess, prefix: str) -> str:
    return next(x for x in (result.stdout + result.stderr).splitlines() if prefix in x).split(prefix, 1)[1]


@pytest.mark.slow
def test_an_app_with_null_groups_is_swept_exported_retrained_as_printed_and_reported_with_its_own_config(
    tmp_path, monkeypatch
):
    result = _app(SETUP, tmp_path)
    output = result.stdout + result.stderr
    assert "export failed" not in output and "Traceback" not in output
    trials = load_trials(tmp_path, "nulls")
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    (sweep_dir,) = sweep_dirs(tmp_path)
    trial_dir = sweep_dir / str(best.number)  # trial N runs as job N
    ran = OmegaConf.to_container(OmegaConf.load(trial_dir / ".hydra" / "config.yaml"), resolve=False)

    command = shlex.split(_said(result, "retrain it: "))
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # as printed
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (run_dir,) = (p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    assert OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False) == ran

    # the report runner composes the app's own config (recorded with the study), not sweeplab's
    study = optuna.load_study(study_name="nulls", storage=f"sqlite:///{tmp_path / 'studies' / 'nulls.db'}")
    assert study.user_attrs[STUDY_CONFIG_DIR] == f"file://{APP_CONF}"
    (tmp_path / "studies" / "conf" / "preset" / "optimized" / "nulls.yaml").unlink()
    report = run_cli(["study_name=nulls", "out_dir=again"], cwd=tmp_path, script="runners/report.py")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "not produced" not in report.stdout + report.stderr
    assert shlex.split(_said(report, "best trial exported: ")) == command
    monkeypatch.chdir(tmp_path)
    assert _job(_compose_app(command[2:])) == ran  # the preset composes to the trial's config


@pytest.mark.slow
def test_two_experiments_of_an_app_without_a_study_name_get_two_studies_and_each_command_resumes_its_own(
    tmp_path,
):
    quiet = ["hydra.sweeper.report=false"]
    _app([*SETUP, "hydra.sweeper.n_trials=2", *quiet], tmp_path)
    other = _app(["experiment=narrow", "hydra.sweeper.n_trials=2", *quiet], tmp_path)
    said = _said(other, "study nulls holds another setup (")
    assert "experiment: wide -> narrow" in said and "callbacks: deleted -> (not set)" in said
    name = said.split("this sweep runs study ", 1)[1].split(" ", 1)[0]
    assert name.startswith("nulls-narrow-")
    assert sorted(p.stem for p in (tmp_path / "studies").glob("*.db")) == sorted(["nulls", name])
    assert {t.params["model.width"] for t in load_trials(tmp_path, name)} <= {4, 8}

    # the same command again, with more trials (the report's "more trials" path), continues its own study
    _app(["experiment=narrow", "hydra.sweeper.n_trials=3", *quiet], tmp_path)
    _app([*reversed(SETUP), "hydra.sweeper.n_trials=3", *quiet], tmp_path)  # the order of overrides aside
    assert len(load_trials(tmp_path, name)) == 3 and len(load_trials(tmp_path, "nulls")) == 3
    assert len(list((tmp_path / "studies").glob("*.db"))) == 2


def _group_options(name: str) -> list[str] | None:
    folder = CONF / name.replace(".", "/")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None


@pytest.fixture
def own_plan(compose_cfg, tmp_path):
    """make_plan for sweeplab's own `-m hparams_search=optuna_fast <arguments>`, as its sweeper makes it."""

    def _plan(arguments=(), hydra=()):
        cfg = compose_cfg(["hparams_search=optuna_fast", *arguments, *hydra], keep_hydra=True)
        args = ["hparams_search=optuna_fast", *arguments]
        return make_plan(cfg.hydra.sweeper, cfg, args, _group_options, root_dir=str(tmp_path))

    return _plan


def test_sweeplabs_own_app_with_another_max_epochs_gets_its_own_study_and_the_same_command_resumes_it(
    own_plan, tmp_path
):
    first = choose_study(own_plan(), str(tmp_path))
    assert first.study_name == "digits_test_resnet_fast"
    open_study(first)
    # more trials, more workers, another pruner: the same study
    same = own_plan(
        hydra=["hydra.sweeper.n_trials=30", "hydra.sweeper.n_jobs=2", "hydra/sweeper/pruner=median"]
    )
    assert choose_study(same, str(tmp_path)).study_name == "digits_test_resnet_fast"

    longer = choose_study(own_plan(["trainer.max_epochs=5"]), str(tmp_path))
    assert longer.study_name.startswith("digits_test_resnet_fast-") and longer.study_name != first.study_name
    assert longer.storage_url.endswith(f"/studies/{longer.study_name}.db")
    open_study(longer)
    again = own_plan(["trainer.max_epochs=5"], hydra=["hydra.sweeper.n_trials=30"])
    assert choose_study(again, str(tmp_path)).study_name == longer.study_name
    # a shorter quick validation is another budget too
    quick = own_plan(hydra=["hydra.sweeper.quick_validation.epochs=2"])
    assert choose_study(quick, str(tmp_path)).study_name not in (first.study_name, longer.study_name)


def test_a_named_study_run_with_other_fixed_settings_is_refused_in_one_line_unless_allowed(own_plan):
    named = ["hydra.sweeper.study_name=doc"]
    open_study(own_plan(hydra=named))
    changed = own_plan(["trainer.max_epochs=5", "+trainer.limit_train_batches=3"], hydra=named)
    assert choose_study(changed, "unused") is changed  # a named study is never renamed
    with pytest.raises(SweeplabError) as refused:
        open_study(changed)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("study 'doc' in sqlite:///")
    assert "was run with other fixed settings (trainer.limit_train_batches: (not set) -> 3; " in message
    assert "trainer.max_epochs: (not set) -> 5)" in message and "allow_space_change=true" in message
    allowed = own_plan(
        ["trainer.max_epochs=5", "+trainer.limit_train_batches=3"],
        hydra=[*named, "hydra.sweeper.allow_space_change=true"],
    )
    assert open_study(allowed).study_name == "doc"
