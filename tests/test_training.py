"""A training run end to end on the bundled digits: built from the composed config, fitted, tested, recorded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweeplab.data import clear_cache
from sweeplab.training import train
from tests.conftest import CONF, SEED_004_COMMAND, fast

# Small enough for a CPU test, big enough for every model's total stride (ViT/Swin are built for it).
MODEL_IMG = {"swin_base": 32, "test_vit": 32}
# the base-sized models take seconds a step on a CPU: the whole suite trains them, `-m "not slow"` leaves them out
HEAVY = {"convnext_base", "swin_base"}
MODELS = [
    pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m
    for m in sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
]


def test_a_run_writes_its_metrics_and_a_second_run_reads_the_decode_cache(compose_cfg, tmp_path):
    clear_cache()  # decoded in this test, into its own decode cache
    cfg = compose_cfg(fast("trainer.max_epochs=2"))
    value = train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["value"] == pytest.approx(value)
    assert metrics["epochs_run"] == 2
    assert metrics["best_val"]["val/f1"] == pytest.approx(value)
    assert set(metrics["last_val"]) >= {"val/f1", "val/acc", "val/loss", "epoch"}
    assert set(metrics["test"]) == {"test/f1", "test/acc", "test/loss"}
    assert Path(metrics["best_checkpoint"]).is_file()
    assert (Path(cfg.paths.output_dir) / "config_resolved.yaml").is_file()
    assert 0.0 <= value <= 1.0
    # a second run on the same data reads the decode cache the first one wrote
    assert metrics["data"]["images_decoded"] > 0 and metrics["data"]["read_s"] >= 0
    clear_cache()  # what a new process starts with
    again = compose_cfg(fast("trainer.max_epochs=1"))
    train(again)
    second = json.loads((Path(again.paths.output_dir) / "metrics.json").read_text())
    assert second["data"]["images_decoded"] == 0, second["data"]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_trains_a_step(compose_cfg, model):
    overrides = fast(
        f"model={model}",
        "trainer.limit_train_batches=1",
        "data.batch_size=8",
        "callbacks=none",
        "logger=none",
        f"data.img_size={MODEL_IMG.get(model, 32)}",
    )
    assert math.isfinite(train(compose_cfg(overrides)))


def test_seed_004_command_runs_with_fast_dev_run(compose_cfg):
    cfg = compose_cfg(
        [
            *SEED_004_COMMAND,
            "+trainer.fast_dev_run=true",
            "data.batch_size=8",
            "trainer.accelerator=cpu",
        ]
    )
    assert math.isfinite(train(cfg))


@pytest.mark.parametrize("scheduler", sorted(p.stem for p in (CONF / "scheduler").glob("*.yaml")))
def test_every_scheduler_steps(compose_cfg, scheduler):
    cfg = compose_cfg(fast(f"scheduler={scheduler}", "trainer.max_epochs=2", "callbacks=none", "logger=none"))
    assert math.isfinite(train(cfg))


def test_label_smoothing_and_mixup_train(compose_cfg):
    cfg = compose_cfg(
        fast(
            "models.loss.label_smoothing=0.1",
            "models.mixup.mixup_alpha=0.2",
            "models.mixup.cutmix_alpha=1.0",
            "callbacks=none",
        )
    )
    assert math.isfinite(train(cfg))


def test_tensorboard_logger_writes_event_files(compose_cfg):
    cfg = compose_cfg(fast("logger=tensorboard"))
    train(cfg)
    assert list((Path(cfg.paths.output_dir) / "tensorboard").rglob("events.out.tfevents.*"))


def test_csv_logger_records_val_and_test_metrics_per_epoch(compose_cfg):
    cfg = compose_cfg(fast("trainer.max_epochs=2"))
    train(cfg)
    header = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/f1", "val/acc", "test/f1", "test/acc", "epoch"} <= set(header)


def test_default_config_reaches_test_macro_f1_above_0_9_on_digits(compose_cfg):
    cfg = compose_cfg(["callbacks.progress=null"])  # the no-argument run, minus the progress bar
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["epochs_run"] == cfg.trainer.max_epochs
    assert metrics["test"]["test/f1"] > 0.9


def test_epochs_are_counted_from_1_in_metrics_and_in_the_progress_bar(compose_cfg):
    from sweeplab.training.build import build_trainer
    from sweeplab.training.callbacks import EpochProgressBar

    cfg = compose_cfg(fast("trainer.max_epochs=2"))
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["last_val"]["epoch"] == 2 and metrics["best_val"]["epoch"] in (1, 2)

    trainer = build_trainer(compose_cfg(["trainer.max_epochs=8", "trainer.accelerator=cpu"]), [])
    (bar,) = [c for c in trainer.callbacks if isinstance(c, EpochProgressBar)]
    bar._trainer = trainer  # as Lightning's setup sets it
    assert bar._get_train_description(0).strip() == "Epoch 1/8"
    assert bar._get_train_description(7).strip() == "Epoch 8/8"


def test_callbacks_progress_null_leaves_no_progress_bar_at_all(compose_cfg):
    from sweeplab.training.build import build_trainer

    trainer = build_trainer(compose_cfg(["callbacks.progress=null", "trainer.accelerator=cpu"]), [])
    assert trainer.progress_bar_callback is None


@pytest.mark.slow  # processes of their own: the whole suite runs it, `-m "not slow"` leaves it out
def test_lightnings_pytree_deprecation_is_not_shown_to_users():
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('default');"
        "import sweeplab.training.build;"
        "from lightning.pytorch.utilities._pytree import _tree_flatten; _tree_flatten(1);"
        "import torch.utils._pytree as p; p.LeafSpec()"  # the same warning from elsewhere still shows
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("`isinstance(treespec, LeafSpec)` is deprecated") == 1
    assert "lightning/pytorch/utilities/_pytree.py" not in result.stderr
