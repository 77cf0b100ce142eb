"""One training run: build → fit → test the best checkpoint → write metrics.json → return the optimized value."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from sweeplab.errors import config_error
from sweeplab.training.build import build_datamodule, build_module, build_trainer
from sweeplab.training.callbacks import MetricHistory

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Train and test one model; return the best value of `optimized_metric` (what a sweeper optimizes)."""
    started = time.perf_counter()
    mode = str(cfg.get("optimized_mode", "max"))
    if mode not in ("max", "min"):
        raise config_error("optimized_mode", mode, "allowed: max, min")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Hydra keeps the unresolved config in .hydra/; this is what the run actually used.
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    history = MetricHistory(str(cfg.optimized_metric))
    trainer = build_trainer(cfg, extra_callbacks=[history])
    log.info(
        "data: %d train / %d val / %d test images, %d classes, %dpx; model: %s",
        len(dm.splits["train"]),
        len(dm.splits["val"]),
        len(dm.splits["test"]),
        dm.num_classes,
        dm.img_size,
        cfg.models.net.name,
    )

    trainer.fit(module, datamodule=dm)
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test = trainer.test(module, datamodule=dm, ckpt_path=best_path or None, verbose=False)

    best = history.best(mode)
    value = best[cfg.optimized_metric] if best else math.nan
    result = {
        "optimized_metric": str(cfg.optimized_metric),
        "optimized_mode": mode,
        "value": value,
        "best_val": best,
        "last_val": history.epochs[-1] if history.epochs else None,
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "epochs_run": len(history.epochs),
        "best_checkpoint": best_path or None,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    write_json(output_dir / "metrics.json", result)
    log.info(
        "%s best %.4f (epoch %s); test %s; %.1fs",
        cfg.optimized_metric,
        value,
        best["epoch"] if best else "-",
        ", ".join(f"{k}={v:.4f}" for k, v in result["test"].items()),
        result["wall_time_s"],
    )
    return float(value)


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return str(obj)
