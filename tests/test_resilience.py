"""Studies stay right when several sweeps share them, when a sweep is resumed, and when a sweep dies at any
moment: no configuration runs twice, no trial is stranded, survivors finish a dead sweep's trials."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from sweeplab.launching.interrupts import EXIT_INTERRUPTED
from sweeplab.search.liveness import (
    SWEEP_LOCK,
    claim_sweep_dir,
    dead_trials,
    recover,
    release_sweep_dir,
)
from sweeplab.search.pruning import SeededPerTrial, build_sampler
from sweeplab.search.records import (
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_LOST,
    ATTR_RESCUE_OF,
    INTERRUPTED,
    counted,
)
from sweeplab.search.storage import open_storage
from tests.conftest import ROOT, age_trials, serving, sweep_dirs

APPS = ROOT / "tests" / "apps"
CURVE = [str(APPS / "curve.py"), "-m", "hydra.sweeper.report=false"]
POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _run(args: list[str], cwd: Path, harness: list[str] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, *([str(APPS / "harness.py"), *harness] if harness else []), *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _start(args: list[str], cwd: Path, harness: list[str] = (), log: str = "sweep.log") -> subprocess.Popen:
    command = [sys.executable, *([str(APPS / "harness.py"), *harness] if harness else []), *args]
    out = (cwd / log).open("w")
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT)


def _trials(cwd: Path, name: str = "curve", storage: str | None = None) -> list:
    url = storage or f"sqlite:///{cwd / 'studies' / name}.db"
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _own(trials: list) -> list:
    return [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]


def _params(trials: list) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


# -- distinct configurations ---------------------------------------------------------------------------


def test_a_seeded_sampler_draws_per_trial_number_so_a_resumed_or_second_sweep_draws_anew(tmp_path):
    node = {"_target_": "optuna.samplers.RandomSampler", "seed": 3}
    space = {"x": FloatDistribution(0.0, 1.0)}

    def draws(numbers_from: int, n: int) -> list[float]:
        study = optuna.create_study(sampler=build_sampler(node))
        for _ in range(numbers_from):  # trials another sweep asked first
            study.tell(study.ask(), state=TrialState.FAIL)
        return [study.ask(space).params["x"] for _ in range(n)]

    assert isinstance(build_sampler(node), SeededPerTrial)
    first = draws(0, 4)
    assert draws(0, 4) == first  # one uninterrupted sweep: reproducible
    assert not set(draws(4, 4)) & set(first)  # trials 4-7 (a resume, another sweep) draw other points
    assert not isinstance(
        build_sampler({"_target_": "optuna.samplers.QMCSampler", "seed": 3}), SeededPerTrial
    )


@pytest.mark.slow
def test_two_sweeps_started_together_then_the_same_command_again_never_repeat_params(tmp_path):
    # epochs of 0.3 s: one sweep cannot finish the 8 trials before the other, started beside it, asks one
    slow = [*CURVE, "epoch_s=0.3"]
    together = [_start([*slow, "hydra.sweeper.n_trials=8"], tmp_path, log=f"sweep{i}.log") for i in range(2)]
    for i, sweep in enumerate(together):
        assert sweep.wait(timeout=300) == 0, (tmp_path / f"sweep{i}.log").read_text()[-3000:]
    again = _run([*slow, "hydra.sweeper.n_trials=14"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]

    finished = counted(_own(_trials(tmp_path)))
    assert len(finished) == 14
    assert len(set(_params(finished))) == 14
    assert len(sweep_dirs(tmp_path)) == 3  # each of the three sweeps ran trials
    # each sweep wrote its result files in a dir of its own, even when two started in the same second
    assert len(list((tmp_path / "multirun").rglob("optimization_results.yaml"))) == 3


@pytest.mark.slow
def test_a_finite_space_runs_each_configuration_once_then_the_sweep_stops(tmp_path):
    result = _run(
        [*CURVE, "hydra.sweeper.params.lr='choice(0.05, 0.1, 0.2)'", "hydra.sweeper.n_trials=5"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every one of the 3 configurations of the search space has a trial" in result.stdout
    finished = counted(_trials(tmp_path))
    assert sorted(t.params["lr"] for t in finished) == [0.05, 0.1, 0.2]


@pytest.mark.slow
def test_a_grid_shared_by_two_sweeps_runs_each_point_once(tmp_path):
    args = [
        str(APPS / "sphere.py"),
        "-m",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params.x='choice(1, 2, 3)'",
        "hydra.sweeper.params.y='choice(0, 1)'",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.report=false",
    ]
    sweeps = [_start(args, tmp_path, log=f"sweep{i}.log") for i in range(2)]
    for i, sweep in enumerate(sweeps):
        assert sweep.wait(timeout=300) == 0, (tmp_path / f"sweep{i}.log").read_text()[-3000:]
    finished = counted(_trials(tmp_path, "sphere"))
    assert sorted(_params(finished)) == sorted((("x", x), ("y", y)) for x in (1, 2, 3) for y in (0, 1))


# -- no stranded trial -----------------------------------------------------------------------------------

# 3 trials of 2 epochs, the median pruner, one rescue: asks, launches, reports, prunes, tells, a rescue
STOPPED = [
    *CURVE,
    "hydra.sweeper.n_trials=3",
    "epochs=2",
    "hydra.sweeper.rescue.top_k=1",
    "hydra.sweeper.heartbeat_interval=5",
    "hydra.sweeper.pruner.n_startup_trials=1",
    "hydra.sweeper.sampler.seed=5",  # a seed whose trial 2 is pruned, then rescued
]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["KILL", "INT"])
def test_a_sweep_stopped_at_any_storage_write_is_finished_by_the_same_command(tmp_path, how):
    (tmp_path / "count").mkdir()
    counting = _run(STOPPED, tmp_path / "count", ["--stop-at", "0"])
    assert counting.returncode == 0, counting.stderr[-3000:]
    writes = int(counting.stderr.rsplit("storage writes: ", 1)[1].split()[0])
    assert "[3/3] trial 2 PRUNED" in counting.stdout and "rescue: pruned trial 2 " in counting.stdout

    def stop_then_resume(n: int) -> str | None:
        where = tmp_path / f"{how}{n}"
        where.mkdir()
        stopped = _run(STOPPED, where, ["--stop-at", str(n), "--signal", how])
        expected = -signal.SIGKILL if how == "KILL" else EXIT_INTERRUPTED
        if stopped.returncode != expected:  # every run reaches write n: the sweep is deterministic up to it
            return f"write {n}: the stopped sweep exited {stopped.returncode}: {stopped.stderr[-1500:]}"
        if how == "INT" and "Traceback" in stopped.stderr:
            return f"write {n}: Ctrl-C printed a traceback: {stopped.stderr[-1500:]}"
        resumed = _run(STOPPED, where)
        if resumed.returncode != 0:
            return f"write {n}: the same command failed: {resumed.stderr[-1500:]}"
        trials = _trials(where)
        left = [
            (t.number, t.state.name) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)
        ]
        n_counted = len(counted(_own(trials)))
        if left or n_counted != 3:
            return f"write {n}: {n_counted} trials counted, left open: {left}"
        return None

    # SIGKILL at every write: what a crash leaves must always be finished. Ctrl-C goes through the same
    # closing at whichever write it lands, so every 4th write and the last one cover it.
    points = range(1, writes + 1) if how == "KILL" else sorted({*range(1, writes + 1, 4), writes})
    with ThreadPoolExecutor(6) as pool:  # the resumes that wait for a trial's grace period overlap
        problems = [p for p in pool.map(stop_then_resume, points) if p]
    assert not problems, "\n".join(problems)
    print(f"{how}: {len(points)} of {writes} stop points covered")


# -- survivors finish the job ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "storage",
    [
        None,
        "proxy",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES and not os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"),
                reason="no PostgreSQL server: .ci/postgres starts one; then set SWEEPLAB_TEST_POSTGRES to its URL",
            ),
        ),
    ],
)
def test_when_one_of_three_sweeps_is_killed_the_others_rerun_its_trials_and_finish(tmp_path, storage):
    """Each sweep runs as if on its own machine, so the dead one's trials are found by their heartbeats (through
    a storage proxy, sweeplab's own: Optuna's proxy carries none)."""
    name = f"curve_{uuid.uuid4().hex[:8]}"
    url = POSTGRES if storage == "postgresql" else f"sqlite:///{tmp_path / 'shared.db'}"
    assert url
    with contextlib.ExitStack() as stack:
        served = stack.enter_context(serving(url, tmp_path)) if storage == "proxy" else url
        _kill_one_of_three(tmp_path, name, url, served)


def _kill_one_of_three(tmp_path: Path, name: str, url: str, served: str) -> None:
    args = [
        *CURVE,
        f"hydra.sweeper.storage={served}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=8",
        "epochs=3",
        "epoch_s=1.0",
        "hydra.sweeper.heartbeat_interval=5",
        "hydra.sweeper.pruner.n_startup_trials=100",  # no pruning: every trial takes 3 s
    ]
    machines = [tmp_path / f"machine{i}" for i in range(3)]
    sweeps = []
    for i, machine in enumerate(machines):
        machine.mkdir()
        sweeps.append(_start(args, machine, ["--host", f"machine{i}"]))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            running = _trials(tmp_path, name, url)
        except Exception:  # the study is being created
            continue
        if any(t.state == TrialState.RUNNING and t.user_attrs.get(ATTR_HOST) == "machine0" for t in running):
            break
    sweeps[0].kill()
    assert sweeps[0].wait(timeout=30) == -signal.SIGKILL
    for machine, sweep in zip(machines[1:], sweeps[1:], strict=True):
        assert sweep.wait(timeout=300) == 0, (machine / "sweep.log").read_text()[-3000:]

    trials = _trials(tmp_path, name, url)
    assert len(counted(trials)) == 8
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = [t for t in trials if t.user_attrs.get(ATTR_FAIL_REASON) == INTERRUPTED]
    assert dead and all("heartbeat" in t.user_attrs[ATTR_LOST] for t in dead)
    assert len(set(_params(counted(trials)))) == 8


# -- heartbeats -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trials_longer_than_the_grace_period_live_under_the_shortest_heartbeat(tmp_path):
    """5 s heartbeats (the minimum): 12 s trials, two workers each in two sweeps on 'different machines'."""
    args = [
        *CURVE,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "epochs=3",
        "epoch_s=4.0",
        "hydra.sweeper.heartbeat_interval=5",
        "hydra.sweeper.pruner.n_startup_trials=100",
    ]
    sweeps = [_start(args, tmp_path, ["--host", f"machine{i}"], log=f"sweep{i}.log") for i in range(2)]
    for i, sweep in enumerate(sweeps):
        assert sweep.wait(timeout=300) == 0, (tmp_path / f"sweep{i}.log").read_text()[-3000:]
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # none taken for dead, none re-run


def test_a_trial_its_sweep_owns_is_never_taken_for_dead_by_it(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'own.db'}", heartbeat_interval=1)
    study = optuna.create_study(study_name="own", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)  # one beat, then silence: its sweep is busy, or gone
    storage.set_trial_user_attr(trial._trial_id, ATTR_HOST, "elsewhere")
    age_trials(tmp_path / "own.db", 10)
    assert recover(study, alive={trial._trial_id}) == []
    assert list(dead_trials(study)) == [trial._trial_id]  # to any other sweep it is dead


def test_a_trial_whose_sweep_died_before_owning_it_is_dead_after_the_grace_period(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'unowned.db'}", heartbeat_interval=1)
    study = optuna.create_study(study_name="unowned", storage=storage)
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})  # no heartbeat, no owner: its sweep died here
    assert dead_trials(study) == {}  # it may be a sweep that owns it a moment later
    age_trials(tmp_path / "unowned.db", 10)
    assert recover(study) == [trial.number]
    (rerun,) = study.get_trials(states=(TrialState.WAITING,))
    assert rerun.system_attrs["fixed_params"] == trial.params


# -- sweep dirs -------------------------------------------------------------------------------------------


def test_sweeps_started_in_the_same_second_get_their_own_sweep_dirs(tmp_path):
    wanted = tmp_path / "multirun" / "12-00-00"
    first = claim_sweep_dir(wanted)
    second = claim_sweep_dir(wanted)  # the first one's sweep (this process) is alive
    assert (first, second) == (wanted, wanted.with_name("12-00-00_2"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    (wanted / SWEEP_LOCK).write_text(f"{os.uname().nodename} {dead.pid}")
    assert claim_sweep_dir(wanted) == wanted  # a dead sweep's dir is resumed in


def test_a_sweep_that_ended_while_another_started_keeps_its_dir_and_a_later_command_reuses_it(tmp_path):
    wanted = tmp_path / "multirun" / "12-00-00"
    assert claim_sweep_dir(wanted) == wanted
    release_sweep_dir(wanted)  # it ended after this process started: this "sweep" ran alongside it
    assert claim_sweep_dir(wanted) == wanted.with_name("12-00-00_2")
    (wanted / SWEEP_LOCK).write_text("ended 1000000000.0")  # it ended in 2001, before this process began
    assert claim_sweep_dir(wanted) == wanted  # the same fixed hydra.sweep.dir, run again later


# -- SLURM's path, through submitit's local executor ------------------------------------------------------


def test_trials_on_several_devices_under_another_launcher_are_refused_before_anything_is_written(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    result = _run([*CURVE, "hydra/launcher=submitit_local", "hydra.sweeper.devices_per_trial=2"], tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[0]
        .startswith(
            "hydra.sweeper.devices_per_trial=2: trials on several devices run in worker processes of Hydra's basic "
            "launcher, not under LocalLauncher"
        )
    )
    assert not (tmp_path / "studies").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_a_study_through_the_submitit_launcher_prunes_resumes_after_a_kill_and_ends_at_n_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]'")
    args = [
        *CURVE,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "epochs=3",
        "epoch_s=1.0",
        "hydra.sweeper.heartbeat_interval=5",
    ]
    sweep = _start(args, tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.2)
        try:
            trials = _trials(tmp_path)
        except Exception:  # the study is being created
            continue
        # a trial of the second batch (numbers 2 and 3) is running: the first batch has been told whole
        if any(t.state == TrialState.RUNNING and t.number >= 2 for t in trials):
            break
    sweep.kill()  # in the middle of the second batch
    assert sweep.wait(timeout=30) == -signal.SIGKILL
    resumed = _run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:] + resumed.stdout[-3000:]

    trials = _trials(tmp_path)
    assert len(counted(trials)) == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert any(t.state == TrialState.PRUNED for t in trials)
    assert any(t.user_attrs.get(ATTR_FAIL_REASON) == INTERRUPTED for t in trials)  # the kill cut a batch
