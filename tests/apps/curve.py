"""A training loop without Lightning: it reports one value per epoch and stops when the study prunes it."""

import json
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import sweeplab


@hydra.main(version_base=None, config_path="conf", config_name="curve")
def curve(cfg: DictConfig) -> float:
    if cfg.fail_above is not None and cfg.lr > cfg.fail_above:
        raise RuntimeError(f"lr={cfg.lr} fails (fail_above={cfg.fail_above})")
    loss = float("inf")
    epochs = 0
    for epoch in range(1, cfg.epochs + 1):
        loss = abs(cfg.lr - 0.1) + 1.0 / epoch  # a loss that falls with epochs, lowest near lr=0.1
        epochs = epoch
        time.sleep(cfg.epoch_s)
        if sweeplab.report(loss, epoch):
            break
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "epochs.json").write_text(json.dumps({"epochs": epochs}))
    return loss


if __name__ == "__main__":
    curve()
