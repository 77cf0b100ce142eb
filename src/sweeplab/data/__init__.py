"""Data: image sources decoded once per process, split and served as uint8 batches."""

from sweeplab.data.cache import cache_stats, clear_cache
from sweeplab.data.datamodule import ImageDataModule
from sweeplab.data.sources import DigitsSource, ImageFolderSource, ImageSet, SyntheticSource

__all__ = [
    "DigitsSource",
    "ImageDataModule",
    "ImageFolderSource",
    "ImageSet",
    "SyntheticSource",
    "cache_stats",
    "clear_cache",
]
