"""The README's two SLURM recipes, run against a real SLURM cluster (`.ci/slurm`: slurmctld and two slurmd
nodes on 127.0.0.1) with a PostgreSQL study: an `sbatch --array` whose tasks run the same sweep command, and
`hydra/launcher=submitit_slurm`. Each study ends at exactly its n_trials, prunes, and leaves one report.

They run where `SLURM_CONF` names a cluster's config and `SWEEPLAB_TEST_POSTGRES` a server (`.ci/run` starts
both); `SWEEPLAB_REQUIRE_SLURM` makes them fail instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
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
