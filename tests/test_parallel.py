"""Studies with several trials at once (n_jobs > 1): no batch barrier, workers that die, injected faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from sweeplab.errors import SweeplabError
from sweeplab.launching.executors import assign_devices
from sweeplab.search.coordination import writes_report
from sweeplab.search.liveness import Heartbeats, recover
from sweeplab.search.records import (
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_LOST,
    ATTR_PID,
    ATTR_RETRY_OF,
    ATTR_WORKER_PID,
    INTERRUPTED,
    counted,
)
from sweeplab.search.storage import open_storage
from tests.conftest import (
    QUICK,
    ROOT,
    age_trials,
    fresh_heartbeats,
    load_trials,
    sweep,
    sweep_dirs,
)

PARALLEL = ["-m", "hparams_search=optuna_fast", "hydra.sweeper.n_jobs=2", *QUICK]


def _max_overlap(trials) -> int:
    """The most trials that were running at one moment."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials],
        key=lambda e: (e[0], e[1]),
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _background_sweep(tmp_path: Path, name: str) -> tuple[subprocess.Popen, list[str]]:
    """A 4-trial, 2-worker study with slower trials (30 batches an epoch), started in the background."""
    args = [
        *PARALLEL,
        f"exp_name={name}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.quick_validation.epochs=3",
        "++trainer.limit_train_batches=30",
    ]
    log = (tmp_path / "sweep.log").open("w")
    sweep = subprocess.Popen(
        [sys.executable, str(ROOT / "runners/train.py"), *args],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return sweep, args


def _wait_for_running(tmp_path: Path, study: str, sweep: subprocess.Popen, enough) -> list:
    """Poll the study until `enough(running trials)` holds (or the sweep ends, or 4 minutes pass)."""
    db = tmp_path / "studies" / f"{study}.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.5)
        if not db.exists():
            continue
        try:
            running = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").get_trials(
                states=(TrialState.RUNNING,)
            )
        except Exception:  # the sweeper may be creating the tables right now
            continue
        if enough(running):
            return running
    raise AssertionError((tmp_path / "sweep.log").read_text()[-3000:])


@pytest.mark.slow
def test_two_workers_run_two_trials_at_once_each_in_its_own_process(tmp_path):
    result, trials = sweep(
        [*PARALLEL, "exp_name=par", "hydra.sweeper.n_trials=4"], tmp_path, study="par_fast"
    )
    assert len(counted(trials)) == 4
    assert _max_overlap(trials) == 2  # overlapping, and never more than n_jobs
    pids = {t.user_attrs[ATTR_WORKER_PID] for t in trials}
    assert len(pids) == 4  # one process per trial ...
    assert all(f"trial {t.number} started in worker" in result.stdout + result.stderr for t in trials)
    sweep_dir = sweep_dirs(tmp_path, "par")[-1]
    # ... its output in its dir
    assert all((sweep_dir / str(t.number) / "worker.log").is_file() for t in trials)
    assert (sweep_dir / "report.md").is_file()


@pytest.mark.slow
def test_synchronous_sweep_starts_a_batch_only_when_the_whole_previous_batch_ended(tmp_path):
    args = [*PARALLEL, "exp_name=sync", "hydra.sweeper.n_trials=4", "hydra.sweeper.synchronous=true"]
    swept = sweep([*args, "hydra.sweeper.report=false"], tmp_path, study="sync_fast")
    trials = sorted(swept.trials, key=lambda t: t.number)
    assert len(counted(trials)) == 4 and _max_overlap(trials) == 2
    first, second = trials[:2], trials[2:]
    assert min(t.datetime_start for t in second) >= max(t.datetime_complete for t in first)


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_is_rerun_and_the_study_still_has_n_trials(tmp_path):
    background, _ = _background_sweep(tmp_path, "kill")
    running = _wait_for_running(
        tmp_path, "kill_fast", background, lambda ts: any(t.user_attrs.get("epochs_run") for t in ts)
    )
    victim = next(t for t in running if t.user_attrs.get("epochs_run"))
    os.kill(victim.user_attrs[ATTR_WORKER_PID], signal.SIGKILL)
    assert background.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    trials = load_trials(tmp_path, "kill_fast")
    assert len(counted(trials)) == 4
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and killed.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    assert "SIGKILL" in killed.user_attrs[ATTR_LOST]
    rerun = [t for t in trials if t.user_attrs.get(ATTR_RETRY_OF) == victim.number]
    assert len(rerun) == 1 and rerun[0].params == killed.params and rerun[0].state != TrialState.RUNNING


