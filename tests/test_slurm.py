"""The README's two SLURM recipes, run against a real SLURM cluster (`.ci/slurm`: slurmctld and two slurmd
nodes on 127.0.0.1) with a PostgreSQL study: an `sbatch --array` whose tasks run the same sweep command, and
`hydra/launcher=submitit_slurm`. Each study ends at exactly its n_trials, prunes, and leaves one report.

They run where `SLURM_CONF` names a cluster's config and `SWEEPLAB_TEST_POSTGRES` a server (`.ci/run` starts
both); `SWEEPLAB_REQUIRE_SLURM` makes them fail instead of skipping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from sweeplab.search.records import counted
from tests.conftest import QUICK, ROOT

POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")
SLURM_CONF = os.environ.get("SLURM_CONF")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SLURM_CONF and POSTGRES) and not os.environ.get("SWEEPLAB_REQUIRE_SLURM"),
        reason="no SLURM cluster: `bash .ci/slurm` starts one (then set SLURM_CONF), with PostgreSQL (.ci/postgres)",
    ),
]
STUDY = ["hparams_search=optuna_fast", "hydra.sweeper.n_trials=6", "trainer.max_epochs=3", *QUICK]


def _checkout_in(cwd: Path) -> None:
    """The recipes run from a checkout: its entry points and configs, linked into `cwd`."""
    for name in ("runners", "conf"):
        (cwd / name).symlink_to(ROOT / name)


def _env() -> dict[str, str]:
    assert SLURM_CONF and POSTGRES, (
        "SWEEPLAB_REQUIRE_SLURM is set but SLURM_CONF or SWEEPLAB_TEST_POSTGRES is not"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    bin_dir = str(Path(sys.executable).parent)  # the venv, as an activated one puts it first on PATH
    return {
        **env,
        "PATH": f"{bin_dir}:{env.get('PATH', '')}",
        "SWEEPLAB_DB": POSTGRES,
        "PYTHONUNBUFFERED": "1",
    }


def _ended_at_n_trials_with_one_report(cwd: Path, name: str) -> None:
    trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials()
    states = [t.state.name for t in counted(trials)]
    assert len(states) == 6, states
    assert "PRUNED" in states, states
    reports = [p for p in cwd.glob("multirun/**/report.md") if not any(q.is_symlink() for q in p.parents)]
    assert len(reports) == 1, reports


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`command` run from a checkout in `cwd`, as a user runs a recipe."""
    _checkout_in(cwd)
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def test_an_sbatch_array_of_sweeps_on_one_postgresql_study_ends_at_n_trials_with_one_report(tmp_path):
    name = f"slurm_{uuid.uuid4().hex[:8]}"
    sbatch = ["sbatch", "--wait", "--array=0-1", str(ROOT / "examples" / "slurm" / "study.sbatch")]
    result = _run([*sbatch, *STUDY, f"hydra.sweeper.study_name={name}"], tmp_path)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("slurm-*.out")))
    assert result.returncode == 0, result.stderr + logs
    assert len(list(tmp_path.glob("slurm-*_[01].out"))) == 2  # both array tasks ran a sweep
    finished = [
        p for p in tmp_path.glob("slurm-*.out") if "finished (the study has its 6 trials)" in p.read_text()
    ]
    assert len(finished) == 2, logs
    _ended_at_n_trials_with_one_report(tmp_path, name)


