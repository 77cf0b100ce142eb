"""Figure a: what a sweeplab study costs on top of its training, against a hand-written Optuna + Lightning script.

Method: the same N trials (a grid over N learning rates, no pruning, E epochs on the bundled digits,
`test_resnet`, batch 64, no augmentation, CSV log, best checkpoint tested) run three ways, each a fresh
process timed from launch to exit, in a fresh directory: `runners/train.py -m` with the report off,
the same with the report on (the default: plots, report, preset), and `benchmarks/handwritten_study.py`.
The order A B C C B A is repeated `--rounds` times, so drift on the machine falls on all three alike;
the figure is the ratio of the mean wall times.

With `--folder-px P` the data is the same digits written as P-pixel PNG files, one sub-folder per
class: sweeplab reads them with `data=image_folder` (decoded once per process, kept as uint8), the
hand-written script with torchvision's `ImageFolder` + `DataLoader(num_workers=--workers)`, which
decodes and resizes every image in every epoch of every trial, as its tutorials do.

`--n-jobs K` runs sweeplab's studies K trials at a time (each trial in a process of its own); `--baseline
DIR` adds the report-off study as run from another checkout (its `src/` first on the path), in the same
rounds, so that a change is measured before and after in one run.

    python benchmarks/study_overhead.py --trials 6 --epochs 3
    python benchmarks/study_overhead.py --trials 6 --epochs 3 --folder-px 128
    python benchmarks/study_overhead.py --trials 6 --epochs 3 --n-jobs 2 --baseline /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import PLAIN, grid_study, machine, sweeplab, timed

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--folder-px",
        type=int,
        default=0,
        help="> 0: the digits as PNG files of this size, read as an image folder",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="the hand-written script's DataLoader workers (image folder)"
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="sweeplab's trials at a time")
    parser.add_argument("--baseline", type=Path, help="another checkout whose study runs alongside")
    args = parser.parse_args()
    lrs = [f"{1e-3 * (i + 1):.0e}" for i in range(args.trials)]

    tmp_dir = tempfile.TemporaryDirectory(prefix="sweeplab-bench-")
    tmp = Path(tmp_dir.name)
    folder = write_folder(tmp / "digits_folder", args.folder_px) if args.folder_px else None
    data = (
        [
            "data=image_folder",
            f"data.root={folder}",
            "data.layout=folders",
            "data.img_size=32",
            "data.in_chans=1",
            "data.mean=[0.5]",
            "data.std=[0.5]",
            "data.val_fraction=0.15",
            "data.test_fraction=0.15",
            "data.augment.hflip=0",
        ]
        if folder
        else []
    )
    hand_data = ["--folder", str(folder), "--workers", str(args.workers)] if folder else []

    def study(report: bool) -> list[str]:
        return sweeplab(
            *grid_study(lrs, report),
            f"hydra.sweeper.n_jobs={args.n_jobs}",
            f"trainer.max_epochs={args.epochs}",
            "data.batch_size=64",
            "trainer.accelerator=cpu",
            "exp_name=overhead",
            *PLAIN,
            *data,
        )

    commands = {
        "sweeplab, report off": study(False),
        "sweeplab, report on": study(True),
        "hand-written": [
            sys.executable,
            str(ROOT / "benchmarks" / "handwritten_study.py"),
            "--out",
            "hw",
            "--epochs",
            str(args.epochs),
            "--lrs",
            *lrs,
            *hand_data,
        ],
    }
    paths: dict[str, str] = {}
    if args.baseline is not None:
        base_dir = args.baseline.resolve()
        plain = study(False)
        commands["baseline, report off"] = [plain[0], str(base_dir / "runners" / "train.py"), *plain[2:]]
        paths["baseline, report off"] = str(base_dir / "src")
    names = list(commands)
    times: dict[str, list[float]] = {n: [] for n in names}
    with tmp_dir:
        for r in range(args.rounds):
            for i, name in enumerate(names + names[::-1]):
                cwd = Path(tmp) / f"r{r}-{i}"
                env = (
                    {"PYTHONPATH": os.pathsep.join([paths[name], os.environ.get("PYTHONPATH", "")])}
                    if name in paths
                    else None
                )
                times[name].append(timed(commands[name], cwd, Path(tmp) / f"r{r}-{i}.log", env=env))
                print(f"  {name}: {times[name][-1]:.1f}s", flush=True)
    mean = {n: statistics.mean(t) for n, t in times.items()}
    base = mean["hand-written"]
    print(f"machine: {machine()}")
    source = f"an image folder of {args.folder_px}px PNGs" if folder else "digits in memory"
    print(
        f"{args.trials} trials x {args.epochs} epochs on {source}, {args.n_jobs} at a time, "
        f"{2 * args.rounds} runs of each"
    )
    for name in names:
        print(f"{name:>22}: {mean[name]:6.1f}s  ratio to hand-written {mean[name] / base:.2f}")


def write_folder(root: Path, px: int) -> Path:
    """The 1,797 digits as grey PNGs of `px` pixels, one sub-folder per class (what ImageFolder reads)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = (np.asarray(image) * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((px, px), Image.Resampling.BILINEAR).save(
            root / str(label) / f"{i}.png"
        )
    return root


if __name__ == "__main__":
    main()
