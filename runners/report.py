"""Write a study's result files, plots and report (and export its best trial) from the storage alone.

Works at any time, also while the study is still running.
"""

import gc

gc.disable()  # the imports below make millions of objects that live as long as the process

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.reporting.runner import report

gc.freeze()  # ... so no collection walks them again
gc.enable()


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    report(cfg)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