def test_a_study_through_the_submitit_slurm_launcher_ends_at_n_trials_with_one_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    name = f"submitit_{uuid.uuid4().hex[:8]}"
    train = [
        sys.executable,
        "runners/train.py",
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.sweeper.n_jobs=2",
    ]
    storage = "hydra.sweeper.storage=${oc.env:SWEEPLAB_DB}"
    result = _run([*train, storage, *STUDY, f"hydra.sweeper.study_name={name}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _ended_at_n_trials_with_one_report(tmp_path, name)


def _job_pids(job_id: str) -> list[int]:
    """The processes of SLURM job `job_id` on this host (every node of `.ci/slurm` runs here)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"\0SLURM_JOB_ID={job_id}\0".encode() in b"\0" + environ.read_bytes():
                pids.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def _signal_job(job_id: str, signum: int) -> None:
    for pid in _job_pids(job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _running_trial_of(study: optuna.Study, job_id: str) -> optuna.trial.FrozenTrial | None:
    """A trial that job `job_id`'s sweep runs and that has saved a finished epoch to resume from."""
    pids = set(_job_pids(job_id))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("pid") in pids and t.user_attrs.get("resumable"):
            return t
    return None


def _wait_for(what: str, probe, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_node_killed_and_a_node_frozen_past_its_grace_lose_no_trial_and_no_result_is_written_twice(
    tmp_path,
):
    """Three sweeps of one study, one SLURM job each: the job on n1 is killed with SIGKILL (a node lost) and
    one on n2 is frozen (a node cut off: it reaches nothing, its heartbeats stop) until its trial has been
    closed by another sweep and 10 s more, once each runs
    a trial that has finished an epoch. The third sweep closes both trials and resumes them; the frozen one,
    back, drops its trial's outcome with one line; the study ends at exactly n_trials."""
    _checkout_in(tmp_path)
    name = f"lost_{uuid.uuid4().hex[:8]}"
    n_trials = 6
    args = [
        "hparams_search=optuna_fast",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.heartbeat_interval=5",  # a silent trial is taken for dead after 10 s
        "hydra.sweeper.report=false",
        "trainer.max_epochs=5",
        *[a for a in QUICK if not a.startswith("+trainer.limit_train_batches")],
        "+trainer.limit_train_batches=20",
    ]
    script = str(ROOT / "examples" / "slurm" / "study.sbatch")

    def submit(node: str, tag: str) -> str:
        command = ["sbatch", "--parsable", f"--nodelist={node}", f"--output=slurm-{tag}.out", script, *args]
        out = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True)
        return out.stdout.strip().split(";")[0]

    killed, frozen, survivor = submit("n1", "killed"), submit("n2", "frozen"), submit("n2", "survivor")
    try:
        study = _wait_for("the study", lambda: _study(name))
        lost = _wait_for("a resumable trial of the killed job", lambda: _running_trial_of(study, killed))
        _signal_job(killed, signal.SIGKILL)
        cut = _wait_for("a resumable trial of the frozen job", lambda: _running_trial_of(study, frozen))
        _signal_job(frozen, signal.SIGSTOP)
        # while it is frozen, another sweep takes its trial for dead
        _wait_for("the frozen trial closed", lambda: study.trials[cut.number].state.name == "FAIL", 120)
        time.sleep(10.0)  # it stays cut off a while after its trial was closed
        _signal_job(frozen, signal.SIGCONT)
        _wait_for("the sweeps to end", lambda: not _job_pids(frozen) and not _job_pids(survivor), 420)
    except BaseException:
        subprocess.run(["scancel", killed, frozen, survivor], env=_env(), capture_output=True)
        raise

    trials = study.get_trials()
    counts = counted(trials)
    assert len(counts) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    for gone in (lost, cut):
        stored = trials[gone.number]
        assert stored.state.name == "FAIL" and stored.user_attrs["fail_reason"] == "interrupted"
        (rerun,) = [t for t in trials if t.user_attrs.get("retry_of") == gone.number]  # re-run once
        assert rerun.state.name in ("COMPLETE", "PRUNED") and rerun.params == stored.params
        assert rerun.user_attrs["resumed"]["trial"] == gone.number  # from its last finished epoch
        assert rerun.user_attrs["resumed"]["step"] >= 1
    frozen_log = (tmp_path / "slurm-frozen.out").read_text()
    dropped = f"trial {cut.number} was closed by another sweep while it ran"
    assert frozen_log.count(dropped) == 1, frozen_log[-3000:]
    assert trials[cut.number].state.name == "FAIL"  # its late outcome was never written


def _study(name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=POSTGRES)
    except KeyError:  # not created yet
        return None
