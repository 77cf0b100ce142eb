"""One exception type for every mistake a user can fix, so entry points can print it as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from hydra.errors import CompactHydraException


class SweeplabError(CompactHydraException):
    """A user-fixable problem: bad config, missing file, unreachable storage.

    The message is one line that names the key, the value and what is allowed. As a compact Hydra
    exception, Hydra prints just that line and exits non-zero (the traceback with HYDRA_FULL_ERROR=1),
    whether it is raised in a job or in the sweeper.
    """


def config_error(key: str, value: Any, problem: str) -> SweeplabError:
    """Build the standard `key=value: problem` message."""
    return SweeplabError(f"{key}={value!r}: {problem}")


def one_line(exc: BaseException, with_type: bool = True) -> str:
    """What went wrong, as one line for a log, a stored trial or an error: `Type: first line of the
    message` (the type alone when the message is empty; `with_type=False` drops the type's name)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if not with_type:
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names close to `word`, for 'did you mean' hints."""
    pool = list(candidates)
    hits = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if not hits:
        hits = [c for c in pool if word.lower() in c.lower()][:n]
    return hits


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean a, b?)' or ''."""
    hits = closest(word, candidates)
    return f" (did you mean {', '.join(hits)}?)" if hits else ""
