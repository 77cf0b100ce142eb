"""A stock `custom_search_space` hook: it gets the app's whole config and the trial."""

import optuna
from omegaconf import DictConfig


def z_near_x(cfg: DictConfig, trial: optuna.Trial) -> None:
    x = trial.params["x"]
    spread = cfg.max_z_difference_from_x  # a key of the app's own config
    trial.suggest_float("z", x - spread, x + spread)
