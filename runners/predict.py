"""Predict with trained runs or a study's top trials, ensemble them, and write submission.csv."""

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.startup import load


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict = load("sweeplab.predict", "predict")  # torch & co. load here: --help answers without them
    predict(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
