"""A Lightning callback that injects the failures a study must survive, into chosen trials (by job number)."""

from __future__ import annotations

import math

import lightning.pytorch as L
import torch
from hydra.core.hydra_config import HydraConfig


class InjectFault(L.Callback):
    """After the first training epoch of trial `exception`/`nan`/`oom`: raise, turn the weights NaN, or raise OOM;
    in trial `oom_backward`, raise OOM in the first backward pass (where a too large batch runs out)."""

    def __init__(
        self,
        exception: int | None = None,
        nan: int | None = None,
        oom: int | None = None,
        oom_backward: int | None = None,
    ) -> None:
        self.faults = {exception: "exception", nan: "nan", oom: "oom"}
        self.oom_backward = oom_backward

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if int(HydraConfig.get().job.num) == self.oom_backward:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB (injected)")

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


class RecordRank(L.Callback):
    """Writes what each DDP rank of a trial trained: `rank_<r>.json` in the trial's dir with its rank, world
    size, learning rate (a searched param), the synced optimized metric and the epochs it ran. The trial's
    dir is looked up as the callback is built: a rank that ddp_spawn starts has no Hydra config."""

    def __init__(self, monitor: str = "val/f1") -> None:
        self.monitor = monitor
        self.out = HydraConfig.get().runtime.output_dir

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json
        from pathlib import Path

        value = trainer.callback_metrics.get(self.monitor)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "lr": trainer.optimizers[0].param_groups[0]["initial_lr"]
            if "initial_lr" in trainer.optimizers[0].param_groups[0]
            else trainer.optimizers[0].param_groups[0]["lr"],
            "value": None if value is None else float(value),
            "epochs": trainer.current_epoch,
            "command": [a.decode() for a in Path("/proc/self/cmdline").read_bytes().split(b"\0") if a],
        }
        out = Path(self.out) / f"rank_{trainer.global_rank}.json"
        out.write_text(json.dumps(record))


class KillRank(L.Callback):
    """SIGKILLs DDP rank `rank` of trial `trial` as its first training epoch starts (a rank lost mid-fit)."""

    def __init__(self, trial: int = 0, rank: int = 1) -> None:
        self.trial, self.rank = trial, rank
        self.job = int(
            HydraConfig.get().job.num
        )  # as built: a rank that ddp_spawn starts has no Hydra config

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os
        import signal

        if self.job == self.trial and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
