"""Image sources: where labelled images come from, decoded to uint8 tensors at one size, through the
process and disk caches of `cache.py` (a source says what identifies its images and how to decode them)."""

from __future__ import annotations

import csv
import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sweeplab.data.cache import CacheSettings, cached, count, entry_name, open_or_build
from sweeplab.errors import SweeplabError, config_error, did_you_mean, one_line

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
DECODE_CHUNK = 256  # images decoded per step into the disk map: memory stays O(chunk), not O(dataset)


@dataclass(frozen=True)
class ImageSet:
    """Decoded images (N, C, H, W) uint8, integer labels, class names and per-image ids. `stored`: the
    disk cache entry they came from (None: decoded into memory only); `mapped`: read from that map per
    batch, not copied into memory (the data is over `data.host_cache_max_gb`)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    stored: str | None = None
    mapped: bool = False
    how: str = "memory"  # hit / built / rebuilt (disk cache), memory (no disk cache)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Source:
    """What every source shares: `load` through the caches. A subclass gives `cache_key` (identifies the
    decoded images: files, sizes and times, or the source's own identity), `label` (a readable file
    name part), `meta` (labels, classes, ids without decoding) and `decode_into` (fills an array)."""

    disk_cache = True  # False: made faster than read back (random images), memory only

    def cache_key(self, img_size: int, in_chans: int) -> Any:
        raise NotImplementedError

    def label(self, img_size: int, in_chans: int) -> str:
        return f"{type(self).__name__.removesuffix('Source').lower()}-{img_size}px-{in_chans}ch"

    def meta(self) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        raise NotImplementedError

    def decode_into(self, out: np.ndarray, img_size: int, in_chans: int) -> int:
        """Decode every image into `out` (N, C, H, W) uint8; the number decoded."""
        raise NotImplementedError

    def load(self, img_size: int, in_chans: int, cache: CacheSettings | None = None) -> ImageSet:
        """The decoded images: from this process's memory, else the disk cache (built when absent or
        broken) when `cache` enables it, else decoded into memory."""
        labels, classes, ids = self.meta()
        shape = (len(labels), in_chans, img_size, img_size)
        key = self.cache_key(img_size, in_chans)
        if cache is None or not cache.enabled or not self.disk_cache:
            return cached(("memory", key), lambda: self._in_memory(shape, labels, classes, ids))
        name = entry_name(key, self.label(img_size, in_chans))
        mapped = int(np.prod(shape)) > cache.host_cap
        return cached(
            ("disk", str(cache.root), name, mapped),
            lambda: self._from_disk(cache.root, name, shape, mapped, labels, classes, ids),
        )

    def _in_memory(
        self, shape: tuple[int, ...], labels: torch.Tensor, classes: tuple[str, ...], ids: tuple[str, ...]
    ) -> ImageSet:
        out = np.empty(shape, dtype=np.uint8)
        count("images_decoded", self.decode_into(out, shape[2], shape[1]))
        return ImageSet(torch.from_numpy(out), labels, classes, ids)

    def _from_disk(
        self,
        root: Path,
        name: str,
        shape: tuple[int, ...],
        mapped: bool,
        labels: torch.Tensor,
        classes: tuple[str, ...],
        ids: tuple[str, ...],
    ) -> ImageSet:
        try:
            opened = open_or_build(root, name, shape, lambda out: self.decode_into(out, shape[2], shape[1]))
        except OSError as exc:  # an unwritable or full cache folder must not stop training
            log.warning("data: no decode cache in %s (%s); decoding into memory", root, one_line(exc))
            return self._in_memory(shape, labels, classes, ids)
        count("images_decoded", opened.decoded)
        if mapped:
            log.info(
                "data: %.2f GiB of decoded images is over data.host_cache_max_gb; reading batches from %s",
                opened.images.nbytes / 2**30,
                opened.path,
            )
            images = torch.from_numpy(opened.images)
        else:
            images = torch.from_numpy(np.array(opened.images))  # one sequential read into memory
        return ImageSet(images, labels, classes, ids, str(opened.path), mapped, opened.how)


def _copy_in(out: np.ndarray, x: torch.Tensor) -> int:
    for start in range(0, len(x), DECODE_CHUNK):
        out[start : start + DECODE_CHUNK] = x[start : start + DECODE_CHUNK].numpy()
    return len(x)


@functools.cache
def _sklearn_digits() -> Any:
    """scikit-learn's digits, read once per process (labels are needed even when the images are cached)."""
    from sklearn.datasets import load_digits

    return load_digits()


