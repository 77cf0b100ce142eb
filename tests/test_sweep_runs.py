"""Whole studies through `runners/train.py -m`, as a user runs them: pruning, resume after kill -9, results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeplab.search.records import ATTR_FAIL_REASON, ATTR_RESCUE_OF, ATTR_RETRY_OF, INTERRUPTED, counted
from sweeplab.search.rescue import own_trials
from tests.conftest import QUICK, ROOT, load_trials, run_cli, sweep, sweep_dirs

pytestmark = pytest.mark.slow  # every test here runs CLI sweeps or report commands


def test_pruned_trials_stop_training_early_and_the_study_goes_on(tmp_path):
    result, trials = sweep(
        [
            "-m",
            "hparams_search=optuna",
            "exp_name=prune",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.pruner.n_warmup_steps=1",
            "hydra.sweeper.n_trials=8",
            "trainer.max_epochs=4",
            "models.optimizer.lr=tag(log, interval(1e-3, 1e3))",
            *QUICK,
        ],  # half the range diverges
        tmp_path,
        study="prune",
    )
    assert len(counted(own_trials(trials))) == 8
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    for t in pruned:
        assert t.user_attrs["epochs_run"] < 4
        assert t.value == t.intermediate_values[max(t.intermediate_values)]  # stored with its last value
    # the preset's one rescue: the pruned trial that ranked best at its prune step, resumed there to epoch 4
    (rescue,) = [t for t in trials if ATTR_RESCUE_OF in t.user_attrs]
    rescued = next(t for t in pruned if t.number == rescue.user_attrs[ATTR_RESCUE_OF])
    assert rescue.state == TrialState.COMPLETE and rescue.params == rescued.params
    assert rescue.user_attrs["epochs_run"] == 4 - rescued.user_attrs["epochs_run"]
    assert all(t.user_attrs["epochs_run"] == 4 for t in complete if t is not rescue)
    # trial N ran as job N, in its own output dir
    sweep_dir = sweep_dirs(tmp_path, "prune")[-1]
    assert {p.name for p in sweep_dir.iterdir() if p.is_dir()} >= {str(t.number) for t in trials}
    best = max(complete, key=lambda t: t.value)
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())  # the stock plugin's file
    assert results == {"name": "optuna", "best_params": best.params, "best_value": pytest.approx(best.value)}
    stats = json.loads((sweep_dir / "study_stats.json").read_text())
    failed = [t for t in trials if t.state == TrialState.FAIL]  # a diverging trial the pruner cannot stop yet
    assert all("training diverged" in t.user_attrs["fail_reason"] for t in failed)
    assert {k: stats["trials"][k] for k in ("COMPLETE", "PRUNED", "FAIL")} == {
        "COMPLETE": len(complete),
        "PRUNED": len(pruned),
        "FAIL": len(failed),
    }
    best_file = json.loads((sweep_dir / "best_params.json").read_text())
    assert best_file["trial"] == best.number and "hparams_search" not in best_file["retrain"]
    assert "trial 7 " in result.stderr + result.stdout  # one status line per finished trial


def test_a_killed_sweep_resumes_to_exactly_n_trials_rerunning_the_interrupted_params(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_fast",
        "exp_name=resume",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.quick_validation.epochs=3",
        "+trainer.limit_train_batches=8",
        "+trainer.limit_val_batches=3",
        "+trainer.limit_test_batches=1",
        "trainer.accelerator=cpu",
        "callbacks.progress=null",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "runners/train.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            time.sleep(0.5)
            if _running_with_a_complete_trial(tmp_path / "studies" / "resume_fast.db"):
                break
        else:
            pytest.fail("the first sweep never got a trial running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = load_trials(tmp_path, "resume_fast")[-1]
    assert killed.state == TrialState.RUNNING

    trials = sweep(args, tmp_path, study="resume_fast").trials
    assert len(counted(trials)) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    closed = trials[killed.number]
    assert closed.state == TrialState.FAIL and closed.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    retry = [t for t in trials if t.user_attrs.get(ATTR_RETRY_OF) == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].number > killed.number
    # job numbers continue: the second sweep's job dirs are its own trials' numbers, none restarted at 0
    second = sweep_dirs(tmp_path, "resume")[-1]
    jobs = {int(p.name) for p in second.iterdir() if p.is_dir() and p.name.isdigit()}
    assert jobs and min(jobs) > killed.number - 1 and 0 not in jobs


def _running_with_a_complete_trial(db: Path) -> bool:
    """Read the sweep's database without Optuna (which would race it to create the tables)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            states = [row[0] for row in con.execute("SELECT state FROM trials ORDER BY number")]
            epochs = con.execute(
                "SELECT COUNT(*) FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'epochs_run'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return False
    return "COMPLETE" in states and states[-1] == "RUNNING" and epochs > 0


def test_lightning_hydra_templates_optuna_block_runs_with_only_its_keys_mapped(tmp_path):
    """The template's `hparams_search/mnist_optuna.yaml` (hydra.mode MULTIRUN, so no -m), sweeper default changed."""
    trials = sweep(
        [
            f"--config-dir={ROOT / 'tests' / 'configs'}",
            "hparams_search=mnist_optuna",
            "logger=[]",  # as lightning-hydra-template's own sweep test passes it
            "exp_name=stock",
            "hydra.sweeper.n_trials=3",
            "trainer.max_epochs=1",
            *QUICK,
        ],
        tmp_path,
        study="stock",  # study_name null: the app's job name (its exp_name)
    ).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {"models.optimizer.lr", "data.batch_size", "models.net.drop_rate"} == set(trials[0].params)
    study = optuna.load_study(study_name="stock", storage=f"sqlite:///{tmp_path}/studies/stock.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["sweeplab:metrics"] == ["val/acc"]


def test_a_two_objective_study_returns_a_pareto_front(tmp_path):
    swept = sweep(
        [
            "-m",
            "hparams_search=optuna",
            "exp_name=pareto",
            "hydra.sweeper.direction=[maximize,minimize]",
            "extra_objectives=[val/loss]",
            "hydra/sweeper/sampler=nsgaii",
            "hydra/sweeper/pruner=none",
            "hydra.sweeper.n_trials=4",
            "trainer.max_epochs=1",
            *QUICK,
        ],
        tmp_path,
        study="pareto",
    )
    sweep_dir = sweep_dirs(tmp_path, "pareto")[-1]
    front = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["solutions"]
    assert front
    trials = {t.number: t for t in swept.trials if t.state == TrialState.COMPLETE}
    for s in front:
        f1, loss = s["values"]
        dominated = any(
            t.values[0] >= f1 and t.values[1] <= loss and t.values != [f1, loss] for t in trials.values()
        )
        assert not dominated


def test_a_metric_that_is_never_logged_stops_the_study_after_the_first_epoch(tmp_path):
    result, trials = sweep(
        ["-m", "hparams_search=optuna_fast", "exp_name=nometric", "optimized_metric=val/f2", *QUICK],
        tmp_path,
        study="nometric_fast",
        ok=False,
    )
    assert result.returncode != 0
    assert "optimized_metric='val/f2' was never logged; metrics logged: " in result.stderr
    assert [t.state for t in trials] == [TrialState.FAIL]  # stopped at once, nothing queued to run again
    assert counted(trials) == []  # the config's fault takes no place of n_trials


def test_bad_search_space_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    result = run_cli(
        ["-m", "hparams_search=optuna", "models.optimizer.lr=tag(log, interval(0, 1e-2))"], cwd=tmp_path
    )
    assert result.returncode != 0
    assert (
        "models.optimizer.lr='tag(log, interval(0.0, 0.01))': a log range needs low > 0"
        in result.stderr.splitlines()
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()
