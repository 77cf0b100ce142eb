"""What `runners/train.py` imports when a run or a sweep starts, not when the script loads: `--help`, `--cfg`,
`--info` and tab completion then answer without loading torch, Lightning and timm. `Preload` (a Hydra
callback of the root config) loads them as a run or a sweep starts, and a sweep's fork server with them
(the process its trials are forked from); `load` gives the entry point its function. predict.py and
report.py import at load time: loaded this late, a report's SQLite connection stays open at exit and
leaves -wal and -shm files beside the study."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# sweeplab's root configs list studies/conf in hydra.searchpath: naming filters Hydra's warning that it is
# not there before a study has written there (every entry point composes a root config)
from sweeplab.search import naming  # noqa: F401


class Preload(Callback):
    """Import `modules` as a run or a sweep starts (before the sweeper plans or starts its workers)."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = list(modules)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._load()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from sweeplab.errors import SweeplabError

        executors = load("sweeplab.launching.executors")  # Optuna and SQLAlchemy: as the modules below
        if executors.trials_in_processes(config):  # their fork server imports the modules alongside
            with contextlib.suppress(SweeplabError):  # no fork server here: the sweeper says so in one line
                executors.start_trial_server(self.modules)
        self._load()

    def _load(self) -> None:
        for module in self.modules:
            load(module)


def load(module: str, name: str | None = None) -> Any:
    """`module.name` (or the module), imported with the garbage collector off and then frozen: these
    libraries make millions of objects that live as long as the process, which every full collection would
    walk again (1.2 s of collections in a 6-trial sweep, BENCHMARKS.md "start-up")."""
    if module not in sys.modules:  # else: preloaded, or a later job in the same process
        enabled = gc.isenabled()
        gc.disable()
        try:
            importlib.import_module(module)
        finally:
            gc.freeze()
            if enabled:
                gc.enable()
    return getattr(sys.modules[module], name) if name else sys.modules[module]