@pytest.mark.slow
def test_a_raising_a_diverging_and_an_out_of_memory_trial_fail_with_their_reasons_and_the_study_goes_on(
    tmp_path,
):
    swept = sweep(
        [
            *PARALLEL,
            "exp_name=faults",
            "hydra.sweeper.n_trials=5",
            "hydra.sweeper.max_failure_rate=0.6",
            "hydra.sweeper.quick_validation.epochs=2",
            "+callbacks.fault._target_=tests.faults.InjectFault",
            "+callbacks.fault.exception=1",
            "+callbacks.fault.nan=2",
            "+callbacks.fault.oom=3",
        ],
        tmp_path,
        study="faults_fast",
        env={"PYTHONPATH": str(ROOT)},
    )
    trials = {t.number: t for t in swept.trials}
    assert len(counted(trials.values())) == 5
    reasons = {n: trials[n].user_attrs.get(ATTR_FAIL_REASON) for n in (1, 2, 3)}
    assert reasons[1] == "RuntimeError: injected failure"
    assert reasons[2].startswith("FloatingPointError: ") and "is NaN after epoch 2" in reasons[2]
    assert reasons[3].startswith("OutOfMemoryError: CUDA out of memory")
    assert all(trials[n].state == TrialState.FAIL for n in (1, 2, 3))
    assert {trials[n].state for n in (0, 4)} <= {TrialState.COMPLETE, TrialState.PRUNED}


def test_workers_get_gpus_round_robin_and_share_them_only_when_asked():
    assert assign_devices(4, ["0", "1"], share=True) == ["0", "1", "0", "1"]
    assert assign_devices(2, ["3", "5"], share=False) == ["3", "5"]
    assert assign_devices(3, [], share=False) == [None, None, None]
    with pytest.raises(SweeplabError, match=r"hydra.sweeper.n_jobs=3: .*set hydra.sweeper.share_gpus=true"):
        assign_devices(3, ["0", "1"], share=False)


def test_worker_i_of_a_study_with_k_devices_per_trial_gets_gpus_i_k_to_i_k_plus_k():
    assert assign_devices(2, ["0", "1", "2", "3"], share=False, per_trial=2) == ["0,1", "2,3"]
    assert assign_devices(1, ["4", "6"], share=False, per_trial=2) == ["4,6"]
    assert assign_devices(3, ["0", "1", "2", "3"], share=True, per_trial=2) == ["0,1", "2,3", "0,1"]
    assert assign_devices(2, [], share=False, per_trial=4) == [None, None]  # the CPU: processes, no GPUs
    with pytest.raises(
        SweeplabError, match=r"^hydra\.sweeper\.n_jobs=2: 2 worker\(s\) x 2 GPU\(s\) per trial is "
    ):
        assign_devices(2, ["0", "1", "2"], share=False, per_trial=2)
    with pytest.raises(
        SweeplabError, match=r"^hydra\.sweeper\.devices_per_trial=4: is more than the 2 visible"
    ):
        assign_devices(1, ["0", "1"], share=True, per_trial=4)


