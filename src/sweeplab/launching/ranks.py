"""A trial that trains on several devices: the extra DDP ranks Lightning starts run the trial's own command.

Lightning's default DDP launcher starts ranks 1..k-1 by running the process's command again (under Hydra
with `hydra.run.dir`, `hydra.job.name=train_ddp_process_k` and `hydra.output_subdir=null` added). A
trial's process therefore carries, as its `sys.argv`, the command that runs that trial as one plain Hydra
run (`rank_command`): the app, its config flags, the sweep's Hydra overrides that shape the job, the
trial's own overrides, and `RankJoin` as a Hydra callback; its `hydra.run.dir` is the trial's dir. A rank
is then an ordinary run of the app with the trial's config, in the trial's dir, never a sweep. It finds
`TRIAL_DIR_ENV` in the environment its worker set: it reports nothing (rank 0 alone does;
`PruningCallback` sends the pruner's decision to every rank, `sweeplab.training.callbacks`), and
`RankJoin` ties it to its trial.

Two ties stay, because Lightning has neither: each rank names its pid in the trial's dir, so that its
worker tells a rank killed by a signal (the trial is lost and runs again) from a trial whose params failed
(`lost_rank`); and each rank ends when the process that started it is gone (`leave_with_parent`), since a
rank whose rank 0 was killed would otherwise wait in a collective until the backend's timeout (30 minutes
for NCCL and gloo).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweeplab.errors import SweeplabError, chain
from sweeplab.search.space import override_key

log = logging.getLogger(__name__)

TRIAL_DIR_ENV = "SWEEPLAB_TRIAL_DIR"  # set by the worker that runs a trial: its job dir
EXIT_ORPHANED_RANK = 75  # a rank whose rank 0 is gone: the trial ended without it
RANK_PID_GLOB = ".rank_*.pid"  # in the trial's dir: each extra rank's pid, for its worker (`lost_rank`)
# Hydra overrides of the sweep that a single run of a trial must not repeat: the sweep's own, and those a
# DDP launcher adds to the rank's command
_SWEEP_ONLY = (
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweep",
    "hydra.mode",
    "hydra.run.dir",
    "hydra.job.name",
    "hydra.output_subdir",
    "hydra.callbacks.sweeplab_rank",
)


def local_rank() -> int:
    """This process's rank on its machine, as a DDP launcher sets it (0 outside distributed training)."""
    try:
        return int(os.environ.get("LOCAL_RANK") or 0)
    except ValueError:
        return 0


def follower() -> bool:
    """This process is an extra rank of a study's trial: it trains, rank 0 reports."""
    return bool(os.environ.get(TRIAL_DIR_ENV)) and local_rank() > 0


def rank_command(job: DictConfig, argv: list[str]) -> list[str]:
    """The trial's own command, as the sys.argv of its process (`argv`: the sweep's): what a DDP launcher
    runs again for the trial's other ranks."""
    hydra_overrides = [o for o in job.hydra.overrides.hydra if not override_key(o).startswith(_SWEEP_ONLY)]
    return [
        argv[0],
        *_config_flags(argv[1:]),
        *hydra_overrides,
        *job.hydra.overrides.task,
        f"+hydra.callbacks.sweeplab_rank._target_={RankJoin.__module__}.{RankJoin.__qualname__}",
    ]


def _config_flags(args: list[str]) -> list[str]:
    """Hydra's flags that choose the primary config (--config-path, --config-name, --config-dir)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for short, long in (("-cp", "--config-path"), ("-cn", "--config-name"), ("-cd", "--config-dir")):
        parser.add_argument(short, long, dest=long)
    known, _ = parser.parse_known_args(args)
    return [f"{flag}={value}" for flag, value in vars(known).items() if value is not None]


def refuse_rank_sweep() -> None:
    """A sweep started as a DDP rank: a trial ran in the sweep's own process with a trainer on several
    devices, whose launcher ran the sweep's command again. One line, rather than a second sweep."""
    rank = local_rank()
    if rank > 0:
        raise SweeplabError(
            f"this sweep was started again as DDP rank {rank} of a trial that runs in the sweep's own process; "
            "set hydra.sweeper.devices_per_trial to the trial's device count (each trial then runs in a "
            "worker process whose ranks run the trial's own command)"
        )


class RankJoin(Callback):
    """A Hydra callback on the command of a trial's extra DDP ranks: the rank names its pid in the trial's
    dir and ends when the process that started it is gone. Does nothing on rank 0 or outside a trial."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        where, rank = os.environ.get(TRIAL_DIR_ENV), local_rank()
        if not where or rank == 0:
            return
        (Path(where) / f".rank_{rank}.pid").write_text(str(os.getpid()))
        leave_with_parent(f"rank {rank}")


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
