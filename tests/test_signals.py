"""How a sweep stops: SIGTERM as cleanly as Ctrl-C (to the process group or to the sweep alone), workers that
never outlive their sweep, and a worker that hangs is killed and its trial run again."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeplab.errors import SweeplabError
from sweeplab.launching import executors
from sweeplab.launching.executors import Outcome
from sweeplab.launching.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED
from sweeplab.search.records import (
    ATTR_FAIL_REASON,
    ATTR_LOST,
    ATTR_RETRY_OF,
    ATTR_UNTOLD,
    ATTR_WORKER_PID,
    INTERRUPTED,
    STALLED,
    counted,
)
from sweeplab.search.schema import SweeplabSweeperConf
from tests.conftest import ROOT

APPS = ROOT / "tests" / "apps"
# two workers; no pruning, so every trial runs all its epochs
CURVE = [
    str(APPS / "curve.py"),
    "-m",
    "hydra.sweeper.report=false",
    "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.heartbeat_interval=5",
    "hydra.sweeper.pruner.n_startup_trials=100",
]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _start(args: list[str], cwd: Path, log: str = "sweep.log") -> subprocess.Popen:
    """The sweep in a process group of its own (its pid is the group's id), as a job scheduler starts it."""
    out = (cwd / log).open("w")
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _trials(cwd: Path, name: str = "curve") -> list:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'studies' / name}.db").get_trials()


