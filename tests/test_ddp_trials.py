"""Trials that train on several devices: Lightning's DDP (gloo, 2 CPU processes per trial) inside a study.

Each trial is one training over 2 ranks. Under `ddp` rank 1 is started by Lightning running the trial's own
command (`python -m sweeplab.launching.ranks <job dir>`, never the sweep's), trains the trial's params, and
follows rank 0's pruning decision. Under `ddp_spawn` both ranks are processes Lightning spawns from the pickled trainer: rank 0
opens the trial from its address, and hands the fit's record back to the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sweeplab.launching.ranks
from sweeplab.launching.ranks import RANK_JOB
from sweeplab.search.records import ATTR_PAUSED, ATTR_RESCUE_OF, ATTR_RESUMED
from tests.conftest import QUICK, ROOT, load_trials, sweep, sweep_dirs

pytestmark = pytest.mark.slow

DDP = [
    "-m",
    "hparams_search=optuna_fast",
    "trainer.devices=2",  # the preset gives each trial as many devices (hydra.sweeper.devices_per_trial)
    "hydra.sweeper.quick_validation.enabled=false",
    "hydra.sweeper.report=false",
    "+callbacks.ranks._target_=tests.faults.RecordRank",
    *QUICK,
]
ENV = {"PYTHONPATH": str(ROOT)}
RANKS_ENTRY = Path(sweeplab.launching.ranks.__file__).parent  # the command of a trial's extra rank
BOTH = pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])  # Lightning's default launcher, and spawn


def rank_logs(strategy: str) -> list[str]:
    """The logs of a trial's extra ranks: Hydra's, for the ranks Lightning starts by running the command."""
    return ["train_ddp_process_1.log"] if strategy == "ddp" else []


def processes_in(cwd: Path) -> list[int]:
    """Live processes started in `cwd` (the sweep, its workers, their ranks)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == cwd and "Z" not in (proc / "stat").read_text().split()[2]:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def no_process_left(cwd: Path) -> list[int]:
    """The processes still alive in `cwd` a few seconds after the sweep ended (a rank watches its rank 0
    each second)."""
    deadline = time.monotonic() + 5
    while processes_in(cwd) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_in(cwd)


def ranks(trial_dir: Path) -> list[dict]:
    return [json.loads((trial_dir / f"rank_{r}.json").read_text()) for r in (0, 1)]


# ddp_spawn's pruned trials: the rescue test below prunes one and resumes it on both ranks
@pytest.mark.parametrize("strategy", ["ddp"])
def test_every_ddp_trial_pruned_at_its_first_report_is_stored_once_pruned_after_one_epoch(tmp_path, strategy):
    result, trials = sweep(
        [
            *DDP,
            f"trainer.strategy={strategy}",
            "exp_name=ddp_pruned",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=3",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=2.0",  # no f1 reaches 2: every trial is pruned at its first report
        ],
        tmp_path,
        study="ddp_pruned_fast",
        env=ENV,
    )
    assert len(trials) == 2
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in trials)
    sweep_dir = sweep_dirs(tmp_path, "ddp_pruned")[-1]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    for trial in trials:
        seen = ranks(sweep_dir / str(trial.number))
        assert [r["world_size"] for r in seen] == [2, 2]
        # both ranks trained the trial's own params and stopped after the same, first, epoch
        assert [r["lr"] for r in seen] == [trial.params["models.optimizer.lr"]] * 2
        assert [r["epochs"] for r in seen] == [1, 1]
        for log in rank_logs(strategy):
            assert (sweep_dir / str(trial.number) / log).is_file()
        command = seen[1]["command"]  # Lightning ran the trial's own command for rank 1, never the sweep's
        assert command[1:3] == [str(RANKS_ENTRY), str(sweep_dir / str(trial.number))], command
        assert all(a.startswith("hydra.") for a in command[3:]), command
        assert not (sweep_dir / str(trial.number) / RANK_JOB).exists()
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert (metrics["epochs_run"], metrics["pruned_at_epoch"]) == (1, 1)  # rank 0's record, handed back
    assert len(list((tmp_path / "studies").glob("*.db"))) == 1
    assert no_process_left(tmp_path) == []
    assert "2 devices per trial" in result.stderr + result.stdout


