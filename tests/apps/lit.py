"""A Lightning fit with slow steps, for sweeps stopped while a trial is inside `Trainer.fit`.

When a step has started, `fitting` is written into the job's dir: a test waits for it, then signals. After
the fit each rank writes its command line to `rank_<global rank>.cmd` in the job's dir.
"""

import time
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.data import DataLoader, TensorDataset


class Line(pl.LightningModule):
    def __init__(self, lr: float, step_s: float, marker: Path) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.lr, self.step_s, self.marker = lr, step_s, marker

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.marker.touch()
        time.sleep(self.step_s)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@hydra.main(version_base=None, config_path="conf", config_name="lit")
def lit(cfg: DictConfig) -> float:
    x = torch.linspace(0.0, 1.0, 16).unsqueeze(1)
    data = DataLoader(TensorDataset(x, 2 * x), batch_size=4)
    model = Line(cfg.lr, cfg.step_s, Path(HydraConfig.get().runtime.output_dir) / "fitting")
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="cpu",
        devices=cfg.devices,
        strategy=cfg.strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    command = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b"\n")
    (Path(HydraConfig.get().runtime.output_dir) / f"rank_{trainer.global_rank}.cmd").write_bytes(command)
    return float(trainer.callback_metrics["loss"])


if __name__ == "__main__":
    lit()
