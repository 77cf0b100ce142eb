"""Figure c: what median pruning saves and what it costs: epochs run and best value against no pruning.

Method: for each seed, the same TPE study (`hparams_search=optuna_fast`, space `search=fast`, `--trials`
trials of `--epochs` epochs on the bundled digits, one data split for all) runs twice, with
`hydra/sweeper/pruner=median` and with `none`; the seed seeds the sampler and the training. From each
study's storage: epochs run (reported steps, summed over trials) and the best value. Printed per seed and
as means: the epochs ratio median/none and the best-value gap. Timing plays no part, so the studies may
share the machine (`--n-jobs`).

With `--curves FILE`, the unpruned studies' learning curves (every trial's params and its val/f1 after
each epoch) are written as a CSV: the table the pruning replay (`benchmarks/pruning_replay.py`) replays.

    python benchmarks/pruning_payoff.py --seeds 0 1 2 3 4 --trials 30 --epochs 8 --curves benchmarks/data/digits_curves.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from _common import machine, sweeplab, timed


def study_command(pruner: str, seed: int, args: argparse.Namespace) -> list[str]:
    return sweeplab(
        "-m",
        "hparams_search=optuna_fast",
        f"hydra/sweeper/pruner={pruner}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_jobs={args.n_jobs}",
        f"hydra.sweeper.quick_validation.epochs={args.epochs}",
        "hydra.sweeper.report=false",
        "hydra.sweeper.max_failure_rate=0",
        f"seed={seed}",
        "data.split_seed=42",
        "trainer.accelerator=cpu",
        "callbacks.progress=null",
        f"exp_name=payoff_{pruner}_s{seed}",
    )


def load(out: Path, pruner: str, seed: int) -> optuna.Study:
    name = f"payoff_{pruner}_s{seed}_fast"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'studies' / f'{name}.db'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/runs/payoff"), help="where the studies are kept"
    )
    parser.add_argument("--curves", type=Path, help="write the unpruned learning curves here (CSV)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for seed in args.seeds:
        for pruner in ("none", "median"):
            db = args.out / "studies" / f"payoff_{pruner}_s{seed}_fast.db"
            states = (TrialState.COMPLETE, TrialState.PRUNED)
            done = len(load(args.out, pruner, seed).get_trials(states=states)) if db.exists() else 0
            if done < args.trials:  # the study is resumable: a rerun only adds the missing trials
                timed(study_command(pruner, seed, args), args.out, args.out / f"{pruner}_s{seed}.log")
        none, median = load(args.out, "none", seed), load(args.out, "median", seed)
        row = {"seed": seed}
        for key, study in (("none", none), ("median", median)):
            trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
            row[f"{key}_epochs"] = sum(len(t.intermediate_values) for t in trials)
            row[f"{key}_best"] = study.best_value
            row[f"{key}_pruned"] = sum(t.state == TrialState.PRUNED for t in trials)
        rows.append(row)
        print(
            f"seed {seed}: none best {row['none_best']:.4f} in {row['none_epochs']} epochs; median best "
            f"{row['median_best']:.4f} in {row['median_epochs']} epochs ({row['median_pruned']} pruned)",
            flush=True,
        )
    ratio = statistics.mean(r["median_epochs"] / r["none_epochs"] for r in rows)
    gap = statistics.mean(r["none_best"] - r["median_best"] for r in rows)
    as_good = sum(r["median_best"] >= r["none_best"] for r in rows)
    print(f"machine: {machine()}")
    print(f"{len(rows)} seeds x {args.trials} trials x {args.epochs} epochs")
    print(f"epochs run, median / none: {ratio:.2f} (saves {1 - ratio:.0%})")
    print(
        f"best value, none - median: mean {gap:+.4f}; median as good or better in {as_good} of {len(rows)} seeds"
    )
    if args.curves:
        write_curves(args.curves, [load(args.out, "none", s) for s in args.seeds], args.seeds, args.epochs)
        print(f"curves: {args.curves}")


def write_curves(path: Path, studies: list[optuna.Study], seeds: list[int], epochs: int) -> None:
    """One row per unpruned trial: its study seed, number, params and val/f1 after each epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    trials = [
        (seed, t)
        for seed, s in zip(seeds, studies, strict=True)
        for t in s.get_trials(states=(TrialState.COMPLETE,))
    ]
    params = sorted({p for _, t in trials for p in t.params})
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["study_seed", "trial", *params, *(f"epoch_{e}" for e in range(1, epochs + 1))])
        for seed, t in trials:
            curve = [t.intermediate_values.get(e) for e in range(1, epochs + 1)]
            if any(v is None for v in curve):
                continue
            writer.writerow(
                [seed, t.number, *(t.params.get(p) for p in params), *(f"{v:.6f}" for v in curve)]
            )


if __name__ == "__main__":
    main()