@pytest.mark.parametrize(
    ("preset", "devices", "per_trial"),
    [
        *[(preset, "2", 2) for preset in ("optuna", "optuna_multi", "optuna_focused", "optuna_ultimate")],
        *[
            ("optuna_fast", devices, n)
            for devices, n in (("[0,1,2]", 3), ("'0,1'", 2), ("auto", 1), ("-1", 1))
        ],
    ],
)
def test_a_study_preset_gives_each_trial_as_many_devices_as_trainer_devices_asks_for(
    compose_cfg, preset, devices, per_trial
):
    cfg = compose_cfg([f"hparams_search={preset}", f"trainer.devices={devices}"], keep_hydra=True)
    assert cfg.hydra.sweeper.devices_per_trial == per_trial


def test_devices_per_trial_given_on_the_command_line_wins_over_trainer_devices(compose_cfg):
    cfg = compose_cfg(
        ["hparams_search=optuna", "trainer.devices=2", "hydra.sweeper.devices_per_trial=1"], keep_hydra=True
    )
    assert cfg.hydra.sweeper.devices_per_trial == 1  # the trial's own check then refuses the pair


@pytest.mark.slow
def test_a_study_whose_workers_need_more_gpus_than_visible_is_refused_before_anything_is_written(tmp_path):
    result = sweep(
        [*PARALLEL, "exp_name=toomany", "hydra.sweeper.devices_per_trial=2", "trainer.devices=2"],
        tmp_path,
        ok=False,
        env={"CUDA_VISIBLE_DEVICES": "0,1,2"},
    ).result
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[0]
        .startswith(
            "hydra.sweeper.n_jobs=2: 2 worker(s) x 2 GPU(s) per trial is more than the 3 visible GPU(s) (0,1,2)"
        )
    )
    assert not (tmp_path / "studies").exists() and not (tmp_path / "multirun").exists()


POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")  # e.g. postgresql://sweeplab:pw@127.0.0.1:5432/sweeplab


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES and not os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"),
    reason="no PostgreSQL server: .ci/postgres starts one; then set SWEEPLAB_TEST_POSTGRES to its URL",
)
def test_three_sweeps_with_two_workers_each_share_one_postgresql_study_without_leaking_its_password(tmp_path):
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set but SWEEPLAB_TEST_POSTGRES is not"
    name = f"pg_{uuid.uuid4().hex[:8]}"
    args = [
        *PARALLEL,
        "exp_name=pg",
        f"hydra.sweeper.storage={POSTGRES}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.quick_validation.epochs=2",
    ]
    machines = [tmp_path / f"machine{i}" for i in range(3)]
    sweeps = []
    for machine in machines:
        machine.mkdir()
        log = (machine / "sweep.log").open("w")
        sweeps.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "runners/train.py"), *args],
                cwd=machine,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    for machine, started in zip(machines, sweeps, strict=True):
        assert started.wait(timeout=900) == 0, (machine / "sweep.log").read_text()[-3000:]

    trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials()
    assert len(counted(trials)) == 8
    ran = [t for t in trials if t.user_attrs.get("output_dir")]
    job_dirs = [Path(t.user_attrs["output_dir"]) for t in ran]
    assert len(set(job_dirs)) == len(job_dirs) and all(
        d.name == str(t.number) for d, t in zip(job_dirs, ran, strict=True)
    )
    on_disk = [p.name for m in machines for d in sweep_dirs(m, "pg") for p in d.iterdir() if p.name.isdigit()]
    assert sorted(on_disk, key=int) == sorted(str(t.number) for t in ran)  # each job ran once, on one machine
    assert sum((m / "multirun").exists() for m in machines) >= 2  # the work was shared

    password = make_url(POSTGRES).password
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_a_trial_whose_heartbeat_stops_is_failed_and_rerun_once(tmp_path):
    # 1 s heartbeats (below the sweeper's minimum, which guards against slow writers) keep the test short
    db = tmp_path / "hb.db"
    storage = open_storage(f"sqlite:///{db}", heartbeat_interval=1)
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    beating = Heartbeats(study, 1)
    beating.add(trial._trial_id)
    study._storage.set_trial_user_attr(trial._trial_id, "host", "another-machine")
    age_trials(db, 10)  # its last beat is older than the grace period (2 intervals) ...
    deadline = time.monotonic() + 30
    while not fresh_heartbeats(db, within=1) and time.monotonic() < deadline:
        time.sleep(0.1)  # ... until the sweep's thread beats again
    assert recover(study) == []  # beating: alive, to a sweep on any machine
    beating.close()  # as if its sweep or machine died: no more heartbeats
    age_trials(db, 10)
    assert recover(study) == [trial.number]
    assert recover(study) == []  # a second sweep finding it does nothing
    closed = study.trials[trial.number]
    assert closed.state == TrialState.FAIL and closed.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    assert "no heartbeat" in closed.user_attrs[ATTR_LOST]
    (rerun,) = study.get_trials(states=(TrialState.WAITING,))
    assert (
        rerun.system_attrs["fixed_params"] == closed.params
        and rerun.user_attrs[ATTR_RETRY_OF] == trial.number
    )


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_marks_their_trials_interrupted_and_the_same_command_resumes(tmp_path):
    background, args = _background_sweep(tmp_path, "intr")
    running = _wait_for_running(
        tmp_path, "intr_fast", background, lambda ts: sum(ATTR_WORKER_PID in t.user_attrs for t in ts) == 2
    )
    workers = [t.user_attrs[ATTR_WORKER_PID] for t in running]
    pressed = time.monotonic()
    background.send_signal(signal.SIGINT)
    assert background.wait(timeout=60) != 0
    assert time.monotonic() - pressed < 15  # within seconds
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    trials = load_trials(tmp_path, "intr_fast")
    interrupted = [t for t in trials if t.user_attrs.get(ATTR_FAIL_REASON) == INTERRUPTED]
    assert len(interrupted) >= 2 and not any(t.state == TrialState.RUNNING for t in trials)
    assert all(t.state == TrialState.FAIL for t in interrupted)

    trials = sweep(args, tmp_path, study="intr_fast").trials
    assert len(counted(trials)) == 4
    assert {t.user_attrs.get(ATTR_RETRY_OF) for t in trials} >= {t.number for t in interrupted}


