"""A `custom_search_space` function as the stock hydra-optuna-sweeper calls it: (the app's whole config, trial)."""

from __future__ import annotations

import optuna
from omegaconf import DictConfig


def label_smoothing(cfg: DictConfig, trial: optuna.Trial) -> None:
    assert cfg.hydra.sweeper.n_trials and cfg.models.loss  # the whole config, as in the stock plugin
    trial.suggest_float("models.loss.label_smoothing", 0.01, 0.02)
