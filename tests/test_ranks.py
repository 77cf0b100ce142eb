"""A trial's DDP ranks as its worker sees them (the whole path runs in test_ddp_trials.py)."""

from __future__ import annotations

import os
import signal
import subprocess
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
