"""A trial's DDP ranks as its worker sees them (the whole path runs in test_ddp_trials.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweeplab.errors import SweeplabError
from sweeplab.launching.ranks import TRIAL_DIR_ENV, RankJoin, lost_rank, rank_command, refuse_rank_sweep


def test_only_a_killed_rank_makes_a_failed_trial_lost_not_another_killed_child(tmp_path):
    loader_worker = subprocess.Popen(["sleep", "30"])  # e.g. a data-loading worker its DataLoader killed
    rank = subprocess.Popen(["sleep", "30"])
    (tmp_path / ".rank_1.pid").write_text(str(rank.pid))
    os.kill(loader_worker.pid, signal.SIGKILL)
    assert lost_rank(tmp_path) is None  # the rank lives; the other child is not a rank
    (tmp_path / ".rank_1.pid").write_text(str(rank.pid))
    os.kill(rank.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{rank.pid}/stat").read_text().split()[2] != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost_rank(tmp_path) == f"DDP rank 1 of the trial (pid {rank.pid}) was killed by signal 9"
    assert not list(tmp_path.glob(".rank_*.pid"))
    loader_worker.wait()
    rank.wait()


def test_a_trials_process_carries_the_trials_own_command_for_its_ddp_ranks_never_the_sweeps():
    job = OmegaConf.create(
        {
            "hydra": {
                "overrides": {
                    "hydra": [
                        "hydra.sweeper.n_jobs=2",
                        "hydra/sweeper/pruner=threshold",
                        "hydra.mode=MULTIRUN",
                        "hydra.searchpath=[file:///extra]",
                        "hydra.job.chdir=true",
                    ],
                    "task": ["trainer.devices=2", "models.optimizer.lr=0.01", "+callbacks.x._target_=a.B"],
                }
            }
        }
    )
    sweep_argv = ["runners/train.py", "-m", "-cn", "other", "--config-path=../conf2", "hparams_search=optuna"]
    command = rank_command(job, sweep_argv)
    assert command == [
        "runners/train.py",
        "--config-path=../conf2",
        "--config-name=other",
        "hydra.searchpath=[file:///extra]",
        "hydra.job.chdir=true",
        "trainer.devices=2",
        "models.optimizer.lr=0.01",
        "+callbacks.x._target_=a.B",
        "+hydra.callbacks.sweeplab_rank._target_=sweeplab.launching.ranks.RankJoin",
    ]  # no -m, no sweeper keys: a plain run of the trial


def test_a_sweep_started_again_as_a_ddp_rank_stops_in_one_line_rather_than_sweep(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SweeplabError, match=r"DDP rank 1 .* set hydra\.sweeper\.devices_per_trial"):
        refuse_rank_sweep()
    monkeypatch.setenv("LOCAL_RANK", "0")
    refuse_rank_sweep()


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_a_rank_names_its_pid_in_its_trials_dir_and_rank_zero_or_a_plain_run_does_not(tmp_path, monkeypatch):
    join = RankJoin()
    monkeypatch.delenv(TRIAL_DIR_ENV, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    join.on_job_start(OmegaConf.create({}))  # a DDP run outside a study
    monkeypatch.setenv(TRIAL_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    join.on_job_start(OmegaConf.create({}))
    assert not list(tmp_path.glob(".rank_*.pid"))
    script = (
        "import os, sys; from omegaconf import OmegaConf; from sweeplab.launching.ranks import RankJoin; "
        "RankJoin().on_job_start(OmegaConf.create({})); sys.stdout.write('joined\\n'); sys.stdout.flush(); "
        "import time; time.sleep(30)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {script!r}])"],
        env={**os.environ, "LOCAL_RANK": "1", TRIAL_DIR_ENV: str(tmp_path)},
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".rank_1.pid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    rank = int((tmp_path / ".rank_1.pid").read_text())
    parent.kill()  # its rank 0 is gone: the rank stops within seconds instead of waiting on it
    parent.wait()
    while Path(f"/proc/{rank}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{rank}").exists()
