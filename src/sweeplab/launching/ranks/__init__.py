"""A trial that trains on several devices: the extra DDP ranks Lightning starts join the trial, never sweep.

Lightning's default DDP launcher starts rank k by running the process's command again (under Hydra with
`hydra.job.name=train_ddp_process_k`); in a study that command is the sweep's own `-m` command. The worker
that runs a trial names the trial's job dir in `TRIAL_DIR_ENV`, which the ranks inherit, and the sweep a
rank starts runs that job once, with the trial's own overrides (`.hydra/overrides.yaml`), as the rank: it
asks no trial and writes nothing to the study. Rank 0 alone reports to the trial; `PruningCallback` sends
the pruner's decision to every rank (`sweeplab.training.callbacks`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from hydra.core.utils import run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.errors import SweeplabError, chain

log = logging.getLogger(__name__)

TRIAL_DIR_ENV = "SWEEPLAB_TRIAL_DIR"  # set by the worker that runs a trial: its job dir
EXIT_ORPHANED_RANK = 75  # a rank whose rank 0 is gone: the trial ended without it
RANK_PID_GLOB = ".rank_*.pid"  # in the trial's dir: each extra rank's pid, for its worker (`lost_rank`)


def local_rank() -> int:
    """This process's rank on its machine, as a DDP launcher sets it (0 outside distributed training)."""
    try:
        return int(os.environ.get("LOCAL_RANK") or 0)
    except ValueError:
        return 0


def follower() -> bool:
    """This process is an extra rank of a study's trial: it trains, rank 0 reports."""
    return bool(os.environ.get(TRIAL_DIR_ENV)) and local_rank() > 0


def run_as_rank(hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> bool:
    """In a sweep started again by a DDP launcher: run the trial's job as this rank and return True; False
    in a sweep of its own. A rank with no trial to join (the trial ran in the sweep's own process) stops
    with one line rather than start a second sweep."""
    rank = local_rank()
    if rank == 0:
        return False
    where = os.environ.get(TRIAL_DIR_ENV)
    if not where:
        raise SweeplabError(
            f"this sweep was started again as DDP rank {rank} of a trial that runs in the sweep's own process; "
            "set hydra.sweeper.devices_per_trial to the trial's device count (each trial then runs in a "
            "worker process whose ranks join it)"
        )
    job_dir = Path(where)
    task = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    saved = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
    job = hydra_context.config_loader.load_sweep_config(config, task)
    with open_dict(job):
        job.hydra.sweep.dir = str(job_dir.parent)
        job.hydra.sweep.subdir = job_dir.name
        job.hydra.job.id = saved.job.id
        job.hydra.job.num = saved.job.num
    (job_dir / f".rank_{rank}.pid").write_text(str(os.getpid()))
    leave_with_parent(f"rank {rank}")
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=job,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    ret.return_value  # noqa: B018 -- a failed job raises its error here: this rank exits non-zero
    return True


def leave_with_parent(who: str) -> None:
    """End this process (`who`, for the line it leaves) when the process that started it is gone: a rank's
    rank 0 or the trial's worker, killed by the sweep, by a signal or by its own failure, can no longer
    wait for it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.write(
            2, f"[sweeplab {who}] the process that started it (pid {parent}) is gone: it stops\n".encode()
        )
        os._exit(EXIT_ORPHANED_RANK)

    threading.Thread(target=watch, name="sweeplab-rank-watch", daemon=True).start()


def killed_rank(raised: BaseException | None) -> str | None:
    """A rank that Lightning's ddp_spawn launcher started and a signal killed, said as a reason, from the
    error the launcher raised (torch's `ProcessExitedException` names the signal); None otherwise."""
    for e in () if raised is None else chain(raised):
        signal_name = getattr(e, "signal_name", None)
        if signal_name:
            index, pid = getattr(e, "error_index", "?"), getattr(e, "error_pid", "?")
            return f"DDP rank {index} of the trial (pid {pid}) was killed by {signal_name}"
    return None


def lost_rank(job_dir: Path) -> str | None:
    """A rank of the trial in `job_dir` that a signal killed (SIGKILL, the OOM killer), said as a reason;
    None when none was. The trial's own error is then only its rank 0 losing a peer (gloo's "connection
    reset", NCCL's timeout), so the trial is lost, not failed by its params. Only the ranks are looked at
    (each named its pid in the trial's dir as it started), not other children such as data-loading
    workers; they are left for their launcher to reap."""
    found = None
    for record in sorted(job_dir.glob(RANK_PID_GLOB)):
        try:
            pid = int(record.read_text())
            record.unlink()
            ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (OSError, ValueError):  # not this process's child, or already reaped
            continue
        if found is None and ended is not None and ended.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            rank = record.stem.rsplit("_", 1)[-1]
            found = f"DDP rank {rank} of the trial (pid {pid}) was killed by signal {ended.si_status}"
    return found
