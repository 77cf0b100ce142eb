"""What runs a trial's job: the study loop starts jobs and waits for their outcomes, through either executor.

- `LauncherBatches`: batches of up to n_jobs through any Hydra launcher (the basic one runs them in this
  process; SLURM, joblib and the like elsewhere). A launcher returns when its slowest job ends.
- `ProcessPool` (n_jobs > 1 under the basic launcher): each trial is a Hydra job in a process of its own,
  and a slot is refilled as soon as its trial ends (complete, pruned, failed or killed), with no batch
  barrier. The process runs the job as Hydra's launchers do (`run_job`: output dir, `.hydra/`, logging,
  callbacks), sends back a small outcome and exits, so whatever it allocated (GPU memory included) is
  freed with the process.

A trial's process is started clean: it is forked from a fork server, a process started by exec (never a
fork of the sweep, whose threads may hold a lock and which may have touched CUDA) that imported the heavy
packages the sweep has loaded (torch, Lightning, timm...) once, so that a trial still starts in a fraction
of a second. The job's config, Hydra's state and the task function travel pickled, as Hydra's own launchers
ship them (the function by its name in the app's module, or with cloudpickle where it has none), with the
sweep's environment and working directory. A trial on several devices makes its command its own, which a DDP
launcher runs again for the trial's other ranks (`ranks`).

A worker never outlives its sweep and never hangs it: a thread of the worker beats into memory it shares
with the sweep every second and ends the worker once the sweep's process is gone (a pipe whose only writer
is the sweep reads end-of-file); the sweep kills a worker whose beat stops for `hydra.sweeper.stall_timeout`
(stopped, hung, deadlocked while holding the GIL), and its trial runs again. Ctrl-C is the sweep's alone (a
worker ignores it; the sweep stops its workers); SIGTERM stops a worker at once, as killed by it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.errors import SweeplabError, chain, config_error, failure, one_line
from sweeplab.launching.handover import handing_trial
from sweeplab.launching.jobs import pack_task, unpack_task
from sweeplab.launching.ranks import RANK_JOB, as_rank_parent, killed_rank, lost_rank
from sweeplab.search.outage import StorageUnreachable, off_wait, on_wait
from sweeplab.search.records import ATTR_UNTOLD, STALLED
from sweeplab.search.trial import job_trial

log = logging.getLogger("sweeplab.sweep")

WORKER_LOG = "worker.log"  # a child's stdout and stderr (progress bar, warnings), in its job dir
STOP_GRACE_S = 5.0  # after SIGTERM, how long a child may take before SIGKILL
BEAT_S = 1.0  # how often a child's watch thread beats and looks for its sweep
POLL_S = 2.0  # the longest the sweep waits for its children without looking for stalled ones
EXIT_ORPHANED = 3  # a child's exit status when its sweep's process is gone
# Packages a trial's process finds imported when it starts, where the sweep has loaded them: the fork server
# imports them once (a trial of a PyTorch app would otherwise spend seconds importing them)
PRELOADED = (
    "numpy",
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning",
    "pytorch_lightning",
    "timm",
    "sklearn",
    "optuna",
    "sqlalchemy",
    "hydra",
    "omegaconf",
)


@dataclass
class Outcome:
    """What a finished job tells the study: its value, or why it has none."""

    value: Any = None
    error: str | None = None  # "Type: message" of what the job raised, or how its process died
    pruned: bool = False
    config_error: bool = False  # a SweeplabError: every trial would fail alike
    lost: bool = False  # the process died without a result (SIGKILL, OOM killer): the trial runs again
    storage_lost: bool = False  # the job waited its whole storage_retry window for the storage, in vain

    @classmethod
    def of(cls, ret: JobReturn) -> Outcome:
        if ret.status == JobStatus.COMPLETED:
            return cls(value=ret._return_value)
        raised = ret._return_value
        if not isinstance(raised, BaseException):
            return cls(error="RuntimeError: job failed")
        if isinstance(raised, StorageUnreachable):  # the job lost its storage: not the params' fault
            return cls(error=one_line(raised), lost=True, storage_lost=True)
        mistake = _config_mistake(raised)
        if mistake is not None:  # e.g. in a callback Hydra instantiated: its message, not Hydra's wrapper
            return cls(error=one_line(mistake), config_error=True)
        return cls(
            error=failure(raised),
            pruned=isinstance(raised, optuna.TrialPruned),
            config_error=isinstance(raised, SweeplabError),
        )


def _config_mistake(raised: BaseException) -> SweeplabError | None:
    """The SweeplabError that `raised` is or wraps (Hydra's InstantiationException wraps what a `_target_`
    raised, and keeps only its first line in view)."""
    return next((e for e in chain(raised) if isinstance(e, SweeplabError)), None)


class Executor(Protocol):
    """Runs trials' jobs for the study loop: `start` one when there is room, `wait_any` for outcomes."""

    @property
    def running(self) -> Sequence[int]:
        """Numbers of the trials started and not yet returned by `wait_any`."""
        ...

    def has_room(self) -> bool: ...

    def start(self, number: int, overrides: list[str], trial: Any = None) -> None:
        """Run trial `number` as Hydra job `number` with these overrides, handing the job its trial's address
        (`sweeplab.search.trial.TrialAddress`) where the job runs under this executor's hand."""
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

    def __init__(
        self, launch: Launch, n_jobs: int, quiet_dir: Path | None = None, in_process: bool = False
    ) -> None:
        """`in_process`: the launcher runs jobs in this process (Hydra's basic launcher), one at a time, and
        each is handed its trial; with `quiet_dir`, each job's output goes to `worker.log` in its job dir, as a
        worker process's does (the sweep dir holds it where a job made no dir). Otherwise the jobs run
        elsewhere, find their trials from their configs, and their output stays as the launcher leaves it."""
        self.launch, self.n_jobs, self.quiet_dir, self.in_process = launch, n_jobs, quiet_dir, in_process
        self.queued: dict[int, list[str]] = {}
        self.trials: dict[int, Any] = {}  # by trial number: the address each job run here is handed

    @property
    def running(self) -> list[int]:
        return list(self.queued)

    def has_room(self) -> bool:
        return len(self.queued) < self.n_jobs

    def start(self, number: int, overrides: list[str], trial: Any = None) -> None:
        self.queued[number] = list(overrides)
        self.trials[number] = trial

    def wait_any(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Job number = trial number: trials with consecutive numbers go to the launcher together."""
        numbers = list(self.queued)
        if not numbers:
            return []
        if self.in_process:
            returns = [self._launch_here(n, self.queued[n]) for n in numbers]
        elif numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            returns = list(self.launch([self.queued[n] for n in numbers], numbers[0]))
        else:
            returns = [r for n in numbers for r in self.launch([self.queued[n]], n)]
        self.queued.clear()
        self.trials.clear()
        outcomes = [(n, Outcome.of(r)) for n, r in zip(numbers, returns, strict=True)]
        if any(r.status != JobStatus.COMPLETED for r in returns):
            # A job that raised holds its objects through the exception's traceback (a frame keeps its
            # function, a closure its trainer, model and optimizer: on a GPU, that memory) in reference
            # cycles; freed here, before the next job starts in this process.
            del returns
            gc.collect()
        return outcomes

    def _launch_here(self, number: int, overrides: list[str]) -> JobReturn:
        """Job `number` in this process, handed its trial."""
        with handing_trial(self.trials.get(number)):
            if self.quiet_dir is None:
                (ret,) = self.launch([overrides], number)
                return ret
            return self._launch_quietly(number, overrides)

    def _launch_quietly(self, number: int, overrides: list[str]) -> JobReturn:
        """Job `number` in this process, its stdout and stderr (prints, progress bars, the app's logging,
        whatever its job logging looks like) in its job dir's worker.log; the sweep's console stays the
        sweep's. The job dir is known once the job has run, so the output goes to the sweep dir first."""
        assert self.quiet_dir is not None
        self.quiet_dir.mkdir(parents=True, exist_ok=True)
        spill = self.quiet_dir / f"{number}.{WORKER_LOG}"
        with output_to(spill) as console:
            told = _ConsoleWaits(console, number)
            on_wait(told)  # the job's storage waits, which its own log holds, said on the console too
            try:
                (ret,) = self.launch([overrides], number)
            finally:
                off_wait(told)
        job_dir = OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir", default=None)
        if job_dir is not None and Path(job_dir).is_dir():
            with open(Path(job_dir) / WORKER_LOG, "ab") as out, open(spill, "rb") as spilled:
                out.write(spilled.read())
            spill.unlink()
        return ret

    def stop_all(self) -> list[int]:
        """A launcher cannot be stopped from here: an interrupted launch has already returned."""
        self.queued.clear()
        self.trials.clear()
        return []


class _ConsoleWaits:
    """Says on the console (file descriptor `fd`, the sweep's stderr while a job's output goes to its log)
    when the job of trial `number`, run in the sweep's process, starts and ends waiting for the storage."""

    FORMAT = logging.Formatter("[%(asctime)s][HYDRA] %(message)s")  # as the sweep's own console lines

    def __init__(self, fd: int | None, number: int) -> None:
        self.fd, self.number = fd, number

    def __call__(self, waiting: bool) -> None:
        if self.fd is None:
            return
        text = (
            f"the job of trial {self.number} cannot reach the storage: it waits for it "
            "(hydra.sweeper.storage_retry; its worker.log says why)"
            if waiting
            else f"the job of trial {self.number} reaches the storage again"
        )
        record = logging.LogRecord(log.name, logging.WARNING, __file__, 0, text, None, None)
        with contextlib.suppress(OSError):
            os.write(self.fd, (self.FORMAT.format(record) + "\n").encode())


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[int | None]:
    """This process's stdout and stderr appended to `path` for the block: file descriptors 1 and 2, so that
    prints, progress bars, logging handlers made before the block (Lightning's own) and C libraries all
    go there, whatever Python objects they hold. Yields a descriptor of the console's stderr (None: none)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no stdout or stderr to redirect (a daemon's closed descriptors): nothing to hide
        yield None
        return
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(out, 1)
        os.dup2(out, 2)
        yield saved[1]
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, out):
            os.close(fd)


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


def assign_devices(n_jobs: int, devices: list[str], share: bool, per_trial: int = 1) -> list[str | None]:
    """Worker i → GPUs [i*k, (i+1)*k) (k = `per_trial`, as "0,1"), wrapping around the visible GPUs only
    when sharing is asked for; None (the CPU) for every worker where no GPU is visible."""
    if not devices:
        return [None] * n_jobs
    if n_jobs * per_trial > len(devices) and not share:
        wanted = f"{n_jobs} worker(s) x {per_trial} GPU(s) per trial" if per_trial > 1 else f"{n_jobs}"
        raise config_error(
            "hydra.sweeper.n_jobs",
            n_jobs,
            f"{wanted} is more than the {len(devices)} visible GPU(s) ({','.join(devices)}); set "
            "hydra.sweeper.share_gpus=true to run several trials on one GPU",
        )
    if per_trial > len(devices):
        raise config_error(
            "hydra.sweeper.devices_per_trial",
            per_trial,
            f"is more than the {len(devices)} visible GPU(s) ({','.join(devices)}), shared or not",
        )
    return [
        ",".join(devices[(i * per_trial + j) % len(devices)] for j in range(per_trial)) for i in range(n_jobs)
    ]


@dataclass
class _Running:
    """A trial's process. It is the fork server's child, not the sweep's: whether it still runs is known
    from a pidfd (Linux), which holds even when the fork server itself was killed (a SIGTERM to the whole
    process group), and the fork server reports its exit status while it lives."""

    number: int
    slot: int
    process: Any
    conn: Connection
    started: float
    beat: Any  # the child's last sign of life (time.monotonic(), in memory shared with the child)
    waiting: Any  # since when the child waits for its storage (time.monotonic(); 0: it does not)
    pidfd: int | None = None  # readable once the process has ended

    def __post_init__(self) -> None:
        if self.pidfd is None and hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(self.process.pid)

    @property
    def ended_when_ready(self) -> Any:
        """What `multiprocessing.connection.wait` finds ready once the process has ended."""
        return self.pidfd if self.pidfd is not None else self.process.sentinel

    def alive(self) -> bool:
        if self.pidfd is None:
            return self.process.is_alive()
        return not wait([self.pidfd], timeout=0)

    def send(self, signum: int) -> None:
        """`signum` to the process while it runs (never to a later process given its pid)."""
        if self.pidfd is None:
            if self.process.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(self.process.pid, signum)
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, signum)

    def reap(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for the process to end; whether it has."""
        if self.pidfd is not None and not wait([self.pidfd], timeout=timeout):
            return False
        self.process.join(timeout)
        return not self.alive()

    def close(self) -> None:
        self.conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class ProcessPool:
    """Runs trials as Hydra jobs in processes of their own, at most `len(slots)` at a time."""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        slots: list[str | None],
        stall_timeout: float | None = None,
        devices_per_trial: int = 1,
    ) -> None:
        start_trial_server()
        self.hydra_context, self.config = hydra_context, config  # the task function travels packed (`_task`)
        self.slots, self.devices_per_trial = slots, devices_per_trial
        self.stall_timeout = stall_timeout  # seconds a child may not beat before it is killed; None: never
        # resolved once here, so ${now:...} is cached in the master config and every job copies that cache
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.jobs: dict[int, _Running] = {}  # by trial number
        # CPU threads per trial: the cores shared out, so k trials do not oversubscribe them
        self.threads = max(1, (os.cpu_count() or 1) // len(slots))
        self._server = mp.get_context("forkserver")
        self._task = pack_task(hydra_context, task_function)
        # a trial's process reads end-of-file here once the sweep's process is gone (it alone holds `_alive`)
        self._sweep_gone, self._alive = self._server.Pipe(duplex=False)
        self.storage_waiters: set[int] = set()  # trials whose jobs the console said wait for the storage

    def free_slot(self) -> int | None:
        busy = {r.slot for r in self.jobs.values()}
        return next((i for i in range(len(self.slots)) if i not in busy), None)

    @property
    def running(self) -> list[int]:
        return list(self.jobs)

    def has_room(self) -> bool:
        return self.free_slot() is not None

    def start(self, number: int, overrides: list[str], trial: Any = None) -> None:
        """Compose job `number` here (errors surface in the sweeper) and start its process in a free slot; the
        job is handed `trial` there."""
        slot = self.free_slot()
        assert slot is not None, "no free slot"
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = number
            sweep_config.hydra.job.num = number
            job_dir = self.sweep_dir / str(sweep_config.hydra.sweep.subdir)
        receive, send = self._server.Pipe(duplex=False)
        beat = self._server.RawValue("d", time.monotonic())
        waiting = self._server.RawValue("d", 0.0)
        start = _Start(
            task=self._task,
            config=sweep_config,
            device=self.slots[slot],
            threads=self.threads,
            job_dir=job_dir,
            env=dict(os.environ),
            cwd=os.getcwd(),
            argv=list(sys.argv),
            ranks=self.devices_per_trial > 1,
            trial=trial,
        )
        watch = _Watch(os.getpid(), beat, self._sweep_gone, waiting)
        process = self._server.Process(
            target=_child, args=(send, start, watch), name=f"sweeplab-trial-{number}", daemon=False
        )
        process.start()
        send.close()
        self.jobs[number] = _Running(number, slot, process, receive, time.monotonic(), beat, waiting)
        device = f" on {gpus(self.slots[slot])}" if self.slots[slot] is not None else ""
        log.info("trial %d started in worker %d (pid %d)%s", number, slot, process.pid, device)

    def wait_any(self, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Block until at least one trial ends or is killed as stalled (or `timeout`); return each ended
        trial's outcome. Wakes every few seconds to look for stalled children, whatever `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.jobs:
            left = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            ready = wait([r.ended_when_ready for r in self.jobs.values()], timeout=left)
            self._say_storage_waits()
            done = [self._ended(r) for r in list(self.jobs.values()) if r.ended_when_ready in ready]
            done += self._stop_stalled()
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done
        return []

    def _say_storage_waits(self) -> None:
        """On the console, once: the trials whose jobs wait for the storage (their own log says why); and once
        again when a job that waited reaches it again (one that ended waiting is said by its outcome)."""
        waiting = {n for n, r in self.jobs.items() if r.waiting.value}
        if waiting and not self.storage_waiters:
            log.warning(
                "the jobs of trials %s cannot reach the storage: they wait for it (hydra.sweeper.storage_retry; "
                "their worker.log says why)",
                sorted(waiting),
            )
        elif not waiting and any(n in self.jobs for n in self.storage_waiters):
            log.warning("the jobs reach the storage again")
        self.storage_waiters = waiting | (self.storage_waiters if waiting else set())

    def _ended(self, run: _Running, stalled: str | None = None) -> tuple[int, Outcome]:
        """Reap a child that exited (or was killed as `stalled`): what it sent, else how it died."""
        outcome = None
        if run.conn.poll():
            try:
                outcome = run.conn.recv()
            except EOFError:
                outcome = None
        run.reap()
        run.close()
        if outcome is None:
            outcome = Outcome(error=stalled or _death(run.process.exitcode), lost=True)
        del self.jobs[run.number]
        return run.number, outcome

    def _stop_stalled(self) -> list[tuple[int, Outcome]]:
        """SIGKILL (which stops a stopped process too) each child silent for `stall_timeout`."""
        if self.stall_timeout is None:
            return []
        done = []
        for run in list(self.jobs.values()):
            silent = time.monotonic() - run.beat.value
            if silent < self.stall_timeout or not run.alive():
                continue
            run.send(signal.SIGKILL)
            why = (
                f"{STALLED}: no sign of life from the trial's process (pid {run.process.pid}) for "
                f"{silent:.0f}s, more than hydra.sweeper.stall_timeout={self.stall_timeout:g} (stopped, hung "
                "or deadlocked): killed"
            )
            done.append(self._ended(run, why))
        return done

    def stop_all(self) -> list[int]:
        """SIGTERM every child, SIGKILL those still alive after a grace period; returns their trial numbers."""
        numbers = list(self.jobs)
        for run in self.jobs.values():
            run.send(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for run in self.jobs.values():
            if not run.reap(max(0.0, deadline - time.monotonic())):
                run.send(signal.SIGKILL)
                run.reap()
            run.close()
        self.jobs.clear()
        return numbers


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def trials_in_processes(config: DictConfig) -> bool:
    """A sweep of this config (`hydra.sweeper` sweeplab's) runs its trials in worker processes: n_jobs > 1 or
    trials on several devices, under Hydra's basic launcher (as far as the raw config says: a wrong value
    is refused by the plan)."""
    hydra = config.get("hydra") or {}
    sweeper, launcher = hydra.get("sweeper") or {}, hydra.get("launcher") or {}
    try:
        many = int(sweeper.get("n_jobs") or 1) > 1 or int(sweeper.get("devices_per_trial") or 1) > 1
    except (TypeError, ValueError):
        return False
    return many and launcher.get("_target_") == BASIC_LAUNCHER


def start_trial_server(preload: Sequence[str] = ()) -> None:
    """Start the fork server that trials' processes are forked from, if it is not running, with `preload` and
    the heavy packages this process has loaded imported there: as early as a sweep can, so that it imports
    them while the sweep does its own work. It is started by exec, so the threads and CUDA state of this
    process never reach it."""
    if "forkserver" not in mp.get_all_start_methods():
        raise SweeplabError(
            "hydra.sweeper.n_jobs > 1 and devices_per_trial > 1 need worker processes started by a fork "
            "server (Linux, macOS); run one trial at a time here"
        )
    loaded = {name.partition(".")[0] for name in sys.modules}
    modules = [name for name in PRELOADED if name in loaded]
    modules += sorted(n for n in sys.modules if n.startswith("sweeplab.") and n.count(".") == 1)
    forkserver.set_forkserver_preload(["sweeplab.launching.server_imports", *modules, *preload, __name__])
    forkserver.ensure_running()


@dataclass
class _Start:
    """What a trial's process takes from its sweep as it starts."""

    task: bytes  # `pack_task`
    config: DictConfig  # the job's, composed by the sweep
    device: str | None  # CUDA_VISIBLE_DEVICES; None: the CPU
    threads: int  # torch's CPU threads: the cores shared out among the workers
    job_dir: Path
    env: dict[str, str]  # the sweep's environment, working directory and command line as the trial started
    cwd: str
    argv: list[str]
    ranks: bool = False  # the job trains on several devices: a DDP launcher starts its other ranks
    trial: Any = None  # the trial's address (`TrialAddress`), handed to the job


class _Watch:
    """A child's tie to its sweep: the beat the sweep reads (`stall_timeout`), and a pipe from the sweep
    that reads end-of-file once the sweep's process is gone (the child then ends)."""

    def __init__(self, sweep_pid: int, beat: Any, sweep_gone: Connection, waiting: Any = None) -> None:
        self.sweep_pid, self.beat, self.sweep_gone, self.waiting = sweep_pid, beat, sweep_gone, waiting
        self.finishing = False  # the job returned: the main thread tells its outcome, the watch only beats
        self._lock: threading.Lock | None = None

    def start(self) -> None:
        """In the child: beat and watch from a daemon thread."""
        self._lock = threading.Lock()
        if self.waiting is not None:
            on_wait(self._waiting)
        threading.Thread(target=self._run, name="sweeplab-worker-watch", daemon=True).start()

    def _waiting(self, waiting: bool) -> None:
        self.waiting.value = time.monotonic() if waiting else 0.0

    def sweep_alive(self) -> bool:
        """The sweep never writes to the pipe: it is readable once the sweep's end of it is closed."""
        try:
            return not self.sweep_gone.poll()
        except OSError:
            return False

    def finish(self) -> None:
        assert self._lock is not None
        with self._lock:
            self.finishing = True

    def _run(self) -> None:
        """Each second: a beat (a stopped or GIL-deadlocked process stops beating), and the sweep looked for."""
        assert self._lock is not None
        while True:
            self.beat.value = time.monotonic()
            with self._lock:
                if not self.finishing and not self.sweep_alive():
                    _say(
                        f"the sweep (pid {self.sweep_pid}) is gone: this worker stops; the next sweep closes its "
                        "trial as interrupted and runs its params again"
                    )
                    os._exit(EXIT_ORPHANED)
            time.sleep(BEAT_S)


def _child(send: Connection, start: _Start, watch: _Watch) -> None:
    """The trial's process: take the sweep's environment, leave Ctrl-C to the sweeper, pin the GPU, run the
    job, report, exit without cleanup."""
    code = 0
    try:
        gc.freeze()  # what the fork server imported lives as long as the process: no collection walks it
        gc.enable()  # off in the fork server while it imported (`server_imports`)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweeper stops its children itself
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(start.env)
        if start.device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = start.device  # read when CUDA initialises, in this process
        os.chdir(start.cwd)
        sys.argv = list(start.argv)
        torch = sys.modules.get("torch")
        if torch is not None:  # else the app's torch takes OMP_NUM_THREADS from the environment
            torch.set_num_threads(start.threads)
        start.job_dir.mkdir(parents=True, exist_ok=True)
        out = os.open(start.job_dir / WORKER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # a handler, not SIG_DFL: Lightning then calls it after its own SIGTERM handler rather than instead
        signal.signal(signal.SIGTERM, _stop_now)
        watch.start()
        if (
            start.ranks
        ):  # before Hydra's singletons are restored, which import the plugins' config classes again
            as_rank_parent(start.job_dir, start.task, start.config)
        hydra_context, task_function = unpack_task(start.task)
        with handing_trial(start.trial):
            ret = run_job(
                hydra_context=hydra_context,
                task_function=task_function,
                config=start.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            watch.finish()
            (start.job_dir / RANK_JOB).unlink(missing_ok=True)
            outcome = Outcome.of(ret)
            lost = lost_rank(start.job_dir) or killed_rank(
                ret._return_value if ret.status == JobStatus.FAILED else None
            )
            if outcome.error is not None and not outcome.lost and lost is not None:
                # the job's error is its rank 0 losing that peer: run the params again
                outcome = Outcome(error=f"RankLost: {lost} ({outcome.error})", lost=True)
            _tell(send, outcome, watch, start.config)
    except BaseException as exc:  # the child must always report and exit
        code = 1
        with contextlib.suppress(Exception):
            send.send(Outcome(error=failure(exc)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # never run atexit handlers or finalisers (storage connections, the fork server's copies) in a child
        os._exit(code)


def _tell(send: Connection, outcome: Outcome, watch: _Watch, sweep_config: DictConfig) -> None:
    """Send the job's outcome to the sweep; when the sweep is gone it is said in worker.log and on the trial
    (`ATTR_UNTOLD`), never lost silently."""
    try:
        ForkingPickler.dumps(outcome)
    except Exception:  # an unpicklable return value: say so rather than lose the trial silently
        outcome = Outcome(error=f"TypeError: the job returned {type(outcome.value).__name__}, not a number")
    try:
        send.send(outcome)
    except OSError as exc:  # no reader left: the sweep is gone
        _untold(
            outcome, f"sending it to the sweep (pid {watch.sweep_pid}) failed ({one_line(exc)})", sweep_config
        )
        return
    if not watch.sweep_alive():
        _untold(outcome, f"the sweep (pid {watch.sweep_pid}) was gone when it was sent", sweep_config)


def _untold(outcome: Outcome, why: str, sweep_config: DictConfig) -> None:
    """A result its sweep never receives: one line in worker.log, and the same on the trial, where the next
    sweep finds it when it closes the trial as interrupted (and runs its params again)."""
    told = f"value {outcome.value!r}" if outcome.error is None else outcome.error
    text = f"the trial's outcome ({told}) was not told to the study: {why}"
    _say(f"{text}; the next sweep closes the trial as interrupted and runs its params again")
    try:
        HydraConfig.instance().set_config(sweep_config)  # run_job put the sweep's config back
        trial = job_trial()
        if trial is not None:
            trial.set(ATTR_UNTOLD, text)
    except Exception as exc:
        _say(f"... nor recorded on the trial: {one_line(exc)}")


def _stop_now(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a worker: end at once, as killed by it (the sweep closes its trial and runs it again)."""
    _say(f"stopped by {signal.Signals(signum).name}")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _say(text: str) -> None:
    """One line in the worker's log (its stderr), after what the job has written so far."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError):
        os.write(2, f"[{stamp}][sweeplab worker {os.getpid()}] {text}\n".encode())


def gpus(slot: str) -> str:
    """A worker's devices as people say them: GPU 3, GPUs 0,1."""
    return f"GPU{'s' if ',' in slot else ''} {slot}"


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"WorkerKilled: the trial's process was killed by signal {-exitcode} ({name})"
    return f"WorkerDied: the trial's process exited with code {exitcode} without a result"
