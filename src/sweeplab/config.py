"""Configs into objects, with every failure reported against the config key that caused it, in one line."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from sweeplab.errors import SweeplabError, config_error, did_you_mean, one_line

# Where studies keep their files, relative to the directory a command is started from: the default SQLite
# storage, and the configs a finished study generates under studies/conf/ (presets, focused spaces).
STUDIES_DIR = "studies"
GENERATED_CONF = "conf"

# Optional extras of pyproject.toml, by the config key whose class needs them.
EXTRAS = {"logger.mlflow": "mlflow", "logger.wandb": "wandb", "logger.tensorboard": "tensorboard"}

T = TypeVar("T")


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with the cause of a failure reported against the config key, in one line."""
    target = node.get("_target_") if isinstance(node, DictConfig | dict) else None
    if target is not None:
        try:
            get_object(str(target))
        except Exception:
            raise config_error(
                f"{key}._target_", target, "cannot be imported: no such class or function"
            ) from None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, SweeplabError):
            raise cause from None
        if isinstance(cause, ImportError):
            hint = install_command(EXTRAS[key]) if key in EXTRAS else "install it"
            raise SweeplabError(
                f"{key}: {target} needs a package that is not installed ({one_line(cause, with_type=False)}); "
                f"{hint} or pick another option"
            ) from None
        wrong = unexpected_argument(cause, key, target)
        if wrong is not None:
            raise SweeplabError(wrong) from None
        raise config_error(key, target, one_line(cause)) from None


def install_command(extra: str) -> str:
    """How to add one of sweeplab's extras: from the clone's folder when sweeplab runs from a checkout
    (an editable install), else from the package index."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "sweeplab").is_dir():
        return (
            f"pip install -e '{checkout}[{extra}]'"
            if Path.cwd() != checkout
            else f"pip install -e '.[{extra}]'"
        )
    return f"pip install 'sweeplab[{extra}]'"


def unexpected_argument(cause: BaseException, key: str, target: Any) -> str | None:
    """`<key>.<name>: not an argument of <target> (did you mean <key>.<closest>?)` for a TypeError that
    says a config node passed an argument its class does not take; None for any other error."""
    found = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    if not isinstance(cause, TypeError) or found is None:
        return None
    name = found.group(1)
    try:
        parameters = list(inspect.signature(get_object(str(target))).parameters) if target else []
    except (ValueError, TypeError, ImportError, AttributeError):
        parameters = []
    hint = did_you_mean(
        f"{key}.{name}", [f"{key}.{p}" for p in parameters if p not in ("self", "args", "kwargs")]
    )
    return f"{key}.{name}: not an argument of {target}{hint}"


def typed(schema: type[T], given: Any, key: str) -> T:
    """`given` (a dataclass, a DictConfig or a mapping) as an instance of the dataclass `schema`, by
    OmegaConf's structured-config rules: an unknown key, a wrong type or a missing value (`???`) is one
    line naming `<key>.<field>`; the dataclass's own `__post_init__` checks its ranges.

    A DictConfig is resolved first (interpolations read its own root). In a plain mapping, a value that
    OmegaConf would have to convert to its field's type ("yes" for a bool) is refused: conversions are for
    the text of YAML files and command lines, not for values a Python caller passes."""
    strict = isinstance(given, Mapping) and not OmegaConf.is_config(given)
    data: Any = {}
    try:
        data = plain(given) if not isinstance(given, Mapping) else {k: plain(v) for k, v in given.items()}
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
        result = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _one_line(exc, data, key) from None
    if strict:
        for name, value in data.items():
            if not isinstance(value, Mapping | list) and getattr(result, name) != value:
                wanted = OmegaConf.get_type(merged, name)
                raise config_error(f"{key}.{name}", value, f"must be a {getattr(wanted, '__name__', wanted)}")
    return result  # type: ignore[return-value]


def plain(value: Any) -> Any:
    """Plain containers of a config node or a dataclass: merged into a schema, they carry no type of their
    own."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _one_line(exc: OmegaConfBaseException, data: Any, key: str) -> SweeplabError:
    full = str(exc.full_key or "")
    # a node inside a larger config names its key from that config's root
    path = full[len(key) + 1 :] if full.startswith(f"{key}.") else full
    where = f"{key}.{path}" if path else key
    if isinstance(exc, MissingMandatoryValue):
        return config_error(where, "???", f"needs a value; give one on the command line ({where}=...)")
    value: Any = data
    for part in path.split(".") if path else []:
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(exc.object_type):
        name = path.rsplit(".", 1)[-1]
        allowed = [f.name for f in dataclasses.fields(exc.object_type) if not f.name.startswith("_")]
        parent = where.rsplit(".", 1)[0]
        hint = did_you_mean(name, allowed) or f"; allowed keys: {', '.join(allowed)}"
        return config_error(where, value, f"not a key of {parent}{hint}")
    return config_error(where, value, one_line(exc, with_type=False))


def positive_int(cfg: Mapping[str, Any], key: str) -> int:
    """`cfg[key]` as a whole number >= 1 (a runner's count or size), or one line naming the key."""
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise config_error(key, value, "must be an integer >= 1")
    return value


def device_count(devices: Any) -> int | None:
    """How many devices a Lightning `devices` value asks for; None for auto and -1 (all the process may use)."""
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text.strip(","):
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text.strip(","))
    except ValueError:
        return None  # not a count: Lightning's own error names it


def _devices_per_trial(devices: Any) -> int:
    """`${sweeplab.devices_per_trial:${trainer.devices}}`: the devices a study's trial trains on, as many as
    the trainer asks for (1 for auto and -1: a trial's process is given one device)."""
    return device_count(devices) or 1


OmegaConf.register_new_resolver("sweeplab.devices_per_trial", _devices_per_trial, replace=True)
