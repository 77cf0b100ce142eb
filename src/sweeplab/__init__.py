"""sweeplab: Hydra-composed image-classification experiments with Optuna studies."""

from sweeplab.errors import SweeplabError

__all__ = ["SweeplabError"]
__version__ = "0.1.0"
