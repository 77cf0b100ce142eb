"""A Lightning app shaped like lightning-hydra-template (tests/apps/template) is swept first class.

Pruning is added by config alone (`callbacks.prune: {_target_: sweeplab.PruningCallback, monitor: val/acc}`);
a trial is stored PRUNED only where its trainer really stopped; the console has one line per trial whatever
the app's job logging looks like; a study of any size ends with its files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from optuna.trial import TrialState

import sweeplab
from sweeplab.errors import SweeplabError
from sweeplab.launching.executors import Outcome
from sweeplab.search.records import (
    ATTR_CHECKPOINTS,
    ATTR_EPOCHS,
    ATTR_MAX_EPOCHS,
    ATTR_PRUNE_REFUSED,
    ATTR_PRUNED_AT,
)
from tests.apps.template.blobs import BlobsDataModule, BlobsLitModule
from tests.conftest import ROOT, Swept, load_trials, run_cli, sweep

TEMPLATE = "tests/apps/template/train.py"
PRUNE = "+callbacks.prune={_target_: sweeplab.PruningCallback, monitor: val/acc}"
STATUS = re.compile(r"\[\d+/\d+\] trial \d+ ")
CHATTER = ("Test metric", "task_name:", "GPU available", "Epoch ", "Trainable params", "Instantiating")


class Trial:
    """A study trial whose pruner says stop from step `prune_at` on (the callback's view of `StudyTrial`)."""

    number = 0
    pause_keep = 0
    resumable = False

    def __init__(self, prune_at: int) -> None:
        self.prune_at = prune_at
        self.attrs: dict[str, Any] = {}
        self.values: dict[int, float] = {}

    def set(self, key: str, value: Any) -> None:
        self.attrs[key] = value

    def report(self, value: float, step: int, last: bool = False) -> bool:
        self.values[step] = value
        if step >= self.prune_at and not last:
            self.attrs[ATTR_PRUNED_AT] = step
            return True
        return False

    def record(self, value: float, step: int) -> None:
        self.values[step] = value
        self.attrs[ATTR_PRUNED_AT] = step

    def unprune(self) -> None:
        self.attrs[ATTR_PRUNED_AT] = None

    def record_checkpoints(self, paths: list[str]) -> None:
        self.attrs[ATTR_CHECKPOINTS] = [*self.attrs.get(ATTR_CHECKPOINTS, []), *paths]


def _fit(callback: pl.Callback, min_epochs: int | None = None, max_epochs: int = 5) -> pl.Trainer:
    trainer = pl.Trainer(
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(BlobsLitModule(lr=0.05), datamodule=BlobsDataModule(n=128, batch_size=64))
    return trainer


@pytest.fixture
def in_study(monkeypatch):
    """The callback built from an app's config finds this trial as its job's (as inside a study)."""

    def _trial(prune_at: int) -> Trial:
        trial = Trial(prune_at)
        monkeypatch.setattr("sweeplab.search.trial.job_trial", lambda: trial)
        return trial

    return _trial


def test_the_callback_from_config_stops_the_fit_where_the_pruner_says(in_study):
    trial = in_study(prune_at=2)
    trainer = _fit(instantiate({"_target_": "sweeplab.PruningCallback", "monitor": "val/acc"}))
    assert trainer.current_epoch == 2  # epochs completed
    assert trial.attrs[ATTR_PRUNED_AT] == 2 and trial.attrs[ATTR_EPOCHS] == 2
    assert trial.attrs[ATTR_MAX_EPOCHS] == 5  # what the report's savings compare with
    assert ATTR_PRUNE_REFUSED not in trial.attrs and sorted(trial.values) == [1, 2]


def test_a_trainer_held_by_min_epochs_is_pruned_where_it_really_stopped(in_study):
    trial = in_study(prune_at=1)
    trainer = _fit(sweeplab.PruningCallback(monitor="val/acc"), min_epochs=3)
    assert trainer.current_epoch == 3
    assert trial.attrs[ATTR_PRUNED_AT] == 3 and trial.attrs[ATTR_EPOCHS] == 3
    assert trial.attrs[ATTR_PRUNE_REFUSED] == {
        "asked_at": 1,
        "stopped_at": 3,
        "epochs_run": 3,
        "why": "trainer.min_epochs=3",
    }
    assert sorted(trial.values) == [1, 2, 3]  # its curve as it really ran


def test_a_trainer_that_never_stops_leaves_its_trial_unpruned(in_study):
    trial = in_study(prune_at=1)
    trainer = _fit(sweeplab.PruningCallback(monitor="val/acc"), min_epochs=5)
    assert trainer.current_epoch == 5
    assert trial.attrs[ATTR_PRUNED_AT] is None and trial.attrs[ATTR_EPOCHS] == 5  # stored COMPLETE
    assert trial.attrs[ATTR_PRUNE_REFUSED]["stopped_at"] is None


class _FailsAtEpoch(BlobsLitModule):
    def on_train_epoch_start(self) -> None:
        if self.current_epoch == 2:
            raise RuntimeError("boom")


@pytest.mark.parametrize("fails", [False, True], ids=["fit ends", "fit raises"])
def test_the_callback_tells_the_trial_which_checkpoints_the_apps_model_checkpoint_saved(
    in_study, tmp_path, fails
):
    trial = in_study(prune_at=99)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/acc", mode="max")
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[sweeplab.PruningCallback(monitor="val/acc"), saver],
    )
    module = (_FailsAtEpoch if fails else BlobsLitModule)(lr=0.05)
    if fails:
        with pytest.raises(RuntimeError, match="boom"):
            trainer.fit(module, datamodule=BlobsDataModule(n=128, batch_size=64))
    else:
        trainer.fit(module, datamodule=BlobsDataModule(n=128, batch_size=64))
    assert trial.attrs[ATTR_CHECKPOINTS] == [str((tmp_path / "best.ckpt").resolve())]


def test_outside_a_study_the_callback_does_nothing():
    trainer = _fit(sweeplab.PruningCallback(monitor="val/never_logged"))
    assert trainer.current_epoch == 5


def test_a_monitor_the_module_never_logs_is_one_line(in_study):
    in_study(prune_at=99)
    with pytest.raises(
        SweeplabError, match=r"^sweeplab.PruningCallback: monitor='val/acx' was never logged; "
    ):
        _fit(sweeplab.PruningCallback(monitor="val/acx"))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({}, r"monitor is missing; set it to the metric to prune on"),
        ({"monitr": "val/acc"}, r"unknown argument 'monitr' \(did you mean monitor\?\)"),
    ],
)
def test_a_misused_callback_fails_its_trial_with_one_config_line(node, message):
    with pytest.raises(InstantiationException) as raised:
        instantiate({"_target_": "sweeplab.PruningCallback", **node})
    outcome = Outcome.of(JobReturn(status=JobStatus.FAILED, _return_value=raised.value))
    assert outcome.config_error  # the sweep stops with this line: every trial would fail alike
    assert re.match(rf"^SweeplabError: sweeplab.PruningCallback: {message}", outcome.error)
    assert "\n" not in outcome.error


