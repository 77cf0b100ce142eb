"""One exception type for every mistake a user can fix, so entry points can print it as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
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


# What out-of-memory looks like when it is not a MemoryError: torch's allocators, CUDA, oneDNN (whose
# "could not create a primitive" is what a CPU convolution raises when its workspace cannot be allocated).
_MEMORY_SIGNS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "could not create a primitive",
)
MEMORY_HINT = "lower the batch size or image size, or run fewer trials at once (hydra.sweeper.n_jobs)"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, and so on (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says that host or GPU memory ran out."""
    return any(
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or any(sign in str(e).lower() for sign in _MEMORY_SIGNS)
        for e in chain(exc)
    )


def failure(exc: BaseException) -> str:
    """How a trial failed, in one line for the study: `one_line`, led by `OutOfMemory:` when memory ran
    out, whatever the library's own words for it."""
    said = one_line(exc)
    if not out_of_memory(exc):
        return said
    if "Memory" in type(exc).__name__:
        return f"{said} ({MEMORY_HINT})"
    return f"OutOfMemory: {said} ({MEMORY_HINT})"


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
