"""One member over the images: its network rebuilt from its config, its weights from its checkpoint, and
the batches through the training data path (uint8 to the device, `model_input` there, large batches,
bf16 autocast and channels-last on a GPU)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from sweeplab.config import instantiate_node
from sweeplab.data.datamodule import model_input
from sweeplab.errors import SweeplabError, one_line
from sweeplab.predict.members import Member
from sweeplab.predict.tta import TTA
from sweeplab.training.build import resolve_auto

STATE_PREFIXES = ("net.", "_orig_mod.")  # ImageClassifier keeps the backbone as `net` (compiled: `_orig_mod`)


@dataclass
class Device:
    """Where and how prediction runs: `device` auto is the first GPU when there is one."""

    device: torch.device
    autocast: torch.dtype | None  # bf16 (or fp16) on a GPU, None for fp32

    @classmethod
    def pick(cls, device: str, precision: str) -> Device:
        name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            where = torch.device(name)
        except RuntimeError as exc:
            raise SweeplabError(f"device={device!r}: {one_line(exc, with_type=False)}") from None
        if where.type == "cuda" and not torch.cuda.is_available():
            raise SweeplabError(f"device={device!r}: no CUDA device is visible; use device=cpu or auto")
        kinds = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
        if precision == "auto":
            gpu = where.type == "cuda"
            kind = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if gpu else None
        elif precision in kinds:
            kind = kinds[precision]
        else:
            raise SweeplabError(f"precision={precision!r}: allowed: auto, 32, bf16, 16")
        return cls(where, kind)

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        return f"{self.device} ({'fp32' if self.autocast is None else str(self.autocast).removeprefix('torch.')})"


def load_net(member: Member, device: Device) -> torch.nn.Module:
    """The member's network with its checkpoint's weights, in eval mode on the device. `pretrained` is
    turned off: the weights come from the checkpoint, never from a download."""
    node = OmegaConf.create(OmegaConf.to_container(member.config.models.net, resolve=True))
    node.pretrained = False
    net = instantiate_node(node, "models.net", num_classes=len(member.classes))
    try:
        checkpoint = torch.load(member.checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SweeplabError(f"{member.name}: cannot read {member.checkpoint}: {one_line(exc)}") from None
    state = {}
    for key, value in checkpoint.get("state_dict", {}).items():
        if not key.startswith(STATE_PREFIXES[0]):
            continue
        for prefix in STATE_PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise SweeplabError(
            f"{member.name}: {member.checkpoint} does not fit its models.net ({one_line(exc, with_type=False)})"
        ) from None
    net.eval().to(device.device)
    if _channels_last(member, device):
        net = net.to(memory_format=torch.channels_last)
    return net


def _channels_last(member: Member, device: Device) -> bool:
    """`models.channels_last` as training resolves it: auto is on for a GPU."""
    return bool(resolve_auto(member.config.models.get("channels_last", "auto"), True, False, device.gpu))


@dataclass
class Predicted:
    probs: torch.Tensor  # (N, C) mean over the TTA views, float32 on the CPU
    plain: torch.Tensor | None  # (N, C) the view of the image as is, where TTA has one and more views
    seconds: float


@torch.inference_mode()
def predict_member(
    member: Member, images: torch.Tensor, tta: TTA, device: Device, batch_size: int
) -> Predicted:
    """Softmax probabilities of one member for every image, averaged over the TTA views."""
    net = load_net(member, device)
    mean = torch.tensor([float(v) for v in member.config.data.mean]).view(1, -1, 1, 1).to(device.device)
    std = torch.tensor([float(v) for v in member.config.data.std]).view(1, -1, 1, 1).to(device.device)
    channels_last = _channels_last(member, device)
    views = list(tta)
    plain_at = tta.plain_index if len(views) > 1 else None
    n, c = images.shape[0], len(member.classes)
    probs = torch.zeros(n, c)
    plain = torch.zeros(n, c) if plain_at is not None else None
    autocast = (
        torch.autocast(device.device.type, dtype=device.autocast)
        if device.autocast is not None
        else contextlib.nullcontext()
    )
    if device.gpu:
        torch.cuda.synchronize(device.device)
    started = time.perf_counter()
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size].to(device.device, non_blocking=True)
        total = None
        for i, view in enumerate(views):
            with autocast:
                logits = net(model_input(x, mean, std, channels_last, view))
            p = torch.softmax(logits.float(), dim=1)
            total = p if total is None else total + p
            if i == plain_at and plain is not None:
                plain[start : start + len(x)] = p.cpu()
        assert total is not None
        probs[start : start + len(x)] = (total / len(views)).cpu()
    if device.gpu:
        torch.cuda.synchronize(device.device)
    seconds = time.perf_counter() - started
    del net
    if device.gpu:
        torch.cuda.empty_cache()
    return Predicted(probs, plain, seconds)
