"""The decode cache on disk against `data.cache=false`: wall time and images decoded by one study.

Method: the bundled digits written once as a competition-layout folder of 128 px PNGs (`train.csv` +
`train/`); the same study two ways, each a fresh process, directory and empty `XDG_CACHE_HOME` (so the
cached way pays its one decode): `n_trials` trials with `n_jobs=2` (each trial a forked worker), the
random sampler with a fixed seed (the same trials both ways), short CPU epochs. Order: cache on, cache
off (`--repeats` times); the figure is each way's mean wall time and the images decoded, summed over the
"data: ... N decoded" log lines of the sweeper and every trial, and the ratios.

    python benchmarks/decode_cache.py                       # 6 trials, n_jobs=2, CPU
    python benchmarks/decode_cache.py --trials 12 --repeats 1
    python benchmarks/decode_cache.py --runs 4              # 4 single runs in a row (fresh processes)

`--runs K`: instead of a study, K single `runners/train.py` runs one after another, each its own process
(as a retrain, a seed check, k-fold fold processes and predict runs are), sharing one cache that starts
empty; the same K runs with `data.cache=false`.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from _common import PLAIN, machine, random_study, sweeplab, timed

DECODED = re.compile(r"data: \d+ images .*?: (\d+) decoded")


def make_folder(root: Path, size: int) -> None:
    """The digits as `root/train.csv` + `root/train/d<i>.png`, upscaled to `size` px."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    with (root / "train.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["ID", "target"])
        for i, image in enumerate(digits.images):
            im = Image.fromarray((image / 16 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
            im.save(root / "train" / f"d{i}.png")
            writer.writerow([f"d{i}.png", int(digits.target[i])])


def decoded(run_dir: Path, stdout_log: Path) -> int:
    """Images decoded by the sweeper and its trials: each distinct log line counted once (a record can
    be both in a job's log file and on the sweeper's stdout)."""
    lines: set[str] = set()
    for log in [stdout_log, *run_dir.rglob("*.log")]:
        lines.update(line for line in log.read_text(errors="replace").splitlines() if DECODED.search(line))
    return sum(int(DECODED.search(line).group(1)) for line in lines)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="the PNGs' side in pixels")
    parser.add_argument("--img-size", type=int, default=64, help="data.img_size the trials train at")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--runs", type=int, default=0, help="K single runs in a row instead of a study")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sweeplab-decode-cache-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "digits128"
        make_folder(folder, args.size)

        sweep = [
            *random_study(args.trials, args.n_jobs),
            "hydra.sweeper.quick_validation.enabled=false",
            "hydra.sweeper.report=false",
        ]

        def study(cache: bool) -> list[str]:
            return sweeplab(
                *([] if args.runs else sweep),
                "data=image_folder",
                f"data.root={folder}",
                f"data.img_size={args.img_size}",
                "data.in_chans=1",
                "data.mean=[0.5]",
                "data.std=[0.5]",
                "data.augment.hflip=0",
                f"data.cache={str(cache).lower()}",
                "trainer.max_epochs=1",
                "+trainer.limit_train_batches=5",
                "+trainer.limit_val_batches=3",
                "+trainer.limit_test_batches=2",
                "trainer.accelerator=cpu",
                "exp_name=decode_cache",
                *PLAIN,
                *args.overrides,
            )

        ways = {"cache on": study(True), "data.cache=false": study(False)}
        times: dict[str, list[float]] = {w: [] for w in ways}
        counts: dict[str, list[int]] = {w: [] for w in ways}
        for i, way in enumerate([w for _ in range(args.repeats) for w in ways]):
            env = {"XDG_CACHE_HOME": str(tmp / f"xdg{i}")}  # an empty cache for every study (or K runs)
            took, found = 0.0, 0
            for k in range(max(1, args.runs)):
                run_dir, log = tmp / f"{i}_{k}", tmp / f"{i}_{k}.log"
                took += timed(ways[way], run_dir, log, env=env)
                found += decoded(run_dir, log)
            times[way].append(took)
            counts[way].append(found)
            print(f"  {way}: {times[way][-1]:.1f}s, {counts[way][-1]} images decoded", flush=True)

    wall = {w: statistics.mean(t) for w, t in times.items()}
    n = {w: statistics.mean(c) for w, c in counts.items()}
    on, off = "cache on", "data.cache=false"
    print(f"machine: {machine()}")
    what = f"{args.runs} single runs in a row" if args.runs else f"{args.trials} trials, n_jobs={args.n_jobs}"
    print(
        f"{what}, 1,797 digits as {args.size} px PNGs, "
        f"trained at {args.img_size} px; mean of {args.repeats} repeat(s) each"
    )
    for way in ways:
        print(f"{way:>18}: {wall[way]:7.1f} s wall, {n[way]:7.0f} images decoded")
    print(f"wall off / on: {wall[off] / wall[on]:.2f}   decoded off / on: {n[off] / max(n[on], 1):.1f}")


if __name__ == "__main__":
    main()
