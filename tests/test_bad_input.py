"""Every mistake a user can make gets one line naming the key, the value and what is allowed, before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeplab.errors import SweeplabError
from sweeplab.training import train
from tests.conftest import fast, on_search_path, run_cli


def _fails_before_training(compose_cfg, overrides, pattern):
    cfg = compose_cfg(fast(*overrides))
    with pytest.raises(SweeplabError, match=pattern) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_unknown_model_name_suggests_close_timm_names(compose_cfg):
    _fails_before_training(
        compose_cfg,
        ["models.net.name=convnext_tinyy"],
        r"models.net.name='convnext_tinyy': not a timm model \(did you mean convnext_tiny",
    )


@pytest.mark.parametrize("lr", ["0", "-1e-3"])
def test_non_positive_lr_is_refused(compose_cfg, lr):
    _fails_before_training(
        compose_cfg, [f"models.optimizer.lr={lr}"], r"models.optimizer.lr=.*must be a number > 0"
    )


def test_img_size_too_small_for_the_model_is_refused(compose_cfg):
    _fails_before_training(
        compose_cfg,
        ["model=test_convnext", "data.img_size=16"],
        r"data.img_size=16: too small for test_convnext: needs at least 32",
    )


def test_pretrained_without_cached_weights_is_one_clear_line(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr("sweeplab.models.backbone._reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    _fails_before_training(
        compose_cfg,
        ["model=resnet18", "models.net.pretrained=true"],
        r"models.net.pretrained=true: weights for resnet18 are not cached .*pretrained=false",
    )


def test_uninstalled_optional_logger_says_what_to_install(compose_cfg, monkeypatch):
    # the clone's root, where the README's commands run
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    try:
        import mlflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mlflow is installed here, so there is nothing missing to report")
    _fails_before_training(compose_cfg, ["logger=mlflow"], r"logger.mlflow: .*pip install -e '\.\[mlflow\]'")


def test_an_argument_the_trainer_does_not_take_names_the_closest_one(compose_cfg):
    _fails_before_training(
        compose_cfg,
        ["+trainer.max_epoch=2"],
        r"^trainer.max_epoch: not an argument of lightning.pytorch.Trainer \(did you mean trainer.max_epochs",
    )


def test_an_argument_the_optimizer_does_not_take_names_the_closest_one(compose_cfg):
    _fails_before_training(
        compose_cfg,
        ["+models.optimizer.lrr=0.1"],
        r"^models.optimizer.lrr: not an argument of torch.optim.AdamW \(did you mean models.optimizer.lr",
    )


def test_optimized_metric_that_is_never_logged_lists_the_logged_ones(compose_cfg):
    cfg = compose_cfg(fast("optimized_metric=val/f2", "callbacks=none"))
    with pytest.raises(
        SweeplabError, match=r"optimized_metric='val/f2' was never logged; metrics logged: .*val/f1"
    ):
        train(cfg)


@pytest.mark.slow
def test_cli_prints_the_error_as_one_line_and_exits_1_as_the_readme_says(tmp_path):
    result = run_cli(["models.net.name=resnet_18"], cwd=tmp_path)
    assert result.returncode == 1
    message = "models.net.name='resnet_18': not a timm model (did you mean resnet18, resnetv2_18, resnet18d?)"
    assert message in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("outputs/*/latest")), "a refused run moved `latest`"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "closest"),
    [("trainer.max_epoch=2", "trainer.max_epochs"), ("hydra.sweeper.n_trail=3", "hydra.sweeper.n_trials")],
)
def test_a_misspelt_key_is_one_line_naming_the_closest_key(tmp_path, override, closest):
    result = run_cli(["-m", "hparams_search=optuna_fast", override], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith(
        f"{override}: no key {override.split('=')[0]} in the config"
    )
    assert f"(did you mean {closest}?)" in result.stderr.splitlines()[0]
    assert "To append to your config use +" not in result.stderr and "Warning" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "", "true"])
def test_hydra_full_error_set_to_anything_but_1_keeps_errors_one_line(tmp_path, value):
    result = run_cli(["trainer.max_epoch=2"], cwd=tmp_path, env={"HYDRA_FULL_ERROR": value})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "trainer.max_epoch=2: no key trainer.max_epoch in the config (did you mean trainer.max_epochs?); "
        "a new key (one the app reads) is added with a leading +"
    ]


@pytest.mark.slow
def test_a_config_error_the_sweeper_finds_is_one_line_naming_each_override_once(tmp_path):
    result = run_cli(
        ["-m", "hparams_search=optuna_fast", "trainer.devices=2", "hydra.sweeper.devices_per_trial=1"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]  # no hint to set HYDRA_FULL_ERROR
    assert line.startswith(
        "trainer.devices=2: a trial of this study trains on hydra.sweeper.devices_per_trial=1"
    )
    keys = [o.split("=")[0] for o in line.split("in a trial with ", 1)[1].rstrip(")").split()]
    assert "data.batch_size" in keys and "trainer.max_epochs" in keys and len(keys) == len(set(keys))
    assert not (tmp_path / "studies").exists()
    traced = run_cli(
        ["-m", "hparams_search=optuna_fast", "trainer.devices=2", "hydra.sweeper.devices_per_trial=1"],
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert traced.returncode == 1 and "Traceback" in traced.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "group", "option"),
    [
        (["optimiser=adamw"], "optimizer", "sgd"),
        (["-m", "hparams_search=optuna_fast", "shceduler=step"], "scheduler", "cosine_warmup"),
        (["models=resnet5"], "model", "resnet50"),
        (["-m", "hparams_search=optuna_fast", "models=resnet5"], "model", "resnet50"),
    ],
    ids=["optimiser", "shceduler-in-a-study", "models", "models-in-a-study"],
)
def test_a_misspelt_config_group_is_one_line_naming_the_group_and_its_options(tmp_path, args, group, option):
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 1
    given = args[-1]
    lines = [x for x in result.stderr.splitlines() if x.startswith(given)]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(
        f"{given}: {given.split('=')[0]} is not a config group (did you mean {group}=...?"
    )
    assert option in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists() and not list(tmp_path.glob("outputs/*/*/metrics.json"))
    if "-m" in args:  # a study's mistake is its one line, nothing more
        assert [x for x in result.stderr.splitlines() if x.strip()] == lines


@pytest.mark.slow
def test_cli_unknown_group_option_lists_the_available_ones(tmp_path):
    result = run_cli(["model=resnet1"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/resnet1'" in result.stderr
    assert "resnet18" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    searchpath = on_search_path(
        tmp_path, "search/broken", "# @package _global_\nhydra:\n  sweeper:\n    params: {x: [1, 2}\n"
    )
    result = run_cli(["-m", "hparams_search=optuna_fast", "+search=broken", searchpath], cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "extra/search/broken.yaml:4:22: YAML syntax error: while parsing a flow sequence expected ',' or ']', but got '}'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_a_group_set_to_null_on_the_command_line_is_one_line_naming_the_way_to_drop_it(tmp_path):
    result = run_cli(["-m", "hparams_search=optuna_fast", "search=null"], cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "search=null: a config group cannot be set to null on the command line; drop it with '~search' "
        "(quoted for the shell), e.g. to search only the params you pass"
    ) in result.stderr.splitlines()
    assert "Traceback" not in result.stderr and not (tmp_path / "studies").exists()


CLASHING_PLUGIN = """
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class TPESamplerConfig:  # as hydra-optuna-sweeper 1.3 registers it: no `group`, no `constant_liar`
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None


ConfigStore.instance().store(
    group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="optuna_sweeper"
)
"""


def test_the_stock_optuna_sweeper_installed_beside_sweeplab_is_one_line_saying_to_uninstall_it(tmp_path):
    plugin = tmp_path / "site" / "hydra_plugins" / "clashing_sweeper"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(CLASHING_PLUGIN)
    result = run_cli(
        ["hparams_search=optuna_fast", "--cfg", "job"], tmp_path, env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("hydra/sweeper/sampler/tpe: ")]
    assert "the plugin 'optuna_sweeper' (hydra-optuna-sweeper) is installed beside sweeplab" in line
    assert "not in 'TPESamplerConfig'" in line and "pip uninstall hydra-optuna-sweeper" in line
