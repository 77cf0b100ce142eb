"""Decoded images, cached twice: in this process's memory (trials of one process share them) and on disk
as memory-mapped uint8 arrays, so that trials' worker processes, reruns, retrains, folds and predict runs on
the same files and size read the map instead of decoding again.

A disk entry is `<name>.npy` (the images, `np.lib.format`) plus `<name>.json` (its header, written last:
the completeness marker). Builders write a temp file in the same folder, fsync it and `os.replace` it
into place, under an advisory lock, so concurrent builders end with one valid entry; an entry a crash
left broken (no header, a truncated array) is detected and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
log = logging.getLogger(__name__)

FORMAT_VERSION = 1
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
    """Drop every dataset cached in memory and reset the counters (the disk cache stays)."""
    _CACHE.clear()
    _STATS.clear()


# -- disk cache --------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/sweeplab`, else `~/.cache/sweeplab`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sweeplab"


def host_memory_bytes() -> int:
    """This machine's physical memory (what `data.host_cache_max_gb` defaults to half of)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        return 16 * 2**30


@dataclass(frozen=True)
class CacheSettings:
    """Where and whether decoded images are kept on disk (`data.cache`, `data.cache_dir`), and above
    how many bytes (`data.host_cache_max_gb`) they are read from the map per batch instead of copied
    into this process's memory."""

    enabled: bool = True
    cache_dir: str | None = None
    host_max_bytes: int | None = None  # None: half of the machine's memory

    @property
    def root(self) -> Path:
        return Path(os.path.expanduser(self.cache_dir)) if self.cache_dir else default_cache_dir()

    @property
    def host_cap(self) -> int:
        return self.host_max_bytes if self.host_max_bytes is not None else host_memory_bytes() // 2


@dataclass
class Opened:
    """A disk entry as this process got it: the array (a read-only map), its path, images decoded here,
    and how: 'hit' (read), 'built' (decoded now) or 'rebuilt' (a broken entry replaced)."""

    images: np.ndarray
    path: Path
    decoded: int
    how: str


def entry_name(key: Any, label: str) -> str:
    """The file stem of `key` (any JSON-able value): a readable label and a digest of the key."""
    blob = json.dumps([FORMAT_VERSION, key], sort_keys=True, default=str).encode()
    return f"{label}-{hashlib.sha256(blob).hexdigest()[:24]}"


def open_or_build(
    root: Path,
    name: str,
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray], int],
) -> Opened:
    """The uint8 array `shape` stored as `root/name`, built by `fill(out)` (which decodes into the
    writable map `out` and returns how many images it decoded) when absent or broken."""
    root.mkdir(parents=True, exist_ok=True)
    array, header, lock = root / f"{name}.npy", root / f"{name}.json", root / f"{name}.lock"
    problem = _check(array, header, shape)
    if problem is None:
        return Opened(_open(array), array, 0, "hit")
    with _locked(lock):
        problem = _check(array, header, shape)  # another builder may have finished while we waited
        if problem is None:
            return Opened(_open(array), array, 0, "hit")
        how = "built"
        if problem != "absent":
            how = "rebuilt"
            log.warning("data: the decode cache %s is broken (%s); rebuilding it", array, problem)
            header.unlink(missing_ok=True)  # the marker goes first: a half-replaced entry reads as broken
        decoded = _build(array, header, shape, fill)
    return Opened(_open(array), array, decoded, how)


def _check(array: Path, header: Path, shape: tuple[int, ...]) -> str | None:
    """None when the entry is complete and whole, else what is wrong with it ('absent' when nothing is)."""
    if not header.exists():
        return "absent" if not array.exists() else "no completeness marker (a build did not finish)"
    try:
        meta = json.loads(header.read_text())
        size = array.stat().st_size
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    if meta.get("version") != FORMAT_VERSION or tuple(meta.get("shape", ())) != tuple(shape):
        return f"header says shape {meta.get('shape')}, expected {list(shape)}"
    if size != meta.get("bytes"):
        return f"{size} bytes on disk, {meta.get('bytes')} written (truncated)"
    return None


def _open(array: Path) -> np.ndarray:
    # copy-on-write: pages come from the shared page cache; torch can wrap it without a read-only warning
    return np.load(array, mmap_mode="c")


def _build(array: Path, header: Path, shape: tuple[int, ...], fill: Callable[[np.ndarray], int]) -> int:
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp = array.with_name(f".{array.name}.{tag}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        decoded = fill(out)
        out.flush()
        del out
        _fsync(tmp)
        os.replace(tmp, array)
        meta = {
            "version": FORMAT_VERSION,
            "shape": list(shape),
            "dtype": "uint8",
            "bytes": array.stat().st_size,
            "created": time.time(),
        }
        tmp_header = header.with_name(f".{header.name}.{tag}.tmp")
        tmp_header.write_text(json.dumps(meta) + "\n")
        _fsync(tmp_header)
        os.replace(tmp_header, header)
        _fsync_dir(array.parent)
        return decoded
    finally:
        for leftover in array.parent.glob(f".*.{tag}.tmp"):
            leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem syncs a directory
        _fsync(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`: a second builder waits and then finds the entry built (the
    temp-file-and-replace protocol keeps the entry valid where locks do not hold, e.g. some NFS)."""
    with path.open("a") as fh:
        # no locking here: both build, the last replace wins, and either entry is whole
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
