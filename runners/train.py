"""Train one model, or, with -m hparams_search=..., run a study whose trials are these jobs."""

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.startup import load


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    train = load("sweeplab.training", "train")  # torch & co. load here: --help answers without them
    return train(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
