"""Every option of every config group composes and resolves; the documented commands are accepted as written."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, SEED_004_COMMAND

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths", "preset"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 42
    assert resolved["optimized_metric"] == "val/f1"


def test_model_group_lands_in_models_net(compose_cfg):
    cfg = compose_cfg(["model=convnext_tiny", "optimizer=sgd", "scheduler=step", "models.optimizer.lr=5e-4"])
    assert cfg.models.net.name == "convnext_tiny"
    assert cfg.models.optimizer._target_ == "torch.optim.SGD"
    assert cfg.models.optimizer.lr == 5e-4
    assert cfg.models.scheduler._target_.endswith("StepLR")


def test_seed_004_retrain_command_is_accepted_as_written(compose_cfg):
    cfg = compose_cfg(SEED_004_COMMAND)
    assert cfg.models.net.name == "efficientnet_b4"
    assert cfg.exp_name == "efficientnet_b4_run8_replication"
    assert cfg.models.optimizer.lr == pytest.approx(0.0005134333170096499)
    assert cfg.models.scheduler.T_max == 24
    assert cfg.trainer.max_epochs == 22


def test_exp_name_defaults_to_data_and_model_choice(compose_cfg):
    assert compose_cfg(["model=resnet18"]).exp_name == "digits_resnet18"


def test_preset_overrides_groups_and_command_line_overrides_preset(compose_cfg):
    cfg = compose_cfg(["preset=convnext_base_384", "data.img_size=224"])
    assert cfg.models.net.name == "convnext_base"
    assert cfg.data.img_size == 224
    assert cfg.models.scheduler.warmup_epochs == 2


def test_cosine_t_max_follows_max_epochs(compose_cfg):
    cfg = compose_cfg(["trainer.max_epochs=7"])
    assert OmegaConf.to_container(cfg.models.scheduler, resolve=True)["T_max"] == 7
