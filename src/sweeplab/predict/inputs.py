"""What to predict: the held-out test split of the members' training data (labels known), a folder of
unlabelled images, or the competition layout (a test folder and the `sample_submission.csv` whose id
column gives the rows and their order). Each is an `input` config option; each lists and checks its files,
then decodes them once to uint8 at the members' image size, before any model is loaded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sweeplab.data.cache import cached
from sweeplab.data.sources import IMAGE_EXTENSIONS, decode_files, find_images, natural_key, read_csv
from sweeplab.errors import SweeplabError, config_error
from sweeplab.predict.members import Member, on_cpu
from sweeplab.training.build import build_datamodule

DEFAULT_ID, DEFAULT_TARGET = "ID", "target"  # submission columns when neither config nor members name them


@dataclass
class Images:
    """Decoded images to predict, in the order submission.csv lists them."""

    images: torch.Tensor  # (N, C, H, W) uint8, on the CPU
    ids: list[str]
    labels: torch.Tensor | None  # indices into the members' classes, where the input has labels
    id_column: str
    target_column: str
    rows: list[dict[str, str]] | None = None  # sample_submission.csv's rows, written back with the target
    columns: list[str] | None = None  # ... and its columns, in its order
    what: str = ""  # for the log


def _columns(members: Sequence[Member], id_column: str | None, target_column: str | None) -> tuple[str, str]:
    """The submission's column names: as given, else as the members' data config names them."""
    data = members[0].config.data
    return (
        id_column or str(data.get("id_column") or DEFAULT_ID),
        target_column or str(data.get("target_column") or DEFAULT_TARGET),
    )


class HeldOut:
    """The test split the members' training runs held out (`data.test_fraction`), with its labels."""

    def __init__(self, id_column: str | None = None, target_column: str | None = None) -> None:
        self.id_column, self.target_column = id_column, target_column

    def load(self, members: Sequence[Member], img_size: int, in_chans: int) -> Images:
        split: tuple[str, ...] | None = None
        first: Member | None = None
        images = labels = None
        seen: dict[str, tuple[str, ...]] = {}
        for m in members:
            key = OmegaConf.to_yaml(m.config.data)
            if key in seen:  # folds of one run, or trials with one data config: one split
                continue
            dm = build_datamodule(on_cpu(m.config))
            data, test = dm.load(), dm.splits["test"]
            if dm.test_fraction == 0:
                raise config_error(
                    "input",
                    "heldout",
                    f"{m.name} trained with data.test_fraction=0: it held out no test images "
                    "(its 'test' split is its val split); predict with input=folder or input=submission",
                )
            if tuple(data.classes) != m.classes:
                raise SweeplabError(f"{m.name}: its data now has other classes than it trained on")
            ids = tuple(data.ids[i] for i in test)
            seen[key] = ids
            if split is None:
                split, first = ids, m
                images, labels = data.images[test], data.labels[test]
            elif ids != split:
                assert first is not None
                raise SweeplabError(
                    f"members held out different test images: {first.name} and {m.name} split their data "
                    "differently (data.split_seed, data.test_fraction or the data itself differ); "
                    "predict them separately, or on input=folder / input=submission"
                )
        assert split is not None and images is not None and labels is not None
        id_column, target_column = _columns(members, self.id_column, self.target_column)
        return Images(
            images.contiguous(),
            list(split),
            labels.clone(),
            id_column,
            target_column,
            what=f"the held-out test split of {members[0].name}'s data ({len(split)} images)",
        )


class ImageDir:
    """Every image in a folder, by file name (natural order), without labels."""

    def __init__(
        self,
        dir: str | None,
        id_column: str | None = None,
        target_column: str | None = None,
        decode_workers: int = 4,
    ) -> None:
        if dir in (None, "", "???"):
            raise SweeplabError("input.dir is not set: input=folder needs input.dir=<folder of images>")
        self.folder = Path(os.path.expanduser(str(dir))).resolve()
        if not self.folder.is_dir():
            raise config_error("input.dir", str(dir), "no such folder")
        self.files = sorted(
            (p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: natural_key(p.name),
        )
        if not self.files:
            raise config_error("input.dir", str(dir), f"holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.id_column, self.target_column = id_column, target_column
        self.decode_workers = int(decode_workers)

    def load(self, members: Sequence[Member], img_size: int, in_chans: int) -> Images:
        id_column, target_column = _columns(members, self.id_column, self.target_column)
        return Images(
            _decoded(self.files, img_size, in_chans, self.decode_workers),
            [p.name for p in self.files],
            None,
            id_column,
            target_column,
            what=f"{len(self.files)} images in {self.folder}",
        )


class Submission:
    """The competition layout: `<root>/<csv_file>` (sample_submission.csv) lists the ids, in the order
    submission.csv must keep; `<root>/<image_dir>/` holds their images (an id with or without extension)."""

    def __init__(
        self,
        root: str | None,
        image_dir: str = "test",
        csv_file: str = "sample_submission.csv",
        id_column: str | None = None,
        target_column: str | None = None,
        decode_workers: int = 4,
    ) -> None:
        if root in (None, "", "???"):
            raise SweeplabError(
                "input.root is not set: input=submission needs input.root=<folder> holding "
                f"{csv_file} and {image_dir}/"
            )
        self.root = Path(os.path.expanduser(str(root))).resolve()
        if not self.root.is_dir():
            raise config_error("input.root", str(root), "no such folder")
        self.csv_path = self.root / csv_file
        if not self.csv_path.is_file():
            raise config_error("input.csv_file", csv_file, f"no such file in {self.root}")
        self.folder = self.root / image_dir
        if not self.folder.is_dir():
            raise config_error("input.image_dir", image_dir, f"no such folder in {self.root}")
        self.id_column, self.target_column = id_column, target_column
        self.decode_workers = int(decode_workers)

    def load(self, members: Sequence[Member], img_size: int, in_chans: int) -> Images:
        id_column, target_column = _columns(members, self.id_column, self.target_column)
        columns, rows = read_csv(
            self.csv_path, {"input.id_column": id_column, "input.target_column": target_column}
        )
        if not rows:
            raise config_error("input.csv_file", self.csv_path.name, "has no rows")
        ids = [r[id_column].strip() for r in rows]
        files, missing = find_images(self.folder, ids)
        if missing:
            raise config_error(
                "input.image_dir",
                self.folder.name,
                f"{len(missing)} id(s) of {self.csv_path.name} have no image, first: {self.folder / missing[0]}",
            )
        return Images(
            _decoded(files, img_size, in_chans, self.decode_workers),
            ids,
            None,
            id_column,
            target_column,
            rows=rows,
            columns=columns,
            what=f"{len(ids)} images of {self.csv_path}",
        )


def _decoded(files: list[Path], img_size: int, in_chans: int, workers: int) -> torch.Tensor:
    """Decoded once per process (a second prediction on the same files reuses them)."""
    key = ("predict", tuple(map(str, files)), img_size, in_chans)
    return cached(key, lambda: decode_files(files, img_size, in_chans, workers))
