"""A trial that trains nothing: it sleeps `epoch_s` per epoch, reports a loss that falls with epochs through
`sweeplab.report`, and writes down when it started, how long each report took and when it returned
(`timing.json` in its job dir), for `benchmarks/scale.py`."""

import json
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import sweeplab


@hydra.main(version_base=None, config_path="conf", config_name="scale_app")
def scale_app(cfg: DictConfig) -> float:
    started = time.time()
    reports: list[float] = []
    loss = float("inf")
    for epoch in range(1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        loss = abs(cfg.lr - 0.1) + 1.0 / epoch
        asked = time.perf_counter()
        pruned = sweeplab.report(loss, epoch)
        reports.append(time.perf_counter() - asked)
        if pruned:
            break
    timing = {"started": started, "reports": reports, "returned": time.time()}
    Path(HydraConfig.get().runtime.output_dir, "timing.json").write_text(json.dumps(timing))
    return loss


if __name__ == "__main__":
    scale_app()
