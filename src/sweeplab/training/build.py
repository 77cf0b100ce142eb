"""Build datamodule, model and trainer from the composed config; every failure is a one-line SweeplabError."""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from typing import Any

import lightning.pytorch as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab.config import device_count, instantiate_node, unexpected_argument
from sweeplab.data import ImageDataModule
from sweeplab.data.datamodule import check_folds
from sweeplab.errors import SweeplabError, config_error, one_line
from sweeplab.hydra_errors import replaced_section_line
from sweeplab.models import ImageClassifier
from sweeplab.models.backbone import check_input_size
from sweeplab.search.schema import TARGET as SWEEPER_TARGET

log = logging.getLogger(__name__)

# Lightning's own pytree helper still builds torch's LeafSpec, which torch >= 2.10 deprecates: not the
# user's business, and one line per run. Only that message, only from Lightning's module.
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"lightning\.pytorch\.utilities\._pytree",
)


def uses_gpu(cfg: DictConfig) -> bool:
    """Whether the trainer will run on a CUDA device."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_auto(value: Any, gpu_value: Any, cpu_value: Any, gpu: bool) -> Any:
    return (gpu_value if gpu else cpu_value) if value == "auto" else value


def build_datamodule(cfg: DictConfig, fold: int | None = None) -> ImageDataModule:
    """`data._target_` is the datamodule, `data.source._target_` the image source; every other key of
    `data` goes to the datamodule if its signature names it, else to the source (so `data.root=...`).
    `fold`: which of `data.folds` stratified folds validates (k-fold runs build one datamodule per fold)."""
    node = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(node, dict)
    if fold is not None:
        node["fold"] = fold
    dm_cls = get_class(node.pop("_target_"))
    source_node = node.pop("source")
    dm_params = inspect.signature(dm_cls).parameters
    source_node.update({k: node.pop(k) for k in list(node) if k not in dm_params})
    source = instantiate_node(source_node, "data")
    gpu = uses_gpu(cfg)
    channels_last = resolve_auto(cfg.models.get("channels_last", "auto"), True, False, gpu)
    try:
        dm = dm_cls(source=source, channels_last=channels_last, device="cuda" if gpu else None, **node)
    except TypeError as exc:
        raise config_error("data", dm_cls.__name__, str(exc)) from None
    dm.load()  # decode (or reuse the process cache) and split now, so bad files fail before training
    return dm


def build_net(cfg: DictConfig, dm: ImageDataModule) -> torch.nn.Module:
    """The backbone for `dm`'s classes and image size (checked against the model's input size), after
    the optimizer's learning rate is checked."""
    lr = cfg.models.optimizer.get("lr")
    if lr is None or float(lr) <= 0:
        raise config_error("models.optimizer.lr", lr, "must be a number > 0")
    net = instantiate_node(cfg.models.net, "models.net", num_classes=dm.num_classes)
    check_input_size(net, cfg.models.net.name, dm.img_size)
    return net


# The train config's sections, each a mapping its groups fill (model=, optimizer=, scheduler= fill `models`)
SECTIONS = ("data", "models", "trainer", "callbacks", "paths")


def check_sections(cfg: DictConfig) -> None:
    """A section replaced by a plain value on the command line (`models=resnet5` for `model=resnet50`) is one
    line naming the config group it misspells and the group's options, before anything is built."""
    for key in SECTIONS:
        value = cfg.get(key)
        if value is not None and not isinstance(value, DictConfig):
            raise SweeplabError(replaced_section_line(key, value))


def check_config(cfg: DictConfig) -> None:
    """What a training job rejects before it trains (data root, CSV columns, unreadable images, image size,
    batch size, model name, learning rate), checked on the CPU without training: the sweeper's
    `hydra.sweeper.check`, so that a study refuses a bad config before it writes anything. The decoded
    data stays in the process cache, where the study's trials find it."""
    check_sections(cfg)
    check_devices(cfg)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"  # the sweeper never touches CUDA: the GPUs are for its trials
    optimized_mode(cfg)
    check_folds(cfg.data.get("folds"))
    data_log = logging.getLogger("sweeplab.data")
    level = data_log.level
    data_log.setLevel(logging.WARNING)  # the check's "data: ..." line is no trial's: kept off the console
    try:
        build_net(cfg, build_datamodule(cfg))
    finally:
        data_log.setLevel(level)


