"""Train one model, or, with -m hparams_search=..., run a study whose trials are these jobs."""

import hydra
from omegaconf import DictConfig

from sweeplab.training import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
