"""Data sources: digits split by seed, image folders in both layouts, decoded once per process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sweeplab.data import DigitsSource, ImageDataModule, ImageFolderSource, cache_stats, clear_cache
from sweeplab.errors import SweeplabError
from sweeplab.training.build import build_datamodule


def _write_images(folder, names, size=12, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)


@pytest.fixture
def competition_root(tmp_path):
    root = tmp_path / "doc-cls"
    ids = [f"img{i:03d}" for i in range(30)]
    _write_images(root / "train", [f"{i}.png" for i in ids])
    rows = "\n".join(f"{i}.png,{n % 3}" for n, i in enumerate(ids))
    (root / "train.csv").write_text(f"ID,target\n{rows}\n")
    return root


def test_digits_split_is_stratified_and_seeded():
    clear_cache()
    a = ImageDataModule(DigitsSource(), img_size=16, split_seed=1)
    a.load()
    b = ImageDataModule(DigitsSource(), img_size=16, split_seed=1)
    b.load()
    c = ImageDataModule(DigitsSource(), img_size=16, split_seed=2)
    c.load()
    assert all(np.array_equal(a.splits[k], b.splits[k]) for k in ("train", "val", "test"))
    assert not np.array_equal(a.splits["val"], c.splits["val"])
    labels = a.data.labels.numpy()
    assert set(a.splits["train"]).isdisjoint(a.splits["val"]) and set(a.splits["val"]).isdisjoint(
        a.splits["test"]
    )
    val_share = np.bincount(labels[a.splits["val"]], minlength=10) / np.bincount(labels, minlength=10)
    assert val_share.min() > 0.1 and val_share.max() < 0.2
    assert a.data.images.dtype == torch.uint8 and a.data.images.shape[-2:] == (16, 16)


def test_second_datamodule_in_process_reuses_decoded_images(compose_cfg):
    clear_cache()
    build_datamodule(compose_cfg(["data.img_size=24"]))
    decoded = cache_stats()["images_decoded"]
    build_datamodule(compose_cfg(["data.img_size=24", "seed=7"]))
    assert decoded == 1797
    assert cache_stats()["images_decoded"] == decoded
    assert cache_stats()["hits"] == 1
    build_datamodule(compose_cfg(["data.img_size=28"]))  # another size is another decode
    assert cache_stats()["images_decoded"] == 2 * decoded


def test_competition_layout_reads_csv_and_images(competition_root):
    clear_cache()
    source = ImageFolderSource(str(competition_root))
    assert source.layout == "csv"
    data = source.load(8, 3)
    assert data.images.shape == (30, 3, 8, 8)
    assert data.classes == ("0", "1", "2")
    source.load(8, 3)
    assert cache_stats()["images_decoded"] == 30


def test_competition_layout_accepts_ids_without_extension_and_renamed_columns(tmp_path):
    root = tmp_path / "d"
    _write_images(root / "imgs", [f"a{i}.jpg" for i in range(6)])
    (root / "labels.csv").write_text(
        "file,label\n" + "\n".join(f"a{i},{'cat' if i % 2 else 'dog'}" for i in range(6))
    )
    source = ImageFolderSource(
        str(root), csv_file="labels.csv", image_dir="imgs", id_column="file", target_column="label"
    )
    assert source.load(8, 1).classes == ("cat", "dog")


def test_a_subfolder_per_class_is_read_as_one_label_per_folder_in_name_order(tmp_path):
    for cls in ("ants", "bees"):
        _write_images(tmp_path / cls, [f"{cls}{i}.png" for i in range(4)])
    source = ImageFolderSource(str(tmp_path))
    assert source.layout == "folders"
    data = source.load(10, 3)
    assert data.classes == ("ants", "bees") and data.labels.tolist() == [0] * 4 + [1] * 4


def test_image_folder_trains_through_the_cli_config(compose_cfg, competition_root):
    from sweeplab.training import train
    from tests.conftest import fast

    cfg = compose_cfg(
        fast(
            "data=image_folder",
            f"data.root={competition_root}",
            "data.img_size=32",
            "data.batch_size=4",
            "data.val_fraction=0.3",
            "data.test_fraction=0.2",
        )
    )
    assert 0.0 <= train(cfg) <= 1.0


def test_missing_root_is_one_clear_error(compose_cfg):
    with pytest.raises(SweeplabError, match=r"data.root is not set"):
        build_datamodule(compose_cfg(["data=image_folder"]))
    with pytest.raises(SweeplabError, match=r"data.root='/no/such/dir': no such folder"):
        build_datamodule(compose_cfg(["data=image_folder", "data.root=/no/such/dir"]))


def test_csv_without_id_or_target_column_names_the_columns(competition_root):
    (competition_root / "train.csv").write_text("filename,target\nimg000.png,0\n")
    with pytest.raises(
        SweeplabError,
        match=r"data.id_column='ID': not a column of train.csv; its columns are filename, target",
    ):
        ImageFolderSource(str(competition_root))


def test_csv_listing_a_missing_image_names_it(competition_root):
    (competition_root / "train" / "img005.png").unlink()
    with pytest.raises(SweeplabError, match=r"missing, first: .*img005"):
        ImageFolderSource(str(competition_root))


def test_unreadable_image_names_the_file(competition_root):
    clear_cache()
    (competition_root / "train" / "img007.png").write_bytes(b"not a png")
    with pytest.raises(SweeplabError, match=r"cannot read image .*img007.png"):
        ImageFolderSource(str(competition_root)).load(8, 3)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"test_fraction": 1.0}, "data.test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, "data.val_fraction"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"mean": [0.5, 0.5]}, "data.mean"),
    ],
)
def test_bad_datamodule_arguments_name_the_key(kwargs, key):
    with pytest.raises(SweeplabError, match=key.replace(".", r"\.")):
        ImageDataModule(DigitsSource(), **kwargs)
