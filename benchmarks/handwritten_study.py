"""The baseline a practitioner writes without sweeplab: one Optuna study, one Lightning fit per trial.

Same work as a sweeplab trial of `benchmarks/study_overhead.py`: digits at 32 px (1 channel), the same
stratified 70/15/15 split, batch 64, timm `test_resnet`, AdamW (weight decay 0.05) with per-epoch cosine
annealing, torchmetrics accuracy and macro F1, a checkpoint of the best val/f1, a CSV log, the test split on
the best checkpoint, grid over the learning rate, no pruning, SQLite storage. The data is built inside the
objective, as Optuna's and Lightning's examples do.

    python benchmarks/handwritten_study.py --out /tmp/hw --epochs 3 --lrs 1e-3 2e-3 3e-3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as L
import optuna
import timm
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchvision.datasets import ImageFolder

from _probe import callbacks as probe_callbacks


class Digits(L.LightningDataModule):
    def __init__(self, batch_size: int = 64, seed: int = 42, workers: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed, self.workers = batch_size, seed, workers

    def setup(self, stage: str | None = None) -> None:
        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
        x = (x - 0.5) / 0.5
        y = torch.tensor(digits.target)
        idx = range(len(y))
        rest, test = train_test_split(idx, test_size=0.15, stratify=y, random_state=self.seed)
        train, val = train_test_split(rest, test_size=0.15 / 0.85, stratify=y[rest], random_state=self.seed)
        self.sets = {
            k: TensorDataset(x[v], y[v]) for k, v in (("train", train), ("val", val), ("test", test))
        }

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        return DataLoader(
            self.sets[split],
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class Folder(Digits):
    """torchvision's ImageFolder (one sub-folder per class), decoded and resized by the DataLoader each epoch."""

    def __init__(self, root: Path, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.root = root

    def setup(self, stage: str | None = None) -> None:
        tf = T.Compose([T.Grayscale(1), T.Resize((32, 32)), T.ToTensor(), T.Normalize([0.5], [0.5])])
        ds = ImageFolder(str(self.root), transform=tf)
        y = ds.targets
        rest, test = train_test_split(range(len(y)), test_size=0.15, stratify=y, random_state=self.seed)
        train, val = train_test_split(
            rest, test_size=0.15 / 0.85, stratify=[y[i] for i in rest], random_state=self.seed
        )
        self.sets = {k: Subset(ds, v) for k, v in (("train", train), ("val", val), ("test", test))}


class Classifier(L.LightningModule):
    def __init__(self, lr: float, epochs: int) -> None:
        super().__init__()
        self.lr, self.epochs = lr, epochs
        self.net = timm.create_model("test_resnet", num_classes=10, in_chans=1)
        self.acc = torch.nn.ModuleDict({s: MulticlassAccuracy(10, average="micro") for s in ("val", "test")})
        self.f1 = torch.nn.ModuleDict({s: MulticlassF1Score(10, average="macro") for s in ("val", "test")})

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def _eval(self, batch, stage: str) -> None:
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True)
        self.acc[stage](logits, y)
        self.f1[stage](logits, y)
        self.log(f"{stage}/acc", self.acc[stage], on_epoch=True)
        self.log(f"{stage}/f1", self.f1[stage], on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs, eta_min=1e-6)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument(
        "--folder", type=Path, help="an image folder (one sub-folder per class) instead of digits"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", args.lrs)
        L.seed_everything(42, verbose=False)
        out = args.out / str(trial.number)
        checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val/f1", mode="max")
        trainer = L.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            logger=CSVLogger(out, name="csv"),
            callbacks=[checkpoint, *probe_callbacks()],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=out,
        )
        dm = Folder(args.folder, workers=args.workers) if args.folder else Digits(workers=args.workers)
        model = Classifier(lr, args.epochs)
        trainer.fit(model, datamodule=dm)
        trainer.test(model, datamodule=dm, ckpt_path=checkpoint.best_model_path, verbose=False)
        return float(checkpoint.best_model_score)

    started = time.perf_counter()
    study = optuna.create_study(
        study_name="handwritten",
        storage=f"sqlite:///{args.out / 'study.db'}",
        direction="maximize",
        sampler=optuna.samplers.GridSampler({"lr": args.lrs}),
    )
    study.optimize(objective, n_trials=len(args.lrs))
    print(
        f"best {study.best_value:.4f} after {len(study.trials)} trials in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()
