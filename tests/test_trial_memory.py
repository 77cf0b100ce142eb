"""Trials that run in the sweep's own process (n_jobs=1 under the basic launcher) start with what the first
trial left: a trial that failed, out of memory above all, leaves nothing of itself (model, optimizer,
activations: on a GPU, its memory) to the trials after it."""

from __future__ import annotations

import json
import os

import pytest
from optuna.trial import TrialState

from sweeplab.search.records import ATTR_FAIL_REASON
from tests.conftest import QUICK, ROOT, sweep

pytestmark = pytest.mark.slow


def test_a_trial_that_runs_out_of_memory_in_backward_is_freed_before_the_next_trial_starts(tmp_path):
    probe = tmp_path / "probe.jsonl"  # benchmarks/_probe.py: the models alive as each job starts
    swept = sweep(
        [
            "-m",
            "hparams_search=optuna_fast",
            "exp_name=freed",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=0.5",
            "hydra.sweeper.report=false",
            "hydra.sweeper.quick_validation.epochs=1",
            "+callbacks.fault._target_=tests.faults.InjectFault",
            "+callbacks.fault.oom_backward=1",
            "+callbacks.trail._target_=_probe.WeightTrail",
            "+hydra.callbacks.watch._target_=_probe.CudaWatch",
            *QUICK,
        ],
        tmp_path,
        study="freed_fast",
        env={
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]),
            "SWEEPLAB_PROBE": str(probe),
        },
    )
    trials = {t.number: t for t in swept.trials}
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs[ATTR_FAIL_REASON].startswith("OutOfMemoryError: CUDA out of memory")
    assert trials[2].state == TrialState.COMPLETE
    records = [json.loads(line) for line in probe.read_text().splitlines()]
    assert {r["pid"] for r in records} == {records[0]["pid"]}  # every trial ran in the sweep's process
    alive = {
        r.get("job", "end"): r["models_alive"] for r in records if r["event"] in ("job_start", "sweep_end")
    }
    assert alive == {0: 0, 1: 0, 2: 0, "end": 0}