@pytest.mark.parametrize("strategy", ["ddp"])  # under ddp_spawn the rescue below completes a synced trial
def test_a_completed_ddp_trial_stores_the_metric_synced_over_its_ranks(tmp_path, strategy):
    _, trials = sweep(
        [
            *DDP,
            f"trainer.strategy={strategy}",
            "exp_name=ddp_done",
            "hydra.sweeper.n_trials=1",
            "trainer.max_epochs=1",
            "hydra/sweeper/pruner=none",
        ],
        tmp_path,
        study="ddp_done_fast",
        env=ENV,
    )
    (trial,) = trials
    assert trial.state.name == "COMPLETE"
    trial_dir = sweep_dirs(tmp_path, "ddp_done")[-1] / "0"
    seen = ranks(trial_dir)
    assert seen[0]["value"] == seen[1]["value"] == pytest.approx(trial.value)
    assert json.loads((trial_dir / "metrics.json").read_text())["value"] == pytest.approx(trial.value)
    assert no_process_left(tmp_path) == []


@BOTH
def test_a_killed_rank_fails_its_trial_which_is_run_again_and_the_sweep_goes_on(tmp_path, strategy):
    result, trials = sweep(
        [
            *DDP,
            f"trainer.strategy={strategy}",
            "exp_name=ddp_killed",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=1",
            "hydra/sweeper/pruner=none",
            "+callbacks.kill._target_=tests.faults.KillRank",
            "+callbacks.kill.trial=0",
        ],
        tmp_path,
        study="ddp_killed_fast",
        env=ENV,
        timeout=240,
    )
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL"
    assert states.count("COMPLETE") == 2  # the lost trial does not count: 2 complete trials all the same
    assert trials[0].params == trials[1].params  # run again with the same params
    assert no_process_left(tmp_path) == []


@pytest.mark.parametrize(
    ("strategy", "signum", "code"),
    [("ddp", signal.SIGTERM, 143), ("ddp", signal.SIGINT, 130), ("ddp_spawn", signal.SIGTERM, 143)],
)
def test_sigterm_or_ctrl_c_stops_every_rank_of_a_running_ddp_trial(tmp_path, strategy, signum, code):
    out = (tmp_path / "sweep.log").open("w")
    args = [
        *DDP,
        f"trainer.strategy={strategy}",
        "exp_name=ddp_stop",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=50",
        "hydra/sweeper/pruner=none",
    ]
    sweep_proc = subprocess.Popen(
        [sys.executable, str(ROOT / "runners" / "train.py"), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **ENV},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob("multirun/**/0/csv/**/metrics.csv")):  # an epoch done: both ranks train
        assert sweep_proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()
        time.sleep(0.2)
    os.killpg(sweep_proc.pid, signum)  # as a terminal's Ctrl-C or a scheduler's SIGTERM reaches the group
    assert sweep_proc.wait(timeout=60) == code, (tmp_path / "sweep.log").read_text()[-3000:]
    assert no_process_left(tmp_path) == []