def _wait_until(sweep: subprocess.Popen, cwd: Path, ready: Callable[[], object], limit: float = 45) -> object:
    """Poll until `ready()` is truthy (its value), or fail with the sweep's log."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and sweep.poll() is None:
        try:
            found = ready()
        except Exception:  # the study is being created
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"exit {sweep.poll()}: " + (cwd / "sweep.log").read_text()[-3000:])


def _workers(cwd: Path, n: int, name: str = "curve") -> list[int]:
    """The pids of `n` running trials' workers, once that many have reported."""

    def running() -> list[int]:
        pids = [
            t.user_attrs[ATTR_WORKER_PID]
            for t in _trials(cwd, name)
            if t.state == TrialState.RUNNING and ATTR_WORKER_PID in t.user_attrs
        ]
        return pids if len(pids) >= n else []

    return running()


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _running(pid: int) -> bool:
    """Process `pid` exists and is not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _group_gone_within(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _group_gone(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _group_gone(pgid)


def _finish(sweep: subprocess.Popen, limit: float) -> int | None:
    """The sweep's exit status within `limit` seconds; None (and its group killed) when it did not end."""
    try:
        return sweep.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if not _group_gone(sweep.pid):
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "to"), [("TERM", "group"), ("TERM", "sweep"), ("INT", "group"), ("INT", "sweep")]
)
def test_a_stop_signal_stops_the_workers_closes_their_trials_in_one_line_and_the_same_command_resumes(
    tmp_path, sig, to
):
    args = [*CURVE, "hydra.sweeper.n_trials=3", "epochs=10", "epoch_s=0.5"]
    sweep = _start(args, tmp_path)
    workers = _wait_until(sweep, tmp_path, lambda: _workers(tmp_path, 2))
    signum = signal.Signals[f"SIG{sig}"]
    if to == "group":  # as SLURM, Kubernetes or a terminal's Ctrl-C do
        os.killpg(sweep.pid, signum)
    else:
        sweep.send_signal(signum)
    code = _finish(sweep, 30)
    log = (tmp_path / "sweep.log").read_text()
    assert code == (EXIT_TERMINATED if sig == "TERM" else EXIT_INTERRUPTED), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    stopped = [line for line in log.splitlines() if "sweep stopped" in line]
    assert len(stopped) == 1 and f"by SIG{sig}" in stopped[0], log[-3000:]
    assert not [pid for pid in workers if _running(pid)]  # no worker left behind
    # the fork server the workers came from, and multiprocessing's resource tracker, end with the sweep
    assert _group_gone_within(sweep.pid, 5)
    trials = _trials(tmp_path)
    interrupted = [t for t in trials if t.user_attrs.get(ATTR_FAIL_REASON) == INTERRUPTED]
    assert len(interrupted) == 2 and all(t.state == TrialState.FAIL for t in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    again = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _trials(tmp_path)
    assert len(counted(trials)) == 3
    assert {t.user_attrs.get(ATTR_RETRY_OF) for t in trials} >= {t.number for t in interrupted}


@pytest.mark.slow
def test_workers_whose_sweep_is_killed_stop_within_seconds_and_say_why(tmp_path):
    sweep = _start([*CURVE, "hydra.sweeper.n_trials=2", "epochs=60", "epoch_s=0.5"], tmp_path)
    workers = _wait_until(sweep, tmp_path, lambda: _workers(tmp_path, 2))
    sweep.kill()  # SIGKILL to the sweep alone: nothing of it runs to stop its workers
    assert sweep.wait(timeout=10) == -signal.SIGKILL
    left = not _group_gone_within(sweep.pid, 5)
    if left:
        os.killpg(sweep.pid, signal.SIGKILL)
    assert not left, f"workers {workers} outlived their sweep by 5 s"
    logs = [p.read_text() for p in tmp_path.rglob("worker.log")]
    assert len(logs) == 2 and all(f"the sweep (pid {sweep.pid}) is gone" in text for text in logs)


@pytest.mark.slow
def test_a_stopped_worker_is_killed_after_stall_timeout_and_its_trial_runs_again(tmp_path):
    args = [*CURVE, "hydra.sweeper.n_trials=3", "epochs=4", "epoch_s=0.5", "hydra.sweeper.stall_timeout=5"]
    sweep = _start(args, tmp_path)
    (victim, *_) = _wait_until(sweep, tmp_path, lambda: _workers(tmp_path, 1))
    os.kill(victim, signal.SIGSTOP)  # a hung worker: alive, silent
    code = _finish(sweep, 50)
    log = (tmp_path / "sweep.log").read_text()
    assert code == 0, log[-3000:]
    trials = _trials(tmp_path)
    (stalled,) = [t for t in trials if t.user_attrs.get(ATTR_WORKER_PID) == victim]
    assert stalled.state == TrialState.FAIL and stalled.user_attrs[ATTR_FAIL_REASON] == STALLED
    assert stalled.user_attrs[ATTR_LOST].startswith(STALLED), stalled.user_attrs
    assert "stall_timeout=5" in stalled.user_attrs[ATTR_LOST]
    assert any(t.user_attrs.get(ATTR_RETRY_OF) == stalled.number for t in counted(trials))
    assert len(counted(trials)) == 3
    assert f"trial {stalled.number} lost ({STALLED}" in log


@pytest.mark.slow
def test_the_timeout_holds_when_a_worker_hangs(tmp_path):
    timeout, stall = 4, 5
    args = [
        *CURVE,
        "hydra.sweeper.n_trials=50",
        "epochs=3",
        "epoch_s=0.5",
        f"hydra.sweeper.timeout={timeout}",
        f"hydra.sweeper.stall_timeout={stall}",
    ]
    sweep = _start(args, tmp_path)
    (victim, *_) = _wait_until(sweep, tmp_path, lambda: _workers(tmp_path, 1))
    started = time.monotonic()  # the sweep started its study a little earlier
    os.kill(victim, signal.SIGSTOP)
    code = _finish(sweep, timeout + stall + 30)
    took = time.monotonic() - started
    assert code == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert took < timeout + stall + 10, took
    assert not [t for t in _trials(tmp_path) if t.state == TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_a_stop_signal_inside_lightnings_fit_in_the_sweeps_own_process_exits_128_plus_signum(tmp_path, sig):
    """n_jobs=1: the trial runs in the sweep's process, where Lightning turns a KeyboardInterrupt into exit 1."""
    pytest.importorskip("lightning")
    sweep = _start([str(APPS / "lit.py"), "-m", "epochs=20"], tmp_path)
    _wait_until(sweep, tmp_path, lambda: list(tmp_path.rglob("fitting")), limit=90)
    os.killpg(sweep.pid, signal.Signals[f"SIG{sig}"])
    code = _finish(sweep, 30)
    log = (tmp_path / "sweep.log").read_text()
    assert code == (EXIT_INTERRUPTED if sig == "INT" else EXIT_TERMINATED), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    trial, rerun = _trials(tmp_path, "lit")
    assert trial.state == TrialState.FAIL and trial.user_attrs[ATTR_FAIL_REASON] == INTERRUPTED
    assert rerun.state == TrialState.WAITING and rerun.system_attrs["fixed_params"] == trial.params


def test_an_outcome_its_sweep_never_receives_is_said_in_the_worker_log_and_on_the_trial(monkeypatch, capfd):
    recorded = {}

    class Trial:
        def set(self, key: str, value: object) -> None:
            recorded[key] = value

    monkeypatch.setattr(executors, "job_trial", Trial)
    monkeypatch.setattr(executors.HydraConfig.instance(), "set_config", lambda config: None)
    receive, send = mp.get_context("fork").Pipe(duplex=False)
    receive.close()  # the sweep is gone: nobody reads
    watch = executors._Watch(os.getppid(), None, [])
    executors._tell(send, Outcome(value=0.25), watch, None)
    said = capfd.readouterr().err
    assert "the trial's outcome (value 0.25) was not told to the study: sending it to the sweep" in said
    assert "value 0.25" in recorded[ATTR_UNTOLD]


@pytest.mark.parametrize("bad", [0, 2.5, -1, float("inf")])
def test_stall_timeout_is_a_number_of_seconds_of_at_least_3_or_null(bad):
    assert SweeplabSweeperConf(stall_timeout=None).stall_timeout is None
    with pytest.raises(
        SweeplabError, match=r"hydra.sweeper.stall_timeout=.*: must be a number of seconds >= 3"
    ):
        SweeplabSweeperConf(stall_timeout=bad)
