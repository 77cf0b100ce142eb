"""A study stopped early, for any reason, still writes the result files of the trials it has, and the
console says that it stopped early and why."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sweeplab.search.records import ATTR_FAIL_REASON
from tests.conftest import sweep

CURVE = "tests/apps/curve.py"
BASE = ["-m", "hydra.sweeper.report=false", "hydra.sweeper.pruner.n_startup_trials=100"]


def _sweep_dir(where: Path) -> Path:
    (found,) = [p.parent for p in where.glob("multirun/*/*/all_trials.csv") if not p.parent.is_symlink()]
    return found


@pytest.mark.slow
def test_a_study_stopped_by_its_failure_rate_writes_its_result_files_and_says_why(tmp_path):
    result, trials = sweep(
        [*BASE, "hydra.sweeper.n_trials=10", "fail_above=0.3", "hydra.sweeper.max_failure_rate=0.1"],
        tmp_path,
        study="curve",
        ok=False,
        script=CURVE,
    )
    assert result.returncode == 1
    failed = [t for t in trials if t.user_attrs.get(ATTR_FAIL_REASON, "").startswith("RuntimeError")]
    assert len(failed) == 2  # the second failure exceeds 0.1 of 10 trials
    console = result.stdout + result.stderr
    assert "study curve stopped early (trial " in console and "max_failure_rate=0.1" in console
    assert "Traceback" not in console
    rows = list(csv.DictReader((_sweep_dir(tmp_path) / "all_trials.csv").open()))
    assert len(rows) == len([t for t in trials if t.state.is_finished()])
    assert (_sweep_dir(tmp_path) / "best_params.json").is_file()


@pytest.mark.slow
def test_a_study_stopped_by_its_timeout_says_it_stopped_early_and_writes_its_files(tmp_path):
    result, trials = sweep(
        [*BASE, "hydra.sweeper.n_trials=50", "hydra.sweeper.timeout=3", "epoch_s=0.1"],
        tmp_path,
        study="curve",
        script=CURVE,
    )
    finished = [t for t in trials if t.state.is_finished()]
    assert 0 < len(finished) < 50
    console = result.stdout + result.stderr
    assert f"study curve stopped early with {len(finished)} of 50 trials (hydra.sweeper.timeout=3s" in console
    assert (_sweep_dir(tmp_path) / "all_trials.csv").is_file()
