"""Entry-point glue: our errors become one line and a non-zero exit (full traceback with HYDRA_FULL_ERROR=1)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from sweeplab.errors import SweeplabError


def one_line_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a @hydra.main task so a SweeplabError prints `Error: <message>` and exits with status 2."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except SweeplabError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise  # a sweep records the failure on its trial and decides whether to go on
            print(f"Error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
