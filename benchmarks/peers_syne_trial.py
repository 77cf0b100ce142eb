"""One Syne Tune trial of `benchmarks/peers.py`: sweeplab's training run, paused and resumed by Syne Tune.

Syne Tune's local backend starts this script for a configuration (`--lr --weight_decay --drop_rate`, the
constants `--epochs --setup`) and, with `st_checkpoint_dir`, a folder of the trial's own. Its ASHA of the
promotion type pauses a trial at a rung by ending this process and resumes it later by starting it again
on the same folder, so every epoch saves the fit's whole state there (`last.ckpt`, replaced whole) before
it is reported, and a start that finds one continues the fit from it. Syne Tune may remove a paused
trial's checkpoint early (`early_checkpoint_removal_kwargs`); the trial then trains from the first epoch.

Each start appends one line per epoch to `<setup's out>/segments.jsonl` (start time, epoch, value, the
epoch it resumed from), which is what `peers.py` and `peers_breakdown.py` read back.
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the imports: a resumed trial's start-up is Syne Tune's cost, counted

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

NAMES = {  # Syne Tune's argument: the train config's key (peers.SPACE)
    "lr": "models.optimizer.lr",
    "weight_decay": "models.optimizer.weight_decay",
    "drop_rate": "models.net.drop_rate",
}
CHECKPOINT = "last.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in NAMES:
        parser.add_argument(f"--{name}", type=float, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--setup", type=Path, required=True, help="a JSON file: overrides, out, trial_dirs")
    parser.add_argument("--st_checkpoint_dir", type=Path, required=True)
    args, _ = parser.parse_known_args()
    setup = json.loads(args.setup.read_text())

    import lightning.pytorch as L
    import peers
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from syne_tune import Reporter

    from sweeplab.training.build import build_datamodule, build_module, build_trainer
    from sweeplab.training.callbacks import RandomState

    torch.set_num_threads(1)
    folder = args.st_checkpoint_dir
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / CHECKPOINT
    resumed = int(torch.load(checkpoint, weights_only=False)["epoch"]) + 1 if checkpoint.exists() else 0
    trial_id = folder.parent.name  # Syne Tune's folder of the trial: <tuner>/<trial id>/checkpoints
    report = Reporter()
    segments = Path(setup["out"]) / "segments.jsonl"

    def reported(value: float, epoch: int, trainer: L.Trainer) -> bool:
        partial = folder / (CHECKPOINT + ".part")
        trainer.save_checkpoint(partial)
        partial.replace(checkpoint)  # whole before it is reported: Syne Tune may end this process next
        with segments.open("a") as out:
            line = {"trial": trial_id, "start": STARTED, "at": time.time(), "epoch": epoch, "value": value}
            out.write(json.dumps({**line, "resumed": resumed}) + "\n")
        report(epoch=epoch, val_f1=value)
        return False  # Syne Tune ends the process itself

    peers.REPORT = reported
    params = [f"{NAMES[name]}={getattr(args, name)!r}" for name in NAMES]
    cfg = peers.compose_train([*setup["overrides"], *params], folder.parent / "run")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    trainer = build_trainer(cfg, extra_callbacks=[RandomState()], resuming=checkpoint.exists())
    trainer.fit(module, datamodule=dm, ckpt_path=str(checkpoint) if checkpoint.exists() else None)
    if trainer.current_epoch >= args.epochs:  # the whole budget: tested, as sweeplab's run tests its trials
        best = next((c.best_model_path for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), "")
        trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False)


if __name__ == "__main__":
    main()