@BOTH
def test_a_rescue_resumes_a_pruned_ddp_trial_from_its_one_paused_checkpoint_on_both_ranks(tmp_path, strategy):
    _, trials = sweep(
        [
            *DDP,
            f"trainer.strategy={strategy}",
            "exp_name=ddp_rescue",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=2",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=2.0",
            "hydra.sweeper.rescue.top_k=1",
        ],
        tmp_path,
        study="ddp_rescue_fast",
        env=ENV,
    )
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE"]
    rescue = trials[2]
    paused = trials[rescue.user_attrs[ATTR_RESCUE_OF]]
    assert rescue.user_attrs[ATTR_RESUMED]["step"] == 1
    assert rescue.params == paused.params
    sweep_dir = sweep_dirs(tmp_path, "ddp_rescue")[-1]
    paused_dir = sweep_dir / str(paused.number)
    assert Path(paused.user_attrs[ATTR_PAUSED]["checkpoint"]).parent == paused_dir / "checkpoints"
    logs = {p.name: p.read_text() for p in paused_dir.glob("*.log")}
    said = {name: text.count(f"trial {paused.number} paused:") for name, text in logs.items()}
    assert said == {"ddp_rescue.log": 1, "worker.log": 0, **dict.fromkeys(rank_logs(strategy), 0)}  # rank 0
    seen = ranks(sweep_dir / str(rescue.number))
    assert [r["epochs"] for r in seen] == [2, 2]  # both ranks resumed after epoch 1 and ran epoch 2
    assert [r["lr"] for r in seen] == [paused.params["models.optimizer.lr"]] * 2
    assert seen[0]["value"] == seen[1]["value"]
    assert no_process_left(tmp_path) == []


@pytest.mark.parametrize(
    ("strategy", "bounds", "state", "steps"),
    [
        ("ddp", ["hydra.sweeper.pruner.lower=0.0"], "COMPLETE", [1, 2]),  # f1 is never below 0: never pruned
        (
            "ddp",
            ["hydra.sweeper.pruner.lower=2.0"],
            "PRUNED",
            [1],
        ),  # always below 2: pruned in its first fold
        ("ddp_spawn", ["hydra.sweeper.pruner.lower=2.0"], "PRUNED", [1]),
    ],
)
def test_a_k_fold_ddp_trial_trains_its_folds_on_both_ranks_which_stop_together(
    tmp_path, strategy, bounds, state, steps
):
    _, trials = sweep(
        [
            *DDP,
            f"trainer.strategy={strategy}",
            "exp_name=ddp_folds",
            "data.folds=2",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=1",
            "hydra/sweeper/pruner=threshold",
            *bounds,
        ],
        tmp_path,
        study="ddp_folds_fast",
        env=ENV,
    )
    assert [t.state.name for t in trials] == [state, state]
    assert all(sorted(t.intermediate_values) == steps for t in trials)  # step = fold * max_epochs + epoch
    sweep_dir = sweep_dirs(tmp_path, "ddp_folds")[-1]
    for trial in trials:
        assert [r["world_size"] for r in ranks(sweep_dir / str(trial.number))] == [2, 2]
        folds = sorted(p.name for p in (sweep_dir / str(trial.number)).glob("fold_*"))
        assert folds == [f"fold_{i}" for i in range(len(steps))]  # a pruned trial's ranks start no 2nd fold
    assert no_process_left(tmp_path) == []


@pytest.mark.parametrize("strategy", ["ddp"])  # only ddp runs the command again for rank 1
def test_the_ranks_of_an_app_run_as_a_module_run_the_trials_own_command_and_each_trial_completes(
    tmp_path, strategy
):
    """`python -m app`: Lightning would run `-m app` again for rank 1; the trial's command is its own."""
    args = ["-m", "tests.apps.lit", "-m", "epochs=1", "step_s=0", "devices=2", f"strategy={strategy}"]
    result = subprocess.run(
        [sys.executable, *args, "hydra.sweeper.devices_per_trial=2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **ENV},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_trials(tmp_path, "lit")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], [
        (t.state, t.user_attrs) for t in trials
    ]
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/**/rank_0.cmd"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        command = (job / "rank_1.cmd").read_text().split("\n")
        assert command[1:3] == [str(RANKS_ENTRY), str(job)], command
        assert "tests.apps.lit" not in command  # never the sweep's command
        assert not (job / RANK_JOB).exists()
    assert no_process_left(tmp_path) == []
