"""LightningDataModule over a cached ImageSet: stratified split, uint8 batches, device-side transforms."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from sweeplab.data.augment import BatchAugment
from sweeplab.data.cache import CacheSettings, cache_stats, cached
from sweeplab.data.sources import ImageSet
from sweeplab.errors import config_error

log = logging.getLogger(__name__)


def _is_cuda(device: str | None) -> bool:
    return device is not None and str(device).startswith("cuda")


def _resident_copy(data: ImageSet, device: str) -> ImageSet:
    """`data` with its tensors on `device`, copied once per process and device (trials share the copy)."""
    if device == "cpu":
        return data
    return cached(
        ("resident", id(data.images), device),  # data itself lives in the cache, so its id stays unique
        lambda: replace(data, images=data.images.to(device), labels=data.labels.to(device)),
    )


def check_folds(folds: Any, fold: Any = 0, key: str = "data.folds") -> tuple[int | None, int]:
    """`data.folds` (or the `key` that sets it): null (one train/val split) or k >= 2 stratified folds;
    `fold` picks the val fold."""
    if folds is None:
        return None, 0
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise config_error(key, folds, "must be an integer >= 2 (k-fold), or null for one train/val split")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise config_error("data.fold", fold, f"must be an integer in [0, {folds - 1}] (data.folds={folds})")
    return folds, fold


def _how(how: str, decoded: int) -> str:
    if how == "memory":
        return "in memory (data.cache=false, or a source that is not cached on disk)"
    if decoded == 0:
        return "read from the decode cache"
    return {"built": "cached at", "rebuilt": "cache rebuilt at"}.get(how, how)


class _Rows(Dataset):
    """Rows of shared uint8 tensors, fetched a whole batch at a time (one fancy-index per batch)."""

    def __init__(self, data: ImageSet, index: np.ndarray) -> None:
        self.data, self.index = data, torch.as_tensor(index, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.index[rows]
        return self.data.images[idx], self.data.labels[idx]


class ImageDataModule(L.LightningDataModule):
    """Serves uint8 images; float conversion, augmentation and normalisation run after the device transfer."""

    HANDED_BACK = ("data_stats",)  # what a fit in spawned processes returns (`sweeplab.training.spawned`)

    def __init__(
        self,
        source: Any,
        img_size: int = 32,
        in_chans: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 42,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        resident: bool | str = "auto",
        resident_max_gb: float = 4.0,
        device: str | None = None,
        folds: int | None = None,
        fold: int = 0,
        cache: bool = True,
        cache_dir: str | None = None,
        host_cache_max_gb: float | None = None,
    ) -> None:
        super().__init__()
        if int(img_size) < 1:
            raise config_error("data.img_size", img_size, "must be a positive number of pixels")
        if int(batch_size) < 1:
            raise config_error("data.batch_size", batch_size, "must be at least 1")
        if int(num_workers) < 0:
            raise config_error("data.num_workers", num_workers, "must be 0 or more")
        if not 0.0 < float(val_fraction) < 1.0:
            raise config_error("data.val_fraction", val_fraction, "must lie in (0, 1)")
        if not 0.0 <= float(test_fraction) < 1.0:
            raise config_error(
                "data.test_fraction", test_fraction, "must lie in [0, 1) (0 = test on the val split)"
            )
        if float(val_fraction) + float(test_fraction) >= 1.0:
            raise config_error(
                "data.val_fraction",
                val_fraction,
                f"plus data.test_fraction={test_fraction} leaves no training data",
            )
        if len(mean) != int(in_chans) or len(std) != int(in_chans):
            raise config_error(
                "data.mean",
                list(mean),
                f"needs one value per channel (data.in_chans={in_chans}), as does data.std",
            )
        self.folds, self.fold = check_folds(folds, fold)
        if not isinstance(cache, bool):
            raise config_error("data.cache", cache, "allowed: true (decode once, keep on disk), false")
        if host_cache_max_gb is not None and float(host_cache_max_gb) < 0:
            raise config_error(
                "data.host_cache_max_gb", host_cache_max_gb, "must be 0 or more (GiB), or null"
            )
        self.cache = CacheSettings(
            enabled=cache,
            cache_dir=None if cache_dir in (None, "") else str(cache_dir),
            host_max_bytes=None if host_cache_max_gb is None else int(float(host_cache_max_gb) * 2**30),
        )
        # what load() did, for the run log and metrics.json: images decoded by this datamodule, seconds
        # spent reading/decoding, the cache entry and how it was got (hit, built, rebuilt, memory)
        self.data_stats: dict[str, Any] = {}
        self.source = source
        self.img_size, self.in_chans = int(img_size), int(in_chans)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed)
        self.channels_last = bool(channels_last)
        if resident not in ("auto", True, False):
            raise config_error("data.resident", resident, "allowed: auto, true, false")
        if float(resident_max_gb) < 0:
            raise config_error("data.resident_max_gb", resident_max_gb, "must be 0 or more (GiB)")
        self.resident: bool | None = None if resident == "auto" else bool(resident)  # None: auto
        self.resident_max_gb = float(resident_max_gb)
        self.device = device
        self.resident_device: str | None = None  # set by load(): where the uint8 tensors live
        self.augment = BatchAugment(**dict(augment or {}))
        self.register_stats(mean, std)
        self.data: ImageSet | None = None
        self.splits: dict[str, np.ndarray] = {}

    def register_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self._mean = torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1)
        self._std = torch.tensor([float(s) for s in std]).view(1, -1, 1, 1)

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> ImageSet:
        """Read the decoded images (process memory, else the disk cache, else decode) and split;
        idempotent. Logs how long the read took and how many images this process decoded for it."""
        if self.data is None:
            before, started = cache_stats().get("images_decoded", 0), time.perf_counter()
            self.data = self.source.load(self.img_size, self.in_chans, self.cache)
            self.data_stats = {
                "images_decoded": cache_stats().get("images_decoded", 0) - before,
                "read_s": round(time.perf_counter() - started, 3),
                "cache": self.data.how,
                "cache_path": self.data.stored,
                "mapped": self.data.mapped,
            }
            log.info(
                "data: %d images (%d px, %d ch) in %.2f s: %d decoded, %s%s",
                len(self.data),
                self.img_size,
                self.in_chans,
                self.data_stats["read_s"],
                self.data_stats["images_decoded"],
                _how(self.data.how, self.data_stats["images_decoded"]),
                f" {self.data.stored}" if self.data.stored else "",
            )
            self.splits = self._split(self.data.labels.numpy())
            self.resident_device = self._resident_device(self.data)
        return self.data

    def _resident_device(self, data: ImageSet) -> str | None:
        """Where batches are gathered from (None: a DataLoader copies them to the device per step).

        Resident data skips workers, pinning and the host-to-device copy: the uint8 tensors go to the
        training device once per process (shared by every trial there), a step is one index gather.
        """
        if self.resident is False or (self.resident is None and not _is_cuda(self.device)):
            return None
        device = self.device or "cpu"
        size_gb = (data.images.nbytes + data.labels.nbytes) / 2**30
        fits = size_gb <= self.resident_max_gb
        if fits and _is_cuda(device) and self.resident is None:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            fits = size_gb <= 0.5 * free / 2**30  # leave the other half for the model
        if not fits:
            if self.resident:
                raise config_error(
                    "data.resident",
                    True,
                    f"the data takes {size_gb:.2f} GiB, over data.resident_max_gb={self.resident_max_gb}; "
                    "raise the cap or use data.resident=auto (falls back to a DataLoader)",
                )
            log.info(
                "data: %.2f GiB does not fit on %s (cap %.2f GiB); using a DataLoader",
                size_gb,
                device,
                self.resident_max_gb,
            )
            return None
        log.info("data: %.3f GiB of uint8 images resident on %s", size_gb, device)
        return device

    def _split(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Test split first (the same for every fold), then train/val: one stratified split by
        val_fraction, or with `folds=k` the `fold`-th of k stratified folds as val (val_fraction unused)."""
        idx = np.arange(len(labels))
        rest, test = idx, idx[:0]
        if self.test_fraction > 0:
            rest, test = train_test_split(
                idx, test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
            )
        if self.folds is not None:
            train, val = self._fold_split(rest, labels[rest])
        else:
            val_share = self.val_fraction / (1.0 - self.test_fraction)
            train, val = train_test_split(
                rest, test_size=val_share, stratify=labels[rest], random_state=self.split_seed
            )
        return {
            "train": np.sort(train),
            "val": np.sort(val),
            "test": np.sort(test) if len(test) else np.sort(val),
        }

    def _fold_split(self, rest: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.folds is not None and self.data is not None  # load() splits after decoding
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < self.folds:
            name = self.data.classes[int(classes[counts.argmin()])]
            raise config_error(
                "data.folds",
                self.folds,
                f"class {name!r} has {counts.min()} images outside the test split; "
                f"stratified folds need at least {self.folds} per class (lower data.folds)",
            )
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.split_seed)
        train, val = list(splitter.split(rest, labels))[self.fold]
        return rest[train], rest[val]

    @property
    def num_classes(self) -> int:
        return len(self.load().classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.load().classes

    def setup(self, stage: str | None = None) -> None:
        self.load()

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.load()
        if self.resident_device is not None:
            data = _resident_copy(data, self.resident_device)
        ds = _Rows(data, self.splits[split])
        base = RandomSampler(ds) if train else SequentialSampler(ds)
        drop_last = train and len(ds) > self.batch_size
        workers = 0 if self.resident_device is not None else self.num_workers
        return DataLoader(
            ds,
            sampler=BatchSampler(base, self.batch_size, drop_last=drop_last),
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.resident_device is None and _is_cuda(self.device),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # -- device-side transforms ------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        return model_input(
            x, self._mean, self._std, self.channels_last, self.augment if training else None
        ), y


def model_input(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A uint8 (N, C, H, W) batch as the model takes it, on the batch's device: scaled to [0, 1], then
    `transform` (augmentation, a test-time view), then normalised by `mean`/`std` (shaped (1, C, 1, 1)).
    Training and prediction both go through here, so a model predicts on what it trained on."""
    x = x.float().div_(255.0)
    if transform is not None:
        x = transform(x)
    x = (x - mean.to(x.device)) / std.to(x.device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
