"""What runs a trial's job: the study loop starts jobs and waits for their outcomes, through either executor.

- `LauncherBatches`: batches of up to n_jobs through any Hydra launcher (the basic one runs them in this
  process; SLURM, joblib and the like elsewhere). A launcher returns when its slowest job ends.
- `ProcessPool` (n_jobs > 1 under the basic launcher): each trial is a Hydra job in its own forked
  process, and a slot is refilled as soon as its trial ends (complete, pruned, failed or killed), with no
  batch barrier. A forked child starts at once with everything the sweeper imported, runs the job as
  Hydra's basic launcher would (`run_job`: output dir, `.hydra/`, logging, callbacks), sends back a small
  outcome and exits, so whatever it allocated (GPU memory included) is freed with the process. The
  sweeper itself never touches CUDA, so the children may.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import optuna
from hydra.core.utils import JobReturn, JobStatus, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from sweeplab.errors import SweeplabError, config_error, one_line

log = logging.getLogger("sweeplab.sweep")

WORKER_LOG = "worker.log"  # a child's stdout and stderr (progress bar, warnings), in its job dir
STOP_GRACE_S = 5.0  # after SIGTERM, how long a child may take before SIGKILL


@dataclass
class Outcome:
    """What a finished job tells the study: its value, or why it has none."""

    value: Any = None
    error: str | None = None  # "Type: message" of what the job raised, or how its process died
    pruned: bool = False
    config_error: bool = False  # a SweeplabError: every trial would fail alike
    lost: bool = False  # the process died without a result (SIGKILL, OOM killer): the trial runs again

    @classmethod
    def of(cls, ret: JobReturn) -> Outcome:
        if ret.status == JobStatus.COMPLETED:
            return cls(value=ret._return_value)
        raised = ret._return_value
        if not isinstance(raised, BaseException):
            return cls(error="RuntimeError: job failed")
        return cls(
            error=one_line(raised),
            pruned=isinstance(raised, optuna.TrialPruned),
            config_error=isinstance(raised, SweeplabError),
        )


class Executor(Protocol):
    """Runs trials' jobs for the study loop: `start` one when there is room, `wait_any` for outcomes."""

    @property
    def running(self) -> Sequence[int]:
        """Numbers of the trials started and not yet returned by `wait_any`."""
        ...

    def has_room(self) -> bool: ...

    def start(self, number: int, overrides: list[str]) -> None:
        """Run trial `number` as Hydra job `number` with these overrides."""
        ...

    def wait_any(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Block until at least one started trial ends (or `timeout`); the outcome of each that ended."""
        ...

    def stop_all(self) -> list[int]:
        """Stop what still runs (Ctrl-C, an error in the loop); the numbers of the trials stopped."""
        ...


Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


class LauncherBatches:
    """Trials through a Hydra launcher, in batches of up to `n_jobs`: `start` queues a trial, `wait_any`
    launches the queue and returns when the launcher does, with every trial's outcome."""

    def __init__(self, launch: Launch, n_jobs: int) -> None:
        self.launch, self.n_jobs = launch, n_jobs
        self.queued: dict[int, list[str]] = {}

    @property
    def running(self) -> list[int]:
        return list(self.queued)

    def has_room(self) -> bool:
        return len(self.queued) < self.n_jobs

    def start(self, number: int, overrides: list[str]) -> None:
        self.queued[number] = list(overrides)

    def wait_any(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Job number = trial number: trials with consecutive numbers go to the launcher together."""
        numbers = list(self.queued)
        if not numbers:
            return []
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            returns = list(self.launch([self.queued[n] for n in numbers], numbers[0]))
        else:
            returns = [r for n in numbers for r in self.launch([self.queued[n]], n)]
        self.queued.clear()
        return [(n, Outcome.of(r)) for n, r in zip(numbers, returns, strict=True)]

    def stop_all(self) -> list[int]:
        """A launcher cannot be stopped from here: an interrupted launch has already returned."""
        self.queued.clear()
        return []


def visible_devices() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU the driver reports."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]  # NVML count: does not initialise CUDA
    except ImportError:
        return []


def assign_devices(n_jobs: int, devices: list[str], share: bool) -> list[str | None]:
    """Worker i → GPU i mod g; more workers than GPUs only when sharing is asked for."""
    if not devices:
        return [None] * n_jobs
    if n_jobs > len(devices) and not share:
        raise config_error(
            "hydra.sweeper.n_jobs",
            n_jobs,
            f"is more than the {len(devices)} visible GPU(s) ({','.join(devices)}); set "
            "hydra.sweeper.share_gpus=true to run several trials on one GPU",
        )
    return [devices[i % len(devices)] for i in range(n_jobs)]


@dataclass
class _Running:
    number: int
    slot: int
    process: Any
    conn: Connection
    started: float


class ProcessPool:
    """Runs trials as forked Hydra jobs, at most `len(slots)` at a time."""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        slots: list[str | None],
    ) -> None:
        if sys.platform == "win32" or "fork" not in mp.get_all_start_methods():
            raise SweeplabError("hydra.sweeper.n_jobs > 1 needs the fork start method (Linux, macOS)")
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.slots = slots
        # resolved once here, so ${now:...} is cached in the master config and every job copies that cache
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.jobs: dict[int, _Running] = {}  # by trial number
        # CPU threads per trial: the cores shared out, so k trials do not oversubscribe them
        self.threads = max(1, (os.cpu_count() or 1) // len(slots))
        self._fork = mp.get_context("fork")

    def free_slot(self) -> int | None:
        busy = {r.slot for r in self.jobs.values()}
        return next((i for i in range(len(self.slots)) if i not in busy), None)

    @property
    def running(self) -> list[int]:
        return list(self.jobs)

    def has_room(self) -> bool:
        return self.free_slot() is not None

    def start(self, number: int, overrides: list[str]) -> None:
        """Compose job `number` here (errors surface in the sweeper) and fork it into a free slot."""
        slot = self.free_slot()
        assert slot is not None, "no free slot"
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = number
            sweep_config.hydra.job.num = number
        job_dir = self.sweep_dir / str(sweep_config.hydra.sweep.subdir)
        receive, send = self._fork.Pipe(duplex=False)
        process = self._fork.Process(
            target=_child,
            args=(
                send,
                self.hydra_context,
                self.task_function,
                sweep_config,
                self.slots[slot],
                self.threads,
                job_dir,
            ),
            name=f"sweeplab-trial-{number}",
            daemon=False,
        )
        process.start()
        send.close()
        self.jobs[number] = _Running(number, slot, process, receive, time.monotonic())
        device = f" on GPU {self.slots[slot]}" if self.slots[slot] is not None else ""
        log.info("trial %d started in worker %d (pid %d)%s", number, slot, process.pid, device)

    def wait_any(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Block until at least one trial ends (or `timeout`); return each ended trial's outcome."""
        if not self.jobs:
            return []
        ready = wait([r.process.sentinel for r in self.jobs.values()], timeout=timeout)
        done = []
        for run in [r for r in self.jobs.values() if r.process.sentinel in ready]:
            outcome = None
            if run.conn.poll():
                try:
                    outcome = run.conn.recv()
                except EOFError:
                    outcome = None
            run.process.join()
            run.conn.close()
            if outcome is None:
                outcome = Outcome(error=_death(run.process.exitcode), lost=True)
            del self.jobs[run.number]
            done.append((run.number, outcome))
        return done

    def stop_all(self) -> list[int]:
        """SIGTERM every child, SIGKILL those still alive after a grace period; returns their trial numbers."""
        numbers = list(self.jobs)
        for run in self.jobs.values():
            if run.process.is_alive():
                run.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for run in self.jobs.values():
            run.process.join(max(0.0, deadline - time.monotonic()))
            if run.process.is_alive():
                run.process.kill()
                run.process.join()
            run.conn.close()
        self.jobs.clear()
        return numbers


def _child(
    send: Connection,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    sweep_config: DictConfig,
    device: str | None,
    threads: int,
    job_dir: Path,
) -> None:
    """The forked trial: leave Ctrl-C to the sweeper, pin the GPU, run the job, report, exit without cleanup."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweeper stops its children itself
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = device  # read when CUDA initialises, in this process
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        job_dir.mkdir(parents=True, exist_ok=True)
        out = os.open(job_dir / WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        outcome = Outcome.of(ret)
        try:
            send.send(outcome)
        except Exception:  # an unpicklable return value: say so rather than lose the trial silently
            send.send(
                Outcome(error=f"TypeError: the job returned {type(outcome.value).__name__}, not a number")
            )
    except BaseException as exc:  # the child must always report and exit
        code = 1
        with contextlib.suppress(Exception):
            send.send(Outcome(error=one_line(exc)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # never run the sweeper's atexit handlers or finalisers (its storage connections) in a child
        os._exit(code)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"WorkerKilled: the trial's process was killed by signal {-exitcode} ({name})"
    return f"WorkerDied: the trial's process exited with code {exitcode} without a result"
