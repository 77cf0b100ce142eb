"""sweeplab: Hydra-composed image-classification experiments with Optuna studies.

`sweeplab.report(value, step)` is what a job of any Hydra app calls to be pruned by a sweeplab study
(see `sweeplab.search.trial.report`), and `sweeplab.PruningCallback` what a Lightning app adds to its
callbacks for the same; importing them costs nothing until they are used.
"""

from typing import Any

from sweeplab.errors import SweeplabError

__all__ = ["PruningCallback", "SweeplabError", "TrialPruned", "report"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "report":
        from sweeplab.search.trial import report

        return report
    if name == "PruningCallback":  # `callbacks.prune: {_target_: sweeplab.PruningCallback, monitor: val/acc}`
        from sweeplab.training.callbacks import PruningCallback

        return PruningCallback
    if name == "TrialPruned":  # raising it ends a trial as PRUNED, as in an Optuna objective
        from optuna import TrialPruned

        return TrialPruned
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")
