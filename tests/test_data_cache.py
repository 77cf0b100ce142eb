"""The decode cache on disk: read by every later process on the same files and size, rebuilt when a crash
left it broken, keyed so that a changed image is never served stale, and mapped when over the host cap."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sweeplab.data import DigitsSource, ImageDataModule, ImageFolderSource, cache_stats, clear_cache
from sweeplab.data.cache import CacheSettings, entry_name

CTX = mp.get_context("spawn")  # a fork of a process that ran torch can hang


def _folder(root: Path, n: int = 24, size: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _entries(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if not p.name.endswith(".lock"))


def _key_name(source: ImageFolderSource) -> str:
    return entry_name(source.cache_key(8, 3), source.label(8, 3))


def test_an_added_or_changed_image_changes_the_cache_key(tmp_path):
    root = _folder(tmp_path / "imgs")
    first = _key_name(ImageFolderSource(str(root)))
    assert _key_name(ImageFolderSource(str(root))) == first  # listing again: the same key

    changed = root / "c0" / "0.png"
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    second = _key_name(ImageFolderSource(str(root)))
    assert second != first

    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(root / "c1" / "new.png")
    assert _key_name(ImageFolderSource(str(root))) not in (first, second)


def test_a_changed_image_is_decoded_again_not_read_stale(tmp_path):
    root, settings = _folder(tmp_path / "imgs"), CacheSettings(cache_dir=str(tmp_path / "cache"))
    clear_cache()
    ImageFolderSource(str(root)).load(8, 3, settings)
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(root / "c0" / "0.png")
    os.utime(root / "c0" / "0.png", ns=(1, 1))
    clear_cache()
    data = ImageFolderSource(str(root)).load(8, 3, settings)
    assert cache_stats()["images_decoded"] == 24
    assert int(data.images[data.ids.index("0.png")].max()) == 0


def _build_in_child(root: str, cache_dir: str, barrier, results) -> None:
    clear_cache()
    barrier.wait()
    data = ImageFolderSource(root).load(8, 3, CacheSettings(cache_dir=cache_dir))
    results.put((cache_stats().get("images_decoded", 0), int(data.images.sum())))


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_two_processes_building_the_same_cache_end_with_one_valid_cache(tmp_path):
    root, cache_dir = _folder(tmp_path / "imgs"), tmp_path / "cache"
    barrier, results = CTX.Barrier(2), CTX.Queue()
    procs = [
        CTX.Process(target=_build_in_child, args=(str(root), str(cache_dir), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0][1] == got[1][1]
    assert sorted(d for d, _ in got) == [0, 24]  # one decoded, the other waited and read its entry
    names = _entries(cache_dir)
    assert len(names) == 2 and {Path(n).suffix for n in names} == {".npy", ".json"}  # no temp files left

    clear_cache()
    again = ImageFolderSource(str(root)).load(8, 3, CacheSettings(cache_dir=str(cache_dir)))
    assert cache_stats().get("images_decoded", 0) == 0 and again.how == "hit"
    assert int(again.images.sum()) == got[0][1]


@pytest.mark.parametrize("damage", ["truncate", "no_marker"])
def test_a_cache_a_crash_left_broken_is_rebuilt_with_one_log_line(tmp_path, caplog, damage):
    root, cache_dir = _folder(tmp_path / "imgs"), tmp_path / "cache"
    settings = CacheSettings(cache_dir=str(cache_dir))
    clear_cache()
    whole = ImageFolderSource(str(root)).load(8, 3, settings)
    array = Path(whole.stored)
    if damage == "truncate":
        with array.open("r+b") as fh:
            fh.truncate(array.stat().st_size - 100)
    else:
        array.with_suffix(".json").unlink()

    clear_cache()
    with caplog.at_level(logging.INFO, logger="sweeplab"):
        rebuilt = ImageFolderSource(str(root)).load(8, 3, settings)
    broken = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(broken) == 1 and str(array) in broken[0].getMessage()
    assert rebuilt.how == "rebuilt" and cache_stats()["images_decoded"] == 24
    assert np.array_equal(rebuilt.images.numpy(), whole.images.numpy())
    clear_cache()
    assert ImageFolderSource(str(root)).load(8, 3, settings).how == "hit"


def _datamodule_in_child(results) -> None:
    clear_cache()  # a fresh process: nothing decoded here
    dm = ImageDataModule(DigitsSource(), img_size=12)
    dm.load()
    results.put((dm.data_stats["images_decoded"], dm.data_stats["cache"], int(dm.data.images.sum())))


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_a_second_datamodule_in_a_new_process_decodes_nothing(_private_cache_dir):
    clear_cache()
    first = ImageDataModule(DigitsSource(), img_size=12)
    first.load()
    assert first.data_stats["images_decoded"] == 1797 and first.data_stats["cache"] == "built"
    assert str(first.data_stats["cache_path"]).startswith(str(_private_cache_dir / "sweeplab"))

    results = CTX.Queue()
    child = CTX.Process(target=_datamodule_in_child, args=(results,))
    child.start()
    decoded, how, total = results.get(timeout=120)
    child.join(timeout=60)
    assert (decoded, how) == (0, "hit")
    assert total == int(first.data.images.sum())


def test_cache_false_decodes_in_memory_and_writes_nothing(tmp_path):
    clear_cache()
    dm = ImageDataModule(DigitsSource(), img_size=12, cache=False, cache_dir=str(tmp_path / "c"))
    dm.load()
    assert dm.data_stats["images_decoded"] == 1797 and dm.data_stats["cache"] == "memory"
    assert not (tmp_path / "c").exists()


def test_data_over_the_host_cap_trains_from_the_map(compose_cfg, tmp_path, caplog):
    from sweeplab.training import train
    from sweeplab.training.build import build_datamodule
    from tests.conftest import fast

    clear_cache()
    overrides = fast("data.img_size=32", "data.host_cache_max_gb=0.0001", f"data.cache_dir={tmp_path / 'c'}")
    with caplog.at_level(logging.INFO, logger="sweeplab"):
        dm = build_datamodule(compose_cfg(overrides))
    assert dm.data_stats["mapped"] is True
    ptr, path = dm.data.images.data_ptr(), str(dm.data_stats["cache_path"])
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
    assert any(  # the tensor's memory is a mapping of the cache file, not a copy
        int(m[0].split("-")[0], 16) <= ptr < int(m[0].split("-")[1], 16) and m[-1] == path for m in maps
    )
    assert any("over data.host_cache_max_gb" in r.getMessage() for r in caplog.records)
    assert 0.0 <= train(compose_cfg(overrides)) <= 1.0
