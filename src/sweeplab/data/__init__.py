"""Data: image sources decoded once per process, split and served as uint8 batches."""

from sweeplab.data.cache import cache_stats, clear_cache
from sweeplab.data.datamodule import ImageDataModule
from sweeplab.data.sources import DigitsSource, ImageFolderSource, ImageSet

__all__ = [
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageSet",
    "cache_stats",
    "clear_cache",
]
