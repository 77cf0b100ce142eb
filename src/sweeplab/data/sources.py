"""Image sources: where labelled images come from, decoded to uint8 tensors at one size."""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sweeplab.data.cache import cached, count
from sweeplab.errors import SweeplabError, config_error, did_you_mean, one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class ImageSet:
    """Decoded images (N, C, H, W) uint8, integer labels, class names and per-image ids."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class DigitsSource:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): no download."""

    def cache_key(self, img_size: int, in_chans: int) -> tuple:
        return ("digits", img_size, in_chans)

    def load(self, img_size: int, in_chans: int) -> ImageSet:
        return cached(self.cache_key(img_size, in_chans), lambda: self._decode(img_size, in_chans))

    @staticmethod
    def _decode(img_size: int, in_chans: int) -> ImageSet:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        x = torch.nn.functional.interpolate(
            x, size=(img_size, img_size), mode="bilinear", align_corners=False
        )
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, in_chans, -1, -1).contiguous()
        count("images_decoded", len(x))
        ids = tuple(f"digit_{i}" for i in range(len(x)))
        return ImageSet(
            x, torch.tensor(digits.target, dtype=torch.long), tuple(str(c) for c in range(10)), ids
        )


class SyntheticSource:
    """Random uint8 images with random labels, made in memory: throughput benchmarks at any image size
    without a dataset on disk (nothing here can be learned; the values say nothing about a model)."""

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

    def load(self, img_size: int, in_chans: int) -> ImageSet:
        return cached(self.cache_key(img_size, in_chans), lambda: self._make(img_size, in_chans))

    def _make(self, img_size: int, in_chans: int) -> ImageSet:
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, in_chans, img_size, img_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        labels = torch.arange(self.num_images) % self.num_classes  # every class equally often
        count("images_decoded", self.num_images)
        classes = tuple(f"class_{i}" for i in range(self.num_classes))
        return ImageSet(images, labels, classes, tuple(f"synthetic_{i}" for i in range(self.num_images)))


class ImageFolderSource:
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
        return ("image_folder", str(self.root), self.layout, tuple(map(str, self.files)), img_size, in_chans)

    def load(self, img_size: int, in_chans: int) -> ImageSet:
        return cached(self.cache_key(img_size, in_chans), lambda: self._decode(img_size, in_chans))

    def _decode(self, img_size: int, in_chans: int) -> ImageSet:
        images = decode_files(self.files, img_size, in_chans, self.decode_workers)
        ids = tuple(p.name for p in self.files)
        return ImageSet(images, self.labels, self.classes, ids)


def decode_files(files: list[Path], img_size: int, in_chans: int, workers: int = 4) -> torch.Tensor:
    """Image files as one (N, C, H, W) uint8 tensor at `img_size`: grey or RGB, bilinear resize, decoded
    by `workers` threads (PIL releases the GIL); an unreadable file is one line naming it."""
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

    with ThreadPoolExecutor(max(1, workers)) as pool:
        arrays = list(pool.map(decode, files))
    count("images_decoded", len(arrays))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


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
