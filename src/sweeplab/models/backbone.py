"""timm backbones by name, with checks that turn timm's failures into one-line config errors."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

import timm
import torch

from sweeplab.errors import SweeplabError, config_error, did_you_mean


def create_backbone(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """timm.create_model with the name and the weights checked first."""
    if not timm.is_model(name):
        raise config_error(
            "models.net.name", name, "not a timm model" + did_you_mean(name, timm.list_models())
        )
    if pretrained:
        _require_cached_weights(name)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return timm.create_model(
            name,
            pretrained=bool(pretrained),
            num_classes=int(num_classes),
            in_chans=int(in_chans),
            drop_rate=float(drop_rate),
            **kwargs,
        )
    except TypeError as exc:  # an argument this architecture does not take
        raise config_error("models.net", name, f"timm rejected an argument: {exc}") from exc
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise config_error("models.net", name, f"timm could not build it: {exc}") from exc


def min_input_size(net: torch.nn.Module) -> int:
    """Smallest image side the network can take: its total stride (32 for most CNNs)."""
    info = getattr(net, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return int(last.get("reduction", 1))
    return 1


def check_input_size(net: torch.nn.Module, name: str, img_size: int) -> None:
    """Refuse image sizes the model cannot take, before any training."""
    need = min_input_size(net)
    if img_size < need:
        raise config_error(
            "data.img_size", img_size, f"too small for {name}: needs at least {need} (its total stride)"
        )
    fixed = getattr(getattr(net, "patch_embed", None), "img_size", None)
    strict = getattr(getattr(net, "patch_embed", None), "strict_img_size", False)
    if fixed is not None and strict and tuple(fixed) != (img_size, img_size):
        raise config_error(
            "data.img_size",
            img_size,
            f"{name} was built for {tuple(fixed)} images; set models.net.img_size=${{data.img_size}} in its model config",
        )


def _require_cached_weights(name: str) -> None:
    """Pretrained weights must be in the local cache or downloadable; fail fast and clearly otherwise."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise config_error("models.net.pretrained", True, f"timm has no pretrained weights for {name}")
    hub_id = cfg.hf_hub_id
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        online = not constants.HF_HUB_OFFLINE and _reachable(constants.ENDPOINT)
        cached = any(
            isinstance(try_to_load_from_cache(hub_id, f), str)
            for f in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
        )
        if cached and not online:
            constants.HF_HUB_OFFLINE = True  # read the cache without minutes of retried HEAD requests
        if cached or online:
            return
        where = constants.HF_HUB_CACHE
    elif cfg.url:
        if _reachable(cfg.url):
            return
        where = torch.hub.get_dir()
    else:
        return  # local file weights: timm reports a missing file itself
    raise SweeplabError(
        f"models.net.pretrained=true: weights for {name} are not cached in {where} and cannot be downloaded "
        "from here; fetch them once on a networked machine, or set models.net.pretrained=false"
    )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
