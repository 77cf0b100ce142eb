"""A Lightning callback the benchmarks inject (`+callbacks.probe._target_=_probe.FirstStep`, with
`benchmarks/` on PYTHONPATH): it appends the wall-clock time of the first training step to the file
named by $SWEEPLAB_PROBE, once per process."""

from __future__ import annotations

import os
import time
from typing import Any

import lightning.pytorch as L

_SEEN = False


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
