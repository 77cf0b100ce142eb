"""A harder set of learning curves for the pruning replay: configurations that end far apart, some slow
to start that finish first.

Method: the bundled digits as a competition-layout folder (`train.csv` + `train/`) of 64 px PNGs, each
rotated up to ±35°, shifted, scaled and given Gaussian noise, with `--label-noise` of the training labels
replaced by a random class (seeded, written once under `--out`). On it, one unpruned random-search study
(`hydra/sweeper/pruner=none`) of `--trials` configurations of `--epochs` epochs: learning rate (log,
1e-4..3e-2), weight decay, batch size, dropout, and a linear warm-up of 0, 2 or 4 epochs before a cosine
schedule over the whole run. Every trial's val/f1 after each epoch is written as the curve table that
`benchmarks/pruning_replay.py --curves` replays.

    python benchmarks/hard_curves.py --trials 80 --epochs 12 --curves benchmarks/data/hard_digits_curves.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from PIL import Image
from sklearn.datasets import load_digits

from _common import ROOT, machine, sweeplab, timed

STUDY = "hard_digits"


def make_folder(
    root: Path, size: int, label_noise: float, seed: int, renders: int = 1, pixel_noise: float = 40.0
) -> None:
    """The noisy digits as `root/train.csv` + `root/train/<id>.png` (skipped when already there); each digit
    drawn `renders` times, each drawing with its own rotation, shift, scale, noise (Gaussian, standard
    deviation `pixel_noise` grey levels) and label flip."""
    if (root / "train.csv").is_file():
        return
    rng = np.random.default_rng(seed)
    digits = load_digits()
    (root / "train").mkdir(parents=True, exist_ok=True)
    with (root / "train.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["ID", "target"])
        for render in range(renders):
            labels = digits.target.copy()
            flip = rng.random(len(labels)) < label_noise
            labels[flip] = rng.integers(0, 10, flip.sum())
            for i, image in enumerate(digits.images):
                name = f"d{i}.png" if render == 0 else f"d{i}_{render}.png"
                _draw(image, size, rng, pixel_noise).save(root / "train" / name)
                writer.writerow([name, int(labels[i])])


def _draw(image: np.ndarray, size: int, rng: np.random.Generator, pixel_noise: float) -> Image.Image:
    canvas = Image.fromarray((image / 16 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    scale = rng.uniform(0.7, 1.1)
    side = max(8, int(size * scale))
    canvas = canvas.resize((side, side), Image.BILINEAR).rotate(
        rng.uniform(-35, 35), resample=Image.BILINEAR, expand=False
    )
    board = Image.new("L", (size, size))
    offset = rng.integers(0, max(1, size - side + 1), 2)
    board.paste(canvas, tuple(int(o) for o in offset))
    pixels = np.asarray(board, dtype=np.float32) + rng.normal(0, pixel_noise, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def folder_data(folder: Path, size: int = 64) -> list[str]:
    """The train config overrides that read the noisy folder: one grey channel at `size` px, no flips."""
    return [
        "data=image_folder",
        f"data.root={folder}",
        f"data.img_size={size}",
        "data.in_chans=1",
        "data.mean=[0.5]",
        "data.std=[0.5]",
        "data.augment.hflip=0",
    ]


def study_command(args: argparse.Namespace, folder: Path) -> list[str]:
    return sweeplab(
        "-m",
        "hparams_search=optuna_fast",
        "~search",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.quick_validation.enabled=false",
        "hydra.sweeper.report=false",
        "hydra.sweeper.max_failure_rate=0",
        "hydra.sweeper.timeout=null",  # optuna_fast stops a sweep after 30 min
        f"hydra.sweeper.study_name={STUDY}",
        "models.optimizer.lr=tag(log, interval(1e-4, 3e-2))",
        "models.optimizer.weight_decay=interval(0.0, 0.1)",
        "data.batch_size=choice(32, 64)",
        "models.net.drop_rate=interval(0.0, 0.3)",
        "models.scheduler.warmup_epochs=choice(0, 2, 4)",
        "scheduler=cosine_warmup",
        *folder_data(folder),
        "data.split_seed=42",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        "callbacks.progress=null",
        "exp_name=hard_digits",
    )


def write_curves(path: Path, study: optuna.Study, epochs: int) -> int:
    """One row per complete trial: its number, params and val/f1 after each epoch; returns the rows."""
    trials = [
        t for t in study.get_trials(states=(TrialState.COMPLETE,)) if len(t.intermediate_values) == epochs
    ]
    curves = [
        (0, t.number, t.params, [t.intermediate_values[e] for e in range(1, epochs + 1)]) for t in trials
    ]
    return write_curve_rows(path, curves)


def write_curve_rows(path: Path, curves: list[tuple[int, int, dict[str, Any], list[float]]]) -> int:
    """The curve table `pruning_replay.py --curves` reads: per run (study seed, trial, params, val/f1 after
    each epoch) one row; runs with a NaN epoch are left out. Returns the rows written."""
    params = sorted({p for _, _, ps, _ in curves for p in ps})
    epochs = max((len(c[3]) for c in curves), default=0)  # a run that stopped early is left out
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["study_seed", "trial", *params, *(f"epoch_{e}" for e in range(1, epochs + 1))])
        for seed, number, ps, curve in curves:
            if len(curve) != epochs or any(math.isnan(v) for v in curve):
                continue
            writer.writerow([seed, number, *(ps.get(p) for p in params), *(f"{v:.6f}" for v in curve)])
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--label-noise", type=float, default=0.15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "hard_curves")
    parser.add_argument(
        "--curves", type=Path, default=ROOT / "benchmarks" / "data" / "hard_digits_curves.csv"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    folder = out / "noisy_digits"
    make_folder(folder, args.size, args.label_noise, seed=0)
    seconds = timed(study_command(args, folder), out, out / "study.log")  # resumable: reruns add the rest
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{out / 'studies' / STUDY}.db")
    rows = write_curves(args.curves, study, args.epochs)
    finals = sorted(
        max(t.intermediate_values.values()) for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    print(f"machine: {machine()}")
    print(f"{rows} curves of {args.epochs} epochs in {seconds / 60:.1f} min -> {args.curves}")
    print(
        f"best val/f1 per configuration: min {finals[0]:.3f}, median {finals[len(finals) // 2]:.3f}, max {finals[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