def check_devices(cfg: DictConfig) -> None:
    """A study's trial trains on `hydra.sweeper.devices_per_trial` devices of one machine: that many GPUs are
    given to its worker, whose DDP ranks join the trial (`sweeplab.launching.ranks`). A trainer asking for
    another count would start ranks the sweep cannot place, so it is refused in one line. Lightning's
    default launcher (`ddp`) and `ddp_spawn` are supported; the forking launchers (`ddp_fork`,
    `ddp_notebook`) are refused: their ranks would share the worker's open storage connection."""
    if not HydraConfig.initialized():
        return
    sweeper = HydraConfig.get().sweeper
    if sweeper.get("_target_") != SWEEPER_TARGET:
        return
    per_trial = int(sweeper.get("devices_per_trial") or 1)
    trainer = cfg.trainer
    devices = trainer.get("devices", 1)
    shown = OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices
    if int(trainer.get("num_nodes") or 1) > 1:
        raise config_error(
            "trainer.num_nodes",
            trainer.num_nodes,
            "a study's trial trains on one machine; run trials side by side on several machines instead "
            "(the same command and storage on each)",
        )
    asked = device_count(devices)  # None: auto or -1, which in a worker means the devices it was given
    if asked is not None and asked != per_trial:
        raise config_error(
            "trainer.devices",
            shown,
            f"a trial of this study trains on hydra.sweeper.devices_per_trial={per_trial} device(s); set "
            f"hydra.sweeper.devices_per_trial={asked} (each trial then runs in a worker process given "
            f"{asked} devices, the DDP ranks Lightning starts join it)",
        )
    strategy = str(trainer.get("strategy") or "auto")
    if per_trial > 1 and strategy.startswith(("ddp_fork", "ddp_notebook")):
        raise config_error(
            "trainer.strategy",
            strategy,
            "a trial's forked ranks would share its worker's storage connection; use trainer.strategy=ddp "
            "(Lightning's default launcher) or ddp_spawn",
        )


def optimized_mode(cfg: DictConfig) -> str:
    mode = str(cfg.get("optimized_mode", "max"))
    if mode not in ("max", "min"):
        raise config_error("optimized_mode", mode, "allowed: max, min")
    return mode


def build_module(cfg: DictConfig, dm: ImageDataModule) -> ImageClassifier:
    net = build_net(cfg, dm)
    if dm.channels_last:
        net = net.to(memory_format=torch.channels_last)
    compile_args = compile_options(cfg)
    if compile_args is not None:
        net = torch.compile(net, **compile_args)
    return ImageClassifier(
        net=net,
        num_classes=dm.num_classes,
        optimizer=cfg.models.optimizer,
        scheduler=cfg.models.get("scheduler"),
        label_smoothing=cfg.models.loss.label_smoothing,
        mixup=cfg.models.get("mixup"),
        class_names=dm.classes,
    )


def compile_options(cfg: DictConfig) -> dict[str, Any] | None:
    """`models.compile`: false, true, or torch.compile's keyword arguments ({mode: max-autotune, ...})."""
    node = cfg.models.get("compile", False)
    if node is None or node is False:
        return None
    if node is True:
        return {}
    if isinstance(node, DictConfig):
        options = OmegaConf.to_container(node, resolve=True)
        allowed = set(inspect.signature(torch.compile).parameters) - {"model"}
        unknown = sorted(set(options) - allowed)  # type: ignore[arg-type]
        if unknown:
            raise config_error(
                f"models.compile.{unknown[0]}", options[unknown[0]], f"allowed: {', '.join(sorted(allowed))}"
            )
        return options  # type: ignore[return-value]
    raise config_error(
        "models.compile", node, "allowed: false, true, or torch.compile's arguments as a mapping"
    )


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    nodes = cfg.get("callbacks") or {}
    return [instantiate_node(node, f"callbacks.{name}") for name, node in nodes.items() if node is not None]


def build_loggers(cfg: DictConfig) -> list[Any]:
    nodes = cfg.get("logger") or {}
    return [instantiate_node(node, f"logger.{name}") for name, node in nodes.items() if node is not None]


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback], resuming: bool = False) -> L.Trainer:
    """The Lightning Trainer of `cfg.trainer`, with the config's callbacks and loggers. `resuming`: the fit
    continues from a checkpoint, so no sanity check runs before it (the run it continues had its own)."""
    gpu = uses_gpu(cfg)
    precision = resolve_auto(cfg.trainer.get("precision", "auto"), _gpu_precision(), "32-true", gpu)
    callbacks = [*extra_callbacks, *build_callbacks(cfg)]
    loggers = build_loggers(cfg)
    if not loggers:  # logger=none or logger=[]: a learning-rate monitor has nowhere to write
        kept = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        if len(kept) < len(callbacks):
            log.info("no logger: the learning-rate monitor is left out")
        callbacks = kept
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = precision
    if resuming:
        trainer_cfg["num_sanity_val_steps"] = 0
    if quiet_console():  # a study's trial: its console shows warnings only, and no bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not any(isinstance(c, ProgressBar) for c in callbacks):  # callbacks.progress=null: no bar at all
        trainer_cfg.setdefault("enable_progress_bar", False)
    try:
        trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        wrong = unexpected_argument(cause, "trainer", trainer_cfg.get("_target_"))
        if wrong is not None:
            raise SweeplabError(wrong) from None
        if isinstance(cause, MisconfigurationException | ValueError | TypeError):
            raise SweeplabError(f"trainer: {one_line(cause, with_type=False)}") from None
        raise
    log.info("trainer: accelerator=%s precision=%s", trainer.accelerator.__class__.__name__, precision)
    return trainer


def quiet_console() -> bool:
    """Whether this job's console shows warnings only (a sweep sets that for its trials, see
    `sweeplab.search.plan.QUIET_CONSOLE`): then a progress bar would be the only thing on it."""
    if not HydraConfig.initialized():
        return False
    level = OmegaConf.select(HydraConfig.get().job_logging, "handlers.console.level", default=None)
    return str(level).upper() in ("WARNING", "ERROR", "CRITICAL")


def _gpu_precision() -> str:
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
