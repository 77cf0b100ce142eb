"""A Hydra job packed for another process: Hydra's context, its singletons (the config store, the plugins)
and the task function, as Hydra's own launchers ship them. A trial's process unpacks it (`executors`), and
so does each extra DDP rank of a trial (`ranks`)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from dataclasses import dataclass
from typing import Any

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from hydra.types import HydraContext, TaskFunction


@dataclass(frozen=True)
class _TaskRef:
    """A task function by where it is defined (`module.qualname`, as `@hydra.main` wraps it), so the
    trial's process uses the function of the app's module it imports, and classes the app defines next to
    it stay the same classes there (DDP spawn pickles the model by reference to them)."""

    module: str
    qualname: str

    @classmethod
    def of(cls, fn: TaskFunction) -> _TaskRef | None:
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        if not module or "<" in qualname:
            return None
        ref = cls(module, qualname)
        try:
            return ref if ref.resolve() is fn else None
        except Exception:
            return None

    def resolve(self) -> TaskFunction:
        found: Any = sys.modules.get(self.module) or importlib.import_module(self.module)
        for part in self.qualname.split("."):
            found = getattr(found, part)
        return inspect.unwrap(found)


def pack_task(hydra_context: HydraContext, task_function: TaskFunction) -> bytes:
    """Hydra's context, the task function and Hydra's singletons (its config store, plugins), as Hydra's
    own launchers ship them to a job's process: pickled by reference where they can be, else with
    cloudpickle (a task function with no importable name, a resolver registered by a closure, a config
    class defined in a script); a task function with a name goes by its name either way."""
    state = Singleton.get_state()
    packed = (hydra_context, _TaskRef.of(task_function) or task_function, state)
    try:
        return pickle.dumps(packed)
    except Exception:
        return cloudpickle.dumps(packed)


def unpack_task(task: bytes) -> tuple[HydraContext, TaskFunction]:
    """What `pack_task` packed, with Hydra's singletons restored in this process."""
    hydra_context, task_function, state = pickle.loads(task)  # noqa: S301 -- this trial's sweep packed it
    Singleton.set_state(state)
    setup_globals()
    if isinstance(task_function, _TaskRef):
        task_function = task_function.resolve()
    return hydra_context, task_function
