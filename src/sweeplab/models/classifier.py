"""LightningModule for image classification: loss with label smoothing, optional mixup, torchmetrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from sweeplab.config import instantiate_node

LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor")


class ImageClassifier(L.LightningModule):
    """Logs `train/loss`, `val/{loss,acc,f1}` and `test/{loss,acc,f1}` once per epoch (f1 is macro F1)."""

    def __init__(
        self,
        net: torch.nn.Module,
        num_classes: int,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        mixup: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = int(num_classes)
        self.optimizer_cfg = _plain(optimizer)
        self.scheduler_cfg = _plain(scheduler) if scheduler else {}
        self.class_names = list(class_names or [])
        mix = {k: v for k, v in _plain(mixup or {}).items() if v is not None}
        self.mixup = None
        if float(mix.get("mixup_alpha", 0)) > 0 or float(mix.get("cutmix_alpha", 0)) > 0:
            self.mixup = Mixup(**mix, label_smoothing=float(label_smoothing), num_classes=self.num_classes)
            self.train_loss = SoftTargetCrossEntropy()
        else:
            self.train_loss = torch.nn.CrossEntropyLoss(label_smoothing=float(label_smoothing))
        self.eval_loss = torch.nn.CrossEntropyLoss()
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes=self.num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        target = y
        if self.mixup is not None and len(x) % 2 == 0:
            x, target = self.mixup(x, y)
        elif self.mixup is not None:  # timm mixes pairs; an odd batch gets plain (smoothed) soft targets
            target = mixup_target(y, self.num_classes, lam=1.0, smoothing=self.mixup.label_smoothing)
        loss = self.train_loss(self(x), target)
        # sync_dist: under DDP each rank logs its own shard's loss; the epoch's value is their mean on every rank
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True
        )
        return loss

    def _eval_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str
    ) -> None:
        x, y = batch
        logits = self(x)
        self.log(
            f"{stage}/loss",
            self.eval_loss(logits.float(), y),
            on_epoch=True,
            prog_bar=False,
            batch_size=len(y),
            sync_dist=True,
        )
        metrics.update(logits, y)
        self.log_dict(metrics, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        optimizer = instantiate_node(self.optimizer_cfg, "models.optimizer", params=self.parameters())
        cfg = dict(self.scheduler_cfg)
        if not cfg.get("_target_"):
            return optimizer
        extra = {k: cfg.pop(k) for k in LIGHTNING_SCHEDULER_KEYS if k in cfg}
        if "total_steps" in cfg and cfg["total_steps"] is None:
            cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate_node(cfg, "models.scheduler", optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **extra}}


def _plain(node: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)
