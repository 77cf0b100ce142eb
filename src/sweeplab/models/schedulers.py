"""Schedulers torch does not ship as one class; the rest are plain `_target_`s in conf/scheduler/."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(
    optimizer: Optimizer,
    warmup_epochs: int,
    T_max: int,
    eta_min: float = 0.0,
    warmup_start_factor: float = 0.01,
) -> LRScheduler:
    """Linear warm-up for `warmup_epochs`, then cosine annealing over the remaining `T_max - warmup_epochs`."""
    warmup_epochs = int(warmup_epochs)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, int(T_max) - warmup_epochs), eta_min=eta_min)
    if warmup_epochs <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
