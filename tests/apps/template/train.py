"""An app shaped like lightning-hydra-template's `src/train.py`, small enough for the tests (< 2 s a trial).

Its config tree (`configs/`) has the template's groups: `callbacks` (a dict of callback nodes), `logger`,
`debug`, `experiment` and `hparams_search` defaulting to null, and job logging whose handlers are not named
`console`. Like the template it prints its config tree, a model summary, progress bars and a test table.
"""

from __future__ import annotations

import logging

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def instantiate_callbacks(callbacks_cfg: DictConfig | None) -> list[pl.Callback]:
    """The template's `instantiate_callbacks`: every node of the dict with a `_target_`."""
    callbacks: list[pl.Callback] = []
    for name, node in (callbacks_cfg or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info("Instantiating callback <%s> (%s)", node._target_, name)
            callbacks.append(hydra.utils.instantiate(node))
    return callbacks


def train(cfg: DictConfig) -> dict[str, float]:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    print(OmegaConf.to_yaml(cfg))  # the template prints its config tree (rich) at the start of every run
    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("Instantiating model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    logger = [hydra.utils.instantiate(node) for node in (cfg.get("logger") or {}).values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger or False)
    if cfg.get("train"):
        log.info("Starting training!")
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        log.info("Starting testing!")
        trainer.test(model=model, datamodule=datamodule)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics[name] if name else None


if __name__ == "__main__":
    main()
