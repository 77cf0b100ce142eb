"""A Lightning callback that injects the failures a study must survive, into chosen trials (by job number)."""

from __future__ import annotations

import math

import lightning.pytorch as L
import torch
from hydra.core.hydra_config import HydraConfig


class InjectFault(L.Callback):
    """After the first training epoch of trial `exception`/`nan`/`oom`: raise, turn the weights NaN, or raise OOM."""

    def __init__(self, exception: int | None = None, nan: int | None = None, oom: int | None = None) -> None:
        self.faults = {exception: "exception", nan: "nan", oom: "oom"}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        kind = self.faults.get(int(HydraConfig.get().job.num))
        if kind == "exception":
            raise RuntimeError("injected failure")
        if kind == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        if kind == "nan":
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(math.nan)


class RecordDevice(L.Callback):
    """Writes the GPUs this trial's process may see into `device.txt` in its output dir."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os
        from pathlib import Path

        out = Path(HydraConfig.get().runtime.output_dir) / "device.txt"
        out.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