class DigitsSource(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download."""

    def cache_key(self, img_size: int, in_chans: int) -> tuple:
        import sklearn

        return ("digits", sklearn.__version__, img_size, in_chans)

    @staticmethod
    def _digits() -> Any:
        return _sklearn_digits()

    def meta(self) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        digits = self._digits()
        ids = tuple(f"digit_{i}" for i in range(len(digits.target)))
        return torch.tensor(digits.target, dtype=torch.long), tuple(str(c) for c in range(10)), ids

    def decode_into(self, out: np.ndarray, img_size: int, in_chans: int) -> int:
        x = torch.tensor(self._digits().images, dtype=torch.float32)[:, None] / 16.0
        x = torch.nn.functional.interpolate(
            x, size=(img_size, img_size), mode="bilinear", align_corners=False
        )
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, in_chans, -1, -1).contiguous()
        return _copy_in(out, x)


class SyntheticSource(Source):
    """Random uint8 images with random labels, made in memory: throughput benchmarks at any image size
    without a dataset on disk (nothing here can be learned; the values say nothing about a model)."""

    disk_cache = False

    def __init__(self, num_images: int = 2048, num_classes: int = 17, seed: int = 0) -> None:
        if int(num_classes) < 2:
            raise config_error("data.num_classes", num_classes, "must be at least 2")
        if int(num_images) < 10 * int(num_classes):
            raise config_error(
                "data.num_images", num_images, f"must be at least 10 per class ({10 * int(num_classes)})"
            )
        self.num_images, self.num_classes, self.seed = int(num_images), int(num_classes), int(seed)

    def cache_key(self, img_size: int, in_chans: int) -> tuple:
        return ("synthetic", self.num_images, self.num_classes, self.seed, img_size, in_chans)

    def meta(self) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        labels = torch.arange(self.num_images) % self.num_classes  # every class equally often
        classes = tuple(f"class_{i}" for i in range(self.num_classes))
        return labels, classes, tuple(f"synthetic_{i}" for i in range(self.num_images))

    def decode_into(self, out: np.ndarray, img_size: int, in_chans: int) -> int:
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, in_chans, img_size, img_size)
        out[:] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).numpy()
        return self.num_images


class ImageFolderSource(Source):
    """Images on disk, in the competition layout or one sub-folder per class.

    - `layout=csv`: `<root>/<csv_file>` with an id and a target column, images in `<root>/<image_dir>/`;
      an id may carry its extension or not.
    - `layout=folders`: `<root>/<class name>/<image>`.
    - `layout=auto`: csv when the CSV file exists, else folders.

    Files are listed and checked here, at construction, so a bad layout fails before any training.
    """

    def __init__(
        self,
        root: str | None,
        layout: str = "auto",
        csv_file: str = "train.csv",
        image_dir: str = "train",
        id_column: str = "ID",
        target_column: str = "target",
        decode_workers: int = 4,
    ) -> None:
        if root in (None, "", "???"):
            raise SweeplabError(
                "data.root is not set: data=image_folder needs data.root=<folder> "
                "(holding train.csv and train/, or one sub-folder per class)"
            )
        self.root = Path(os.path.expanduser(str(root))).resolve()
        if not self.root.is_dir():
            raise config_error("data.root", str(root), "no such folder")
        if layout not in ("auto", "csv", "folders"):
            raise config_error("data.layout", layout, "allowed: auto, csv, folders")
        if layout == "auto":
            layout = "csv" if (self.root / csv_file).is_file() else "folders"
        self.layout = layout
        self.decode_workers = max(1, int(decode_workers))
        if layout == "csv":
            self.files, targets = self._list_csv(csv_file, image_dir, id_column, target_column)
        else:
            self.files, targets = self._list_folders()
        self.classes = tuple(sorted(set(targets), key=natural_key))
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = torch.tensor([index[t] for t in targets], dtype=torch.long)
        if len(self.classes) < 2:
            raise config_error(
                "data.root", str(root), f"found {len(self.classes)} class(es); need at least 2"
            )

    def _list_csv(
        self, csv_file: str, image_dir: str, id_col: str, target_col: str
    ) -> tuple[list[Path], list[str]]:
        csv_path = self.root / csv_file
        if not csv_path.is_file():
            raise config_error("data.csv_file", csv_file, f"no such file in {self.root}")
        folder = self.root / image_dir
        if not folder.is_dir():
            raise config_error("data.image_dir", image_dir, f"no such folder in {self.root}")
        _, table = read_csv(csv_path, {"data.id_column": id_col, "data.target_column": target_col})
        rows = [(r[id_col].strip(), r[target_col].strip()) for r in table]
        if not rows:
            raise config_error("data.csv_file", csv_file, "has no rows")
        files, missing = find_images(folder, [image_id for image_id, _ in rows])
        if missing:
            raise config_error(
                "data.image_dir",
                image_dir,
                f"{len(missing)} image(s) listed in {csv_path.name} are missing, first: {folder / missing[0]}",
            )
        return files, [t for _, t in rows]

    def _list_folders(self) -> tuple[list[Path], list[str]]:
        files: list[Path] = []
        targets: list[str] = []
        for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(path)
                    targets.append(class_dir.name)
        if not files:
            raise config_error(
                "data.root",
                str(self.root),
                "no images found: expected train.csv + train/ (layout=csv) or one sub-folder of images per class",
            )
        return files, targets

    def cache_key(self, img_size: int, in_chans: int) -> tuple:
        """The files as they are now (path, size, modification time): an added, removed, replaced or
        edited image is another key, so a stale entry is never read."""
        files = []
        for path in self.files:
            st = path.stat()
            files.append((str(path), st.st_size, st.st_mtime_ns))
        return ("image_folder", "bilinear", tuple(files), img_size, in_chans)

    def label(self, img_size: int, in_chans: int) -> str:
        return f"{self.root.name or 'images'}-{img_size}px-{in_chans}ch"

    def meta(self) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        return self.labels, self.classes, tuple(p.name for p in self.files)

    def decode_into(self, out: np.ndarray, img_size: int, in_chans: int) -> int:
        return decode_files_into(self.files, out, img_size, in_chans, self.decode_workers)


def _decoder(img_size: int, in_chans: int) -> Callable[[Path], np.ndarray]:
    """Decode one file to (H, W, C) uint8: grey or RGB, bilinear resize; an unreadable file is one line."""
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise config_error("data.in_chans", in_chans, "image folders decode to 1 (grey) or 3 (RGB) channels")

    def decode(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im = im.convert(mode).resize((img_size, img_size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).reshape(img_size, img_size, in_chans)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise SweeplabError(f"cannot read image {path}: {one_line(exc)}") from exc

    return decode


def decode_files_into(
    files: Sequence[Path], out: np.ndarray, img_size: int, in_chans: int, workers: int = 4
) -> int:
    """Decode `files` into `out` (N, C, H, W) uint8 a chunk at a time (so a map larger than memory can
    be filled), by `workers` threads (PIL releases the GIL); the number decoded."""
    decode = _decoder(img_size, in_chans)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            chunk = list(pool.map(decode, files[start : start + DECODE_CHUNK]))
            out[start : start + len(chunk)] = np.stack(chunk).transpose(0, 3, 1, 2)
    return len(files)


def decode_files(files: list[Path], img_size: int, in_chans: int, workers: int = 4) -> torch.Tensor:
    """Image files as one (N, C, H, W) uint8 tensor at `img_size`, in memory (predict's own inputs)."""
    _decoder(img_size, in_chans)  # a bad channel count fails before allocating
    out = np.empty((len(files), in_chans, img_size, img_size), dtype=np.uint8)
    count("images_decoded", decode_files_into(files, out, img_size, in_chans, workers))
    return torch.from_numpy(out)


def read_csv(path: Path, wanted: dict[str, str]) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV file's columns and rows; each column `wanted` names (config key → column) must be there."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    for key, column in wanted.items():
        if column not in columns:
            raise config_error(
                key,
                column,
                f"not a column of {path.name}; its columns are {', '.join(columns) or 'none'}"
                + did_you_mean(column, columns),
            )
    return columns, rows


def find_images(folder: Path, ids: list[str]) -> tuple[list[Path], list[str]]:
    """The file of each id in `folder` (an id may carry its extension or not), and the ids with none."""
    present = {p.name: p for p in folder.iterdir() if p.is_file()}
    stems = {p.stem: p for p in present.values() if p.suffix.lower() in IMAGE_EXTENSIONS}
    files: list[Path] = []
    missing: list[str] = []
    for image_id in ids:
        path = present.get(image_id) or stems.get(image_id)
        if path is None:
            missing.append(image_id)
        else:
            files.append(path)
    return files, missing


def natural_key(name: str) -> tuple:
    """Sort class names '2' before '10'."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
