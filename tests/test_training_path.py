"""The fast training path: data resident on the training device, memory released between trials,
torch.compile timed. GPU behaviour is exercised on PyTorch's `meta` device where a CPU test can."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

import pytest
import torch

from sweeplab.data import DigitsSource, ImageDataModule, clear_cache
from sweeplab.errors import SweeplabError
from sweeplab.training import build, run, train
from tests.conftest import fast


def _batch(dm: ImageDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(dm.train_dataloader()))


def test_resident_data_is_copied_to_the_device_once_and_batches_are_gathered_there():
    clear_cache()
    a = ImageDataModule(DigitsSource(), img_size=16, num_workers=2, resident=True, device="meta")
    b = ImageDataModule(
        DigitsSource(), img_size=16, num_workers=2, resident=True, device="meta", split_seed=3
    )
    loader = a.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory  # no workers, no pinning: nothing to copy
    x, y = next(iter(loader))
    assert x.device.type == "meta" and y.device.type == "meta"
    assert x.dtype == torch.uint8 and x.shape == (64, 1, 16, 16)  # uint8 until the device-side transform
    b.train_dataloader()
    # the second datamodule (another trial in this process) gathers from the same device copy
    assert b.train_dataloader().dataset.data.images is loader.dataset.data.images


def test_without_a_gpu_auto_keeps_the_dataloader_and_its_persistent_workers():
    clear_cache()
    dm = ImageDataModule(DigitsSource(), img_size=16, num_workers=2, resident="auto", device=None)
    loader = dm.train_dataloader()
    assert dm.resident_device is None
    assert loader.num_workers == 2 and loader.persistent_workers
    x, _ = next(iter(loader))
    assert x.device.type == "cpu"


def test_resident_data_over_the_memory_cap_is_refused_naming_the_key():
    dm = ImageDataModule(DigitsSource(), img_size=16, resident=True, resident_max_gb=0.0001, device="meta")
    with pytest.raises(SweeplabError, match=r"data\.resident=True: .*over data\.resident_max_gb=0\.0001"):
        dm.load()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"resident": "sometimes"}, "data.resident"), ({"resident_max_gb": -1}, "data.resident_max_gb")],
)
def test_bad_resident_settings_name_the_key(kwargs, key):
    with pytest.raises(SweeplabError, match=rf"^{key}="):
        ImageDataModule(DigitsSource(), **kwargs)


def test_a_finished_run_releases_its_model_before_the_next_trial(compose_cfg, monkeypatch):
    built: list[weakref.ref] = []
    original = build.build_module

    def remember(cfg, dm):
        module = original(cfg, dm)
        built.append(weakref.ref(module))
        return module

    monkeypatch.setattr(run, "build_module", remember)
    assert math.isfinite(train(compose_cfg(fast())))
    # Lightning keeps trainer, module and callbacks in reference cycles; train() collects them itself
    assert built and built[0]() is None


def test_compiled_model_trains_and_reports_its_compile_time(compose_cfg):
    cfg = compose_cfg(fast("+models.compile.backend=eager", "trainer.limit_train_batches=4"))
    assert math.isfinite(train(cfg))
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["compile_s"] is not None and metrics["compile_s"] >= 0.0


def test_unknown_compile_option_names_the_key_and_the_allowed_ones(compose_cfg):
    with pytest.raises(SweeplabError, match=r"^models\.compile\.speed=11: allowed: .*backend.*mode"):
        train(compose_cfg(fast("+models.compile.speed=11")))
