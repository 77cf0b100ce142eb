"""Process-wide cache of decoded images, so sweep trials in one process decode the data once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

_CACHE: dict[Hashable, object] = {}
_STATS: Counter[str] = Counter()


def cached(key: Hashable, load: Callable[[], T]) -> T:
    """Return the value stored under `key`, loading it on first use."""
    if key in _CACHE:
        _STATS["hits"] += 1
        return _CACHE[key]  # type: ignore[return-value]
    _STATS["misses"] += 1
    value = load()
    _CACHE[key] = value
    return value


def count(event: str, n: int = 1) -> None:
    """Record `n` occurrences of `event` (e.g. 'images_decoded')."""
    _STATS[event] += n


def cache_stats() -> dict[str, int]:
    """Counters since the last clear: hits, misses, images_decoded."""
    return dict(_STATS)


def clear_cache() -> None:
    """Drop every cached dataset and reset the counters."""
    _CACHE.clear()
    _STATS.clear()
