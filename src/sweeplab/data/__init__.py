"""Data: image sources decoded once into a disk cache every process reads, split and served as uint8 batches."""

from sweeplab.data.cache import CacheSettings, cache_stats, clear_cache
from sweeplab.data.datamodule import ImageDataModule
from sweeplab.data.sources import DigitsSource, ImageFolderSource, ImageSet, SyntheticSource

__all__ = [
    "CacheSettings",
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageSet",
    "SyntheticSource",
    "cache_stats",
    "clear_cache",
]
