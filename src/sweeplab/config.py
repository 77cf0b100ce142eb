"""hydra.utils.instantiate with failures reported against the config key that caused them."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from sweeplab.errors import SweeplabError, config_error

# Optional extras of pyproject.toml, by the config key whose class needs them.
EXTRAS = {"logger.mlflow": "mlflow", "logger.wandb": "wandb", "logger.tensorboard": "tensorboard"}


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
            hint = f"pip install 'sweeplab[{EXTRAS[key]}]'" if key in EXTRAS else "install it"
            raise SweeplabError(
                f"{key}: {target} needs a package that is not installed ({_first_line(cause)}); "
                f"{hint} or pick another option"
            ) from None
        raise config_error(key, target, f"{type(cause).__name__}: {_first_line(cause)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
