"""Train one model, or, with -m hparams_search=..., run a study whose trials are these jobs."""

import gc

gc.disable()  # the imports below make millions of objects that live as long as the process

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.training import train

gc.freeze()  # ... so no collection walks them again (and forked workers share their pages)
gc.enable()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