def test_the_plugins_sweep_returns_none_as_the_stock_plugins_does(monkeypatch):
    from hydra_plugins.sweeplab_sweeper.sweeplab_sweeper import SweeplabSweeper
    from sweeplab.sweeper import StudySweeper

    monkeypatch.setattr(StudySweeper, "_sweep", lambda self, arguments: object())
    face = SweeplabSweeper()
    face.study = StudySweeper.__new__(StudySweeper)
    assert face.sweep([]) is None


# -- through the command line, as a template user runs it ---------------------------------------------


def _template(args: list[str], cwd: Path, ok: bool = True) -> Swept:
    return sweep(
        ["hparams_search=optuna", *args], cwd, "train", ok=ok, script=TEMPLATE, env=_app_env(), timeout=400
    )


def _sweep_dir(root: Path) -> Path:
    """The template's sweep dir: logs/train/multiruns/<time> (not the `latest` link beside it)."""
    (found,) = [p for p in (root / "logs" / "train" / "multiruns").iterdir() if not p.is_symlink()]
    return found


def _console(result: Any) -> str:
    return result.stdout + result.stderr


@pytest.mark.slow
def test_a_template_app_is_pruned_by_config_and_its_console_has_one_line_per_trial(tmp_path):
    result, trials = _template([PRUNE, "hydra.sweeper.report=false"], tmp_path)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and len(trials) == 6
    for t in pruned:  # stopped at the epoch the pruner said, not run on
        assert t.user_attrs[ATTR_EPOCHS] == t.user_attrs[ATTR_PRUNED_AT] == max(t.intermediate_values) < 6
        assert t.user_attrs[ATTR_MAX_EPOCHS] == 6
    console = _console(result)
    assert len(STATUS.findall(console)) == 6
    assert not [c for c in CHATTER if c in console], console[-3000:]
    sweep_dir = _sweep_dir(tmp_path)
    assert all("Test metric" in (sweep_dir / str(t.number) / "worker.log").read_text() for t in trials)
    stats = json.loads((sweep_dir / "study_stats.json").read_text())
    assert 0 < stats["epochs"]["saved_fraction"] < 1
    # the callback told the study what the app's ModelCheckpoint saved: only the 3 best keep it
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    assert all(t.user_attrs.get(ATTR_CHECKPOINTS) for t in trials)
    on_disk = {t.number for t in trials if any(Path(p).is_file() for p in t.user_attrs[ATTR_CHECKPOINTS])}
    assert on_disk == {t.number for t in complete[:3]}


