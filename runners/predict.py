"""Predict with trained runs or a study's top trials, ensemble them, and write submission.csv."""

import gc

gc.disable()  # the imports below make millions of objects that live as long as the process

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.predict import predict

gc.freeze()  # ... so no collection walks them again
gc.enable()


@hydra.main(version_base="1.3", config_path="pkg://sweeplab.predict.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
