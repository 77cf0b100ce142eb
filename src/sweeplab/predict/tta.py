"""Test-time augmentation: each image is predicted in several views and a member's probabilities are their
mean. A view is a flip, a zoom or a shifted crop, applied on the device to the whole batch (after scaling
to [0, 1], before normalisation, as training augments). The `tta` config group lists the views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sweeplab.config import typed
from sweeplab.errors import config_error


@dataclass(frozen=True)
class View:
    hflip: bool = False
    vflip: bool = False
    # > 1 zooms in: a centred crop of 1/scale of each side, resized back; < 1 zooms out, padding with black
    scale: float = 1.0
    # the crop's centre, as a fraction of half the image (-1 .. 1): with scale > 1, a corner or side crop
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise config_error("tta.views[].scale", self.scale, "must be a number > 0 (1: no zoom)")
        for name in ("dx", "dy"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise config_error(f"tta.views[].{name}", getattr(self, name), "must lie in [-1, 1]")

    @property
    def identity(self) -> bool:
        return self == View()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0 and self.dx == 0.0 and self.dy == 0.0:
            dims = [d for d, on in ((3, self.hflip), (2, self.vflip)) if on]
            return torch.flip(x, dims) if dims else x  # exact: no resampling
        n = x.shape[0]
        sx, sy = (-1.0 if self.hflip else 1.0), (-1.0 if self.vflip else 1.0)
        theta = torch.tensor(
            [[sx / self.scale, 0.0, self.dx], [0.0, sy / self.scale, self.dy]], device=x.device, dtype=x.dtype
        ).expand(n, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def describe(self) -> str:
        parts = [name for name in ("hflip", "vflip") if getattr(self, name)]
        if self.scale != 1.0:
            parts.append(f"zoom {self.scale:g}")
        if self.dx or self.dy:
            parts.append(f"centre ({self.dx:+g}, {self.dy:+g})")
        return " + ".join(parts) or "as is"


class TTA:
    """The views of one `tta` option, in order; the first identity view (if any) doubles as the prediction
    without TTA, so that the gain of TTA is measured on the same pass."""

    def __init__(self, views: Sequence[Mapping[str, Any]] | None = None) -> None:
        listed = list(views or [])
        if not listed:
            raise config_error("tta.views", listed, "must list at least one view ({} for the image as is)")
        self.views = [typed(View, dict(v or {}), f"tta.views[{i}]") for i, v in enumerate(listed)]

    def __len__(self) -> int:
        return len(self.views)

    def __iter__(self):  # noqa: ANN204
        return iter(self.views)

    @property
    def plain_index(self) -> int | None:
        """The position of the view that shows the image as is, or None."""
        return next((i for i, v in enumerate(self.views) if v.identity), None)

    def describe(self) -> list[str]:
        return [v.describe() for v in self.views]
