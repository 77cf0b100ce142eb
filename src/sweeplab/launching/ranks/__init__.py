"""A trial that trains on several devices: its extra DDP ranks run the trial's own command, never the sweep's.

Lightning's default DDP launcher starts ranks 1..k-1 of a fit by running the command of the process again
(`sys.argv`, with `hydra.job.name=train_ddp_process_k` and `hydra.output_subdir=null` added under Hydra).
So a trial's process that trains on several devices makes its command the trial's own (`as_rank_parent`):

    python -m sweeplab.launching.ranks <job dir>

run as the directory of this package, which holds only this module and `__main__`. The trial's process
leaves its packed job in the job dir (`RANK_JOB`): Hydra's context and the task function (`jobs`), the job's
config, and where the app's main module and import path are. Each rank started by that command loads it
(`join`) and runs the job as Hydra runs a job (`run_job`: logging to `<hydra.job.name>.log` in the job
dir, the job's callbacks), handed its rank (`sweeplab.launching.handover`) and no trial: rank 0 alone reports
to the trial, and `PruningCallback` sends the pruner's decision to every rank (`sweeplab.training.callbacks`).

Two records stay with the ranks, and why:
- `.rank_<k>.pid` in the job dir: the rank's pid, so the trial's process can tell its ranks from its other
  children (data-loading workers) when it asks whether a signal killed one (`lost_rank`);
- a thread watching the parent (`leave_with_parent`): a rank whose trial's process was killed (a stall,
  SIGKILL) would otherwise wait on its peers for ever. A rank is a fresh interpreter, never forked.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import types
from multiprocessing import spawn
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import run_job
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.errors import SweeplabError, chain
from sweeplab.launching.handover import Handed, handing

log = logging.getLogger(__name__)

EXIT_ORPHANED_RANK = 75  # a rank whose rank 0 is gone: the trial ended without it
RANK_PID_GLOB = ".rank_*.pid"  # in the trial's dir: each extra rank's pid, for its worker (`lost_rank`)
RANK_JOB = ".sweeplab_rank_job.pkl"  # in the trial's dir: the packed job its ranks run (`as_rank_parent`)
# the Hydra keys a DDP launcher adds to the command that a rank takes on; `hydra.run.dir` names a plain
# run's dir, and a rank writes in its trial's job dir
RANK_KEYS = ("hydra.job.name", "hydra.output_subdir")
# what a rank takes from the trial's process to import as it does (multiprocessing's own preparation data)
PREPARATION = ("sys_path", "init_main_from_name", "init_main_from_path")


def local_rank() -> int:
    """This process's rank on its machine, as a DDP launcher sets it (0 outside distributed training)."""
    try:
        return int(os.environ.get("LOCAL_RANK") or 0)
    except ValueError:
        return 0


def refuse_rank_sweep() -> None:
    """A sweep started as a DDP rank: a trial ran in the sweep's own process and a DDP launcher ran the
    sweep's command again for its other ranks. It stops with one line rather than start a second sweep."""
    rank = local_rank()
    if rank > 0:
        raise SweeplabError(
            f"this sweep was started again as DDP rank {rank} of a trial that runs in the sweep's own process; "
            "set hydra.sweeper.devices_per_trial to the trial's device count (each trial then runs in a "
            "process of its own, whose ranks run the trial's own command)"
        )


def as_rank_parent(job_dir: Path, task: bytes, config: DictConfig) -> None:
    """In a trial's process, before its job runs: make the command a DDP launcher runs again for the trial's
    other ranks this trial's own (`join` runs it), and leave the job it runs in `job_dir`."""
    main = sys.modules["__main__"]
    data = spawn.get_preparation_data("rank")
    where = {key: data[key] for key in PREPARATION if key in data}
    (job_dir / RANK_JOB).write_bytes(pickle.dumps((task, config, where)))
    if getattr(main, "__spec__", None) is not None:
        # an app run as `python -m app`: a launcher would run `-m app` again; the command is this package's
        # path instead, and the app's module stays `__mp_main__`, where pickled references to it point
        entry = types.ModuleType("__main__")
        entry.__dict__.update({k: v for k, v in vars(main).items() if k != "__spec__"}, __spec__=None)
        sys.modules["__main__"] = entry
    sys.argv = [str(Path(__file__).parent), str(job_dir.resolve())]


def join(args: list[str]) -> None:
    """A trial's extra rank: run the job its trial's process left in the job dir `args[0]`, taking the Hydra
    keys of `RANK_KEYS` that the launcher added after it."""
    if not args:
        raise SweeplabError("usage: python -m sweeplab.launching.ranks <job dir> [hydra.job.name=...]")
    job_dir = Path(args[0])
    try:
        task, config, where = pickle.loads((job_dir / RANK_JOB).read_bytes())  # noqa: S301 -- its trial's
    except OSError as exc:
        raise SweeplabError(
            f"{job_dir / RANK_JOB}: no job to join ({exc.strerror}); a rank runs inside a trial that trains "
            "on several devices, started by its DDP launcher"
        ) from None
    spawn.prepare(where)  # the trial's import path, and the app's main module as `__mp_main__`
    from sweeplab.launching.jobs import unpack_task

    hydra_context, task_function = unpack_task(task)
    with open_dict(config):
        for override in OverridesParser.create().parse_overrides(args[1:]):
            if override.key_or_group in RANK_KEYS:
                OmegaConf.update(config, override.key_or_group, override.value(), merge=False)
    rank = local_rank()
    (job_dir / f".rank_{rank}.pid").write_text(str(os.getpid()))
    leave_with_parent(f"rank {rank}")
    with handing(Handed(rank=rank)):  # an extra rank: it trains and follows rank 0, which reports
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    leave_process_group()
    ret.return_value  # noqa: B018 -- a failed job raises its error here: this rank exits non-zero


def leave_process_group() -> None:
    """Destroy this rank's default process group, if it still has one, while the interpreter is whole.

    Lightning destroys it at exit for NCCL only. A gloo group left to the interpreter's end takes its worker
    threads down unjoined, and the rank aborts ("terminate called without an active exception") after its
    work is done: the launcher then sees a rank die and fails a trial that had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
