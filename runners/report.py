"""Write a study's result files, plots and report (and export its best trial) from the storage alone.

Works at any time, also while the study is still running.
"""

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.startup import load


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    report = load("sweeplab.reporting.runner", "report")  # torch & co. load here: --help answers without them
    report(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
