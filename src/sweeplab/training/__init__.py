"""Training: build the pieces from the composed config, fit, test, write the run's results."""

from sweeplab.training.build import check_config
from sweeplab.training.run import train

__all__ = ["check_config", "train"]
