"""sweeplab: Hydra-composed image-classification experiments with Optuna studies.

`sweeplab.report(value, step)` is what a job of any Hydra app calls to be pruned by a sweeplab study
(see `sweeplab.search.trial.report`); importing it costs nothing until it is used.
"""

from typing import Any

from sweeplab.errors import SweeplabError

__all__ = ["SweeplabError", "TrialPruned", "report"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "report":
        from sweeplab.search.trial import report

        return report
    if name == "TrialPruned":  # raising it ends a trial as PRUNED, as in an Optuna objective
        from optuna import TrialPruned

        return TrialPruned
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")
