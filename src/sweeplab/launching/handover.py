"""What a launcher hands the job it runs: its trial, or its part as an extra DDP rank.

A Hydra task function takes one argument, its config, and Hydra's `run_job` calls it; so a launcher hands
the job anything else by binding it in a context variable for the duration of that call (`handing`), as
`decimal.localcontext` or `torch.no_grad` do. sweeplab's own launchers hand every job its trial: the worker
process of a trial (`executors._child`), the sweep's process for a job it runs itself (`LauncherBatches`),
and a trial's extra DDP rank (`ranks.join`), which is handed its rank and no trial. The training code,
`sweeplab.report` and `sweeplab.PruningCallback` take what they were handed (`handed`).

A launcher that is not sweeplab's (submitit on SLURM, or any other that runs the job in a process of its own)
can hand a job nothing but its config: such a job finds its trial from its own `hydra.sweeper` node
(`sweeplab.search.trial.trial_address`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Handed:
    """A job's trial as its launcher hands it: the trial's address (`sweeplab.search.trial.TrialAddress`,
    None on an extra rank), opened on first use, and the job's DDP rank (above 0: an extra rank, which trains
    and follows rank 0's decisions)."""

    address: Any = None
    rank: int = 0
    _opened: list[Any] = field(default_factory=list, repr=False)  # the open trial, once opened

    def trial(self, open_trial: Callable[[Any], Any]) -> Any:
        """The trial, opened by `open_trial(address)` the first time a job asks (None on an extra rank)."""
        if self.address is None or self.rank > 0:
            return None
        if not self._opened:
            self._opened.append(open_trial(self.address))
        return self._opened[0]


_HANDED: contextvars.ContextVar[Handed | None] = contextvars.ContextVar("sweeplab_handed", default=None)


@contextmanager
def handing(given: Handed) -> Iterator[Handed]:
    """Hand `given` to the job run inside this block (and to nothing outside it)."""
    token = _HANDED.set(given)
    try:
        yield given
    finally:
        _HANDED.reset(token)


def handing_trial(address: Any) -> AbstractContextManager[Handed | None]:
    """`handing` a job the trial at `address`; nothing where there is none (the job then finds its own)."""
    return handing(Handed(address)) if address is not None else nullcontext()


def handed() -> Handed | None:
    """What the launcher of the running job handed it; None where the launcher handed nothing."""
    return _HANDED.get()


def follower() -> bool:
    """This job is an extra DDP rank of a study's trial: it trains, rank 0 reports and writes."""
    given = _HANDED.get()
    return given is not None and given.rank > 0
