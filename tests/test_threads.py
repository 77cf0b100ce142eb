"""A sweep that forks workers keeps its own torch on one thread, so each worker can use its share of cores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import faulthandler, os, sys
    if {torch_first}:
        import torch
    from sweeplab.search.threads import single_threaded_sweep, worker_threads
    single_threaded_sweep()
    import torch
    x = torch.randn(2000, 1000)
    (x * 2).sum()  # the sweep's own ops (its config check)
    pid = os.fork()
    if pid == 0:
        faulthandler.dump_traceback_later(60, exit=True)  # a hung worker ends, and the test fails
        worker_threads(2)
        z = torch.randn(4000, 1000)
        (z * 3 + 1).sum()  # ops big enough for a parallel region on 2 threads
        ok = torch.get_num_threads() == 2 and os.environ.get("OMP_NUM_THREADS") == {users!r}
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.parametrize("torch_first", [True, False])
@pytest.mark.parametrize("users", [None, "2"])
def test_a_worker_forked_after_the_sweep_ran_torch_ops_trains_on_its_threads(torch_first, users):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if users is not None:
        env["OMP_NUM_THREADS"] = users
    script = SCRIPT.format(torch_first=torch_first, users=users)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
