"""Batch augmentation on whatever device the batch lives on (GPU when there is one).

One random affine per sample (scale, rotation, translation, flips) through a single
`affine_grid` + `grid_sample`, so augmentation never needs DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class BatchAugment(torch.nn.Module):
    def __init__(
        self,
        hflip: float = 0.0,
        vflip: float = 0.0,
        scale: Sequence[float] = (1.0, 1.0),
        rotate: float = 0.0,
        translate: float = 0.0,
    ) -> None:
        super().__init__()
        self.hflip, self.vflip = float(hflip), float(vflip)
        self.scale = (float(scale[0]), float(scale[1]))
        self.rotate, self.translate = float(rotate), float(translate)

    @property
    def active(self) -> bool:
        return bool(self.hflip or self.vflip or self.rotate or self.translate or self.scale != (1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        n, dev = x.shape[0], x.device
        u = lambda: torch.rand(n, device=dev)  # noqa: E731
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * u()
        angle = (2 * u() - 1) * math.radians(self.rotate)
        sx = torch.where(u() < self.hflip, -1.0, 1.0)
        sy = torch.where(u() < self.vflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, (2 * u() - 1) * self.translate], dim=1),
                torch.stack([sin * sx, cos * sy, (2 * u() - 1) * self.translate], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