@pytest.mark.slow
def test_each_worker_sees_only_its_own_gpu(tmp_path):
    """CPU training, but the device each worker's process is given is what a GPU run would use."""
    result = sweep(
        [
            *PARALLEL,
            "exp_name=gpus",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.quick_validation.epochs=1",
            "+callbacks.device._target_=tests.faults.RecordDevice",
        ],
        tmp_path,
        env={"PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "3,5"},
    ).result
    assert "2 workers: worker 0 on GPU 3, worker 1 on GPU 5" in result.stdout + result.stderr
    sweep_dir = sweep_dirs(tmp_path, "gpus")[-1]
    seen = {(sweep_dir / str(n) / "device.txt").read_text() for n in range(4)}
    assert seen == {"3", "5"}


def _asked(number: int, finished_s: int, host: str, pid: int) -> FrozenTrial:
    """A finished trial asked by the sweep `pid` on `host`, finished `finished_s` seconds in."""
    start = datetime(2026, 1, 1)
    return FrozenTrial(
        number=number,
        state=TrialState.COMPLETE,
        value=float(number),
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=finished_s),
        params={},
        distributions={},
        user_attrs={ATTR_HOST: host, ATTR_PID: pid},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
        values=None,
    )


def test_of_the_sweeps_that_share_a_study_only_the_one_that_finished_its_last_trial_writes_the_report():
    here = socket.gethostname()
    theirs = [_asked(0, 5, here, os.getpid()), _asked(1, 9, "node2", 4242)]
    assert writes_report(theirs) == (
        False,
        "the sweep that finished the study's last trial (1; pid 4242 on node2)",
    )
    ours = [_asked(0, 9, here, os.getpid()), _asked(1, 5, "node2", 4242)]
    assert writes_report(ours) == (True, "this sweep")
    assert writes_report([]) == (True, "this sweep")
    same_pid_elsewhere = [_asked(0, 9, "node2", os.getpid())]
    assert writes_report(same_pid_elsewhere)[0] is False