@pytest.mark.slow
def test_a_trainer_held_by_min_epochs_is_said_once_and_saves_no_epochs(tmp_path):
    result, trials = _template([PRUNE, "experiment=example", "hydra.sweeper.report=false"], tmp_path)
    refused = [t for t in trials if ATTR_PRUNE_REFUSED in t.user_attrs]
    assert refused, "the pruner never said stop"
    assert all(t.state == TrialState.COMPLETE and t.user_attrs[ATTR_EPOCHS] == 6 for t in trials)
    console = _console(result)
    said = [line for line in console.splitlines() if "its trainer went on (trainer.min_epochs=6)" in line]
    assert len(said) == 1, console[-3000:]
    stats = json.loads((_sweep_dir(tmp_path) / "study_stats.json").read_text())
    assert stats["epochs"]["saved_fraction"] == 0


@pytest.mark.slow
def test_a_one_trial_study_of_a_template_app_ends_with_its_report(tmp_path):
    result, trials = _template(["hydra.sweeper.n_trials=1"], tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    text = (_sweep_dir(tmp_path) / "report.md").read_text()
    assert "epochs run: not reported" in text and "not drawn" in text


@pytest.mark.slow
def test_a_monitor_never_logged_stops_the_study_with_one_line(tmp_path):
    bad = PRUNE.replace("val/acc", "val/acx")
    result, _ = _template([bad, "hydra.sweeper.report=false"], tmp_path, ok=False)
    assert result.returncode == 1
    assert "sweeplab.PruningCallback: monitor='val/acx' was never logged; metrics logged: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_hydra_verbose_keeps_the_trials_output_on_the_console(tmp_path):
    result, _ = _template(
        ["hydra.sweeper.n_trials=1", "hydra.sweeper.report=false", "hydra.verbose=true"], tmp_path
    )
    assert "Test metric" in _console(result)


@pytest.mark.slow
def test_a_grid_of_one_point_ends_with_its_report_and_the_plots_it_could_not_draw_noted(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["-m", "hydra/sweeper/sampler=grid", "hydra.sweeper.params=null", "x=1.5", "y=choice(0)"]
    result, trials = sweep(args, tmp_path, "sphere", script="tests/apps/sphere.py", env=env, timeout=300)
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    (report,) = [p for p in tmp_path.glob("multirun/*/*/report.md") if not p.parent.is_symlink()]
    assert "not drawn" in report.read_text()


def _said(result: Any, prefix: str) -> str:
    return next(x for x in _console(result).splitlines() if prefix in x).split(prefix, 1)[1]


def _app_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_template_app_is_exported_retrained_as_printed_reported_and_two_experiments_get_two_studies(
    tmp_path,
):
    """The whole path of a lightning-hydra-template user: a study pruned by config, its best trial exported
    and retrained from the printed command to the same config, `runners/report.py` exporting it again with
    the app's config, and another experiment (`min_epochs` set) without a study name in a study of its own
    while the first command resumes the first study."""
    result, trials = _template([PRUNE, "hydra.sweeper.n_trials=4"], tmp_path)
    assert "export failed" not in _console(result)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    trial_config = (_sweep_dir(tmp_path) / str(best.number) / ".hydra" / "config.yaml").read_text()

    command = shlex.split(_said(result, "retrain it: "))
    rerun = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, **_app_env()}, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (run_config,) = (tmp_path / "logs" / "train" / "runs").glob("*/.hydra/config.yaml")
    assert run_config.read_text() == trial_config  # the same config, key for key

    (tmp_path / "studies" / "conf" / "preset" / "optimized" / "train.yaml").unlink()
    report = run_cli(["study_name=train", "out_dir=again"], cwd=tmp_path, script="runners/report.py")
    assert report.returncode == 0, report.stderr[-3000:]
    assert shlex.split(_said(report, "best trial exported: ")) == command
    assert (tmp_path / "again" / "report.html").is_file()

    quiet = "hydra.sweeper.report=false"
    other, _ = _template([PRUNE, "experiment=example", "hydra.sweeper.n_trials=2", quiet], tmp_path)
    said = _said(other, "study train holds another setup (")
    name = said.split("this sweep runs study ", 1)[1].split(" ", 1)[0]
    assert name.startswith("train-example-")
    assert len(load_trials(tmp_path, name)) == 2
    _template([PRUNE, "hydra.sweeper.n_trials=5", quiet], tmp_path)  # the first command, more trials
    assert len(load_trials(tmp_path, "train")) == 5 and len(load_trials(tmp_path, name)) == 2
