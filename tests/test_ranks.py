"""A trial's DDP ranks as its worker sees them (the whole path runs in test_ddp_trials.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sweeplab.launching.ranks import lost_rank


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


def test_a_spawned_rank_leaves_its_gloo_group_before_the_interpreter_ends(tmp_path):
    """A gloo group left to the interpreter's end can abort a rank whose work is done; a rank that Lightning
    spawned (a callback of ours pickled in another process) destroys it at exit, after the fit's own
    exit handlers. The handler registered first runs last: it sees what the interpreter is left with."""
    script = textwrap.dedent(
        f"""
        import atexit
        import torch.distributed as dist
        from sweeplab.training.spawned import Origin

        atexit.register(lambda: print("at the end, a group:", dist.is_initialized()))
        dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=0, world_size=1)
        Origin(pid=-1, log_files=(), log_format=None, level=0).join(rank=1)  # spawned: not its pickler
        print("in the rank, a group:", dist.is_initialized())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["in the rank, a group: True", "at the end, a group: False"]
