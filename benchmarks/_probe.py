"""Probes the benchmarks inject into sweeplab's runs (with `benchmarks/` on PYTHONPATH), each writing to the
file named by $SWEEPLAB_PROBE: Lightning callbacks (`+callbacks.probe._target_=_probe.FirstStep`) that time
training steps, and Hydra callbacks (`+hydra.callbacks.watch._target_=_probe.CudaWatch`) that record, in
the sweep process and in each job, where CUDA was initialised and the GPU memory held between trials."""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

import lightning.pytorch as L
from hydra.experimental.callback import Callback as HydraCallback

_SEEN = False
_MODELS: list[weakref.ref] = []  # every LightningModule WeightTrail saw train in this process


class FirstStep(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        global _SEEN
        path = os.environ.get("SWEEPLAB_PROBE")
        if path and not _SEEN:
            _SEEN = True
            with open(path, "a") as out:
                out.write(f"{time.time()}\n")


def callbacks() -> list[L.Callback]:
    """[FirstStep()] when a benchmark asked for it, else nothing (for the hand-written baseline)."""
    return [FirstStep()] if os.environ.get("SWEEPLAB_PROBE") else []


class Throughput(L.Callback):
    """Images per second over training steps [warmup, warmup + steps): the GPU is synchronised at the
    two ends of the window only, so the steps inside run exactly as they would without the probe."""

    def __init__(self, warmup: int = 15, steps: int = 90) -> None:
        self.warmup, self.steps = warmup, steps
        self.images = 0
        self.started = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            import torch

            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.started = time.perf_counter()
        if self.warmup <= trainer.global_step < self.warmup + self.steps:
            self.images += len(batch[1])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if trainer.global_step == self.warmup + self.steps:  # global_step counts finished steps
            self._sync(pl_module)
            rate = self.images / (time.perf_counter() - self.started)
            with open(os.environ["SWEEPLAB_PROBE"], "a") as out:
                out.write(f"{rate}\n")
            trainer.should_stop = True


def _record(event: str, **fields: Any) -> None:
    """One JSON line in $SWEEPLAB_PROBE: what this process knew of CUDA at `event`."""
    import json
    import sys

    path = os.environ.get("SWEEPLAB_PROBE")
    if not path:
        return
    state: dict[str, Any] = {"event": event, "pid": os.getpid(), "time": time.time(), **fields}
    torch = sys.modules.get("torch")  # never imported here: a process without torch has no CUDA
    state["torch_imported"] = torch is not None
    state["models_alive"] = sum(ref() is not None for ref in _MODELS)
    if torch is not None:
        state["cuda_initialized"] = bool(torch.cuda.is_initialized())
        # a process forked after its parent initialised CUDA cannot use CUDA itself
        bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
        state["bad_fork"] = bool(bad_fork()) if bad_fork else None
        if state["cuda_initialized"]:
            state["gpu"] = torch.cuda.get_device_name()
            state["allocated"] = int(torch.cuda.memory_allocated())
            state["reserved"] = int(torch.cuda.memory_reserved())
    with open(path, "a") as out:
        out.write(json.dumps(state) + "\n")


def _job_number() -> int | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return int(HydraConfig.get().job.num)
    except (ValueError, TypeError, AttributeError):
        return None


class CudaWatch(HydraCallback):
    """A Hydra callback (`+hydra.callbacks.watch._target_=_probe.CudaWatch`): for the sweep process at its
    start and end, and for each job as it starts (before the job's own code runs) and ends, whether CUDA
    was initialised in that process and, where it was, the GPU memory torch holds. A job that runs in the
    sweep's own process (n_jobs=1) records at its start the memory the trials before it left."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _record("sweep_start")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        _record("sweep_end")

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        _record("job_start", job=_job_number())

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        _record("job_end", job=_job_number(), status=getattr(job_return.status, "name", None))


class AddressSpaceCap(HydraCallback):
    """A Hydra callback that gives each job `headroom_mb` of address space over what its process holds when
    the job starts (RLIMIT_AS), and lifts the cap when the job ends: on a CPU, a far too large batch then
    fails as a too large GPU batch does (torch's allocator cannot allocate), without taking the machine's
    memory first."""

    def __init__(self, headroom_mb: int = 1024) -> None:
        self.headroom = int(headroom_mb) << 20
        self.saved: tuple[int, int] | None = None

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import resource

        self.saved = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + self.headroom, self.saved[1]))

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        import resource

        if self.saved is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.saved)


def _checksum(pl_module: L.LightningModule) -> float:
    """The sum of every parameter, in float64: equal for equal weights, on any device."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in pl_module.parameters()).item())


class WeightTrail(L.Callback):
    """A Lightning callback that records, per Hydra job (a study's trial number), the weights' checksum after
    each validation epoch and as training starts, with the epoch the trainer is at: a rescue that resumed a
    paused trial starts from exactly the weights the paused trial had at its pause. It keeps a weak
    reference to each model it saw, so CudaWatch's records say how many are still alive (a finished trial
    whose model outlives it, in the sweep's own process, holds its memory)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _MODELS.append(weakref.ref(pl_module))
        self._write("train_start", trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write("validated", trainer, pl_module)

    def _write(self, event: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            _record(
                event,
                job=_job_number(),
                epoch=int(trainer.current_epoch),
                checksum=_checksum(pl_module),
                on=str(pl_module.device),
            )


class BeatGaps(HydraCallback):
    """A Hydra callback (`+hydra.callbacks.beats._target_=_probe.BeatGaps`): in each job's process, a thread
    that does what a forked worker's watch thread does (sleep one beat interval, wake, again) and records how
    late each wake-up came; at the job's end, the largest delay and the 99th percentile, in $SWEEPLAB_PROBE."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.running = False

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import threading

        from sweeplab.launching.executors import BEAT_S

        self.gaps, self.running = [], True

        def beat() -> None:
            last = time.monotonic()
            while self.running:
                time.sleep(BEAT_S)
                now = time.monotonic()
                self.gaps.append(now - last - BEAT_S)
                last = now

        threading.Thread(target=beat, name="probe-beat", daemon=True).start()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        self.running = False
        gaps = sorted(self.gaps)
        if gaps:
            p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
            _record("beats", job=_job_number(), beats=len(gaps), max_delay=gaps[-1], p99_delay=p99)
