"""A fit that Lightning's `ddp_spawn` launcher runs in processes it spawns.

Each rank starts from the pickled trainer, in a fresh interpreter: without Hydra's config or logging, and
with nothing that ties its life to the process that launched it. The launching process gets back only the
model's weights, the best checkpoint's path and the logged metrics; its callbacks never see the fit.
So the callbacks that matter carry their own way back: `Origin` (captured as they are pickled) lets a
spawned rank log where the job logs and stop when its launcher is gone, and `HandBack` returns rank 0's
record of the fit (epochs, the pruning decision, data statistics) to the launcher's objects.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L

from sweeplab.launching.ranks import leave_process_group, leave_with_parent

HANDBACK_FILE = ".sweeplab_handback.pkl"  # in the fit's dir: rank 0's record, for the launching process

_joined: set[int] = set()  # processes that already joined their origin


@dataclass(frozen=True)
class Origin:
    """The process a callback was pickled in (the one that launched the fit), and the files it logs to."""

    pid: int
    log_files: tuple[str, ...]
    log_format: str | None
    level: int

    @classmethod
    def here(cls) -> Origin:
        root = logging.getLogger()
        files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        formatter = files[0].formatter if files else None
        return cls(
            pid=os.getpid(),
            log_files=tuple(h.baseFilename for h in files),
            log_format=formatter._fmt if formatter is not None else None,  # noqa: SLF001 -- logging's own
            level=root.level,
        )

    def elsewhere(self) -> bool:
        """This process is not the one the callback was pickled in: a rank the launcher spawned."""
        return os.getpid() != self.pid

    def join(self, rank: int) -> None:
        """In a spawned rank: end with the launching process (a rank left alone would wait on its peers
        or train on for nobody), leave the process group at exit (`leave_process_group`), and on rank 0
        log to the job's own log files, as the launcher would."""
        if not self.elsewhere() or os.getpid() in _joined:
            return
        _joined.add(os.getpid())
        leave_with_parent(f"rank {rank}")
        atexit.register(leave_process_group)  # after Lightning's last use of it in this rank
        if rank != 0:
            return
        root = logging.getLogger()
        root.setLevel(self.level)
        for path in self.log_files:
            handler = logging.FileHandler(path, mode="a")
            handler.setFormatter(logging.Formatter(self.log_format))
            root.addHandler(handler)


class HandBack(L.Callback):
    """Returns the fit's outcome to the process that launched it when Lightning trained in processes it
    spawned: rank 0 writes the `HANDED_BACK` attributes of `objects` to `path` as the fit ends, and `take()`
    sets them on the launcher's own objects. A fit in this process hands nothing back.

    Placed after the callbacks it hands back, so their `on_fit_end` has run."""

    def __init__(self, path: Path, *objects: Any) -> None:
        self.path, self.objects = path, objects
        self._origin: Origin | None = None
        path.unlink(missing_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_origin": Origin.here()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._origin is not None:
            self._origin.join(trainer.global_rank)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._origin is None or not self._origin.elsewhere() or trainer.global_rank != 0:
            return
        handed = [{name: getattr(o, name) for name in o.HANDED_BACK} for o in self.objects]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(handed))
        tmp.replace(self.path)

    def take(self) -> None:
        """After the fit, in the launching process: rank 0's record, if the fit ran elsewhere."""
        if not self.path.is_file():
            return
        handed = pickle.loads(self.path.read_bytes())  # noqa: S301 -- this fit's rank 0 wrote it
        for target, values in zip(self.objects, handed, strict=True):
            for name, value in values.items():
                setattr(target, name, value)
        self.path.unlink()
