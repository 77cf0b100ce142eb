"""Figure d: trials per hour with n_jobs=k against n_jobs=1, and against batch-synchronous launching
(the stock plugin's behaviour: the next k trials start when the whole batch has ended).

Method: one study three ways, each a fresh process and directory, timed from launch to exit: n_jobs=1,
n_jobs=k (sweeplab's pool: a slot is refilled as soon as its trial ends) and n_jobs=k with
`hydra.sweeper.synchronous=true`. The random sampler with a fixed seed gives every way the same trials
(the same params for trial N); `trainer.max_epochs` is part of the space, so trial lengths differ by up
to 8x. No pruning, no report. Order: pool, synchronous, sequential, then the two parallel ways again;
the figure is trials/hour of each way and the ratios.

    python benchmarks/parallel_throughput.py --n-jobs 2 --trials 12                      # CPU
    python benchmarks/parallel_throughput.py --n-jobs 4 --trials 24 model=resnet18 \\
        data.img_size=64 data.in_chans=3 'data.mean=[0.5,0.5,0.5]' 'data.std=[0.5,0.5,0.5]'   # one GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import PLAIN, machine, random_study, sweeplab, timed


def study_command(
    n_jobs: int, trials: int, epochs: str, overrides: list[str], synchronous: bool = False
) -> list[str]:
    """The benchmark's study at `n_jobs`: the same seeded trials (params and lengths) at any n_jobs."""
    return sweeplab(
        *random_study(trials, n_jobs, f"trainer.max_epochs=choice({epochs})"),
        f"hydra.sweeper.synchronous={str(synchronous).lower()}",
        "hydra.sweeper.share_gpus=true",
        "hydra.sweeper.quick_validation.enabled=false",
        "hydra.sweeper.report=false",
        "exp_name=parallel",
        *PLAIN,
        *overrides,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", default="1,2,4,8", help="the choice of trial lengths (epochs)")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (model, data, ...)")
    args = parser.parse_args()

    def study(n_jobs: int, synchronous: bool) -> list[str]:
        return study_command(n_jobs, args.trials, args.epochs, args.overrides, synchronous)

    ways = {
        f"n_jobs={args.n_jobs} (sweeplab pool)": study(args.n_jobs, False),
        f"n_jobs={args.n_jobs} synchronous (stock)": study(args.n_jobs, True),
        "n_jobs=1": study(1, False),
    }
    order = [*ways, *list(ways)[:2]]
    times: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="sweeplab-parallel-") as tmp:
        for i, way in enumerate(order):
            times[way].append(timed(ways[way], Path(tmp) / str(i), Path(tmp) / f"{i}.log"))
            print(f"  {way}: {times[way][-1]:.1f}s", flush=True)
    per_hour = {w: 3600 * args.trials / statistics.mean(t) for w, t in times.items()}
    pool, sync, seq = per_hour.values()
    print(f"machine: {machine()}")
    print(f"{args.trials} trials of {args.epochs} epochs, overrides: {' '.join(args.overrides) or '-'}")
    for way, rate in per_hour.items():
        print(f"{way:>32}: {rate:7.0f} trials/hour")
    print(
        f"pool / n_jobs=1: {pool / seq:.2f}   pool / synchronous: {pool / sync:.2f}   synchronous / n_jobs=1: {sync / seq:.2f}"
    )


if __name__ == "__main__":
    main()
