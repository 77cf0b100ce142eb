"""Whole studies replayed on recorded learning curves, with and without guard and rescue: what each costs and keeps.

Method: `benchmarks/data/digits_curves.csv` holds real, unpruned learning curves (val/f1 after each epoch)
recorded by `benchmarks/pruning_payoff.py --curves`. A replayed study draws `--trials` of those
configurations in a seeded random order and feeds each curve, epoch by epoch, to a real Optuna trial
under the pruner being judged (`benchmarks/_replay.py`); nothing is trained, so `--studies` seeds run in
seconds and the same seed gives the same result. The pruners are sweeplab's own configs (`median.yaml`,
`hyperband.yaml`), the guard is the one `hparams_search=optuna` turns on (leader + margin 0.01), rescue
re-runs the top `--rescue` pruned trials: from scratch (the whole curve's epochs), or resumed from their
pause (only the epochs after it; a trial whose checkpoint the `pause.keep` budget, its default, removed on
the way costs its whole curve). `--pruners` names the pruner configs judged, each as shipped or changed.
As in the sweeper, the last epoch is never pruned. Per setting: how often the study's best equals the best
of the same configurations unpruned, the mean gap to it, the epochs spent relative to no pruning, and the
share of the plain pruner's savings the setting keeps.

    python benchmarks/pruning_replay.py --studies 500 --trials 30
    python benchmarks/pruning_replay.py --curves benchmarks/data/hard_digits_curves.csv --trials 30
    python benchmarks/pruning_replay.py --curves benchmarks/data/hard3k_curves.csv --trials 20 --rescue 1 \
        --pruners median median:n_warmup_steps=1 percentile hyperband
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import optuna
import yaml
from omegaconf import OmegaConf

from sweeplab.search.pruning import Guard, GuardedPruner, build_pruner

from _common import ROOT
from _replay import CurveTable, best_of, replay

PRUNERS = ROOT / "src" / "hydra_plugins" / "sweeplab_sweeper" / "conf" / "hydra" / "sweeper" / "pruner"


def pruner(spec: str) -> optuna.pruners.BasePruner:
    """`name` (a pruner config of sweeplab's) or `name:key=value,key=value` (that config, changed)."""
    name, _, changes = spec.partition(":")
    conf = OmegaConf.load(PRUNERS / f"{name}.yaml")
    for change in filter(None, changes.split(",")):
        key, _, value = change.partition("=")
        OmegaConf.update(conf, key, yaml.safe_load(value))
    return build_pruner(conf)


def settings(pruners: list[str], rescue: int, margin: float) -> dict[str, tuple]:
    """name -> (pruner factory, rescue top_k, resumed rescues, the plain pruner whose savings it keeps)"""
    guard = Guard(leader=True, margin=margin)
    rows: dict[str, tuple] = {"no pruning": (lambda: optuna.pruners.NopPruner(), 0, False, None)}
    for name in pruners:
        plain = lambda n=name: pruner(n)  # noqa: E731
        guarded = lambda n=name: GuardedPruner(pruner(n), guard)  # noqa: E731
        rows[name] = (plain, 0, False, name)
        rows[f"{name} + guard"] = (guarded, 0, False, name)
        rows[f"{name} + guard + rescue {rescue}, from scratch"] = (guarded, rescue, False, name)
        rows[f"{name} + guard + rescue {rescue}, resumed"] = (guarded, rescue, True, name)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=ROOT / "benchmarks" / "data" / "digits_curves.csv")
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--rescue", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.01, help="the guard's margin (optuna.yaml: 0.01)")
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=["median", "hyperband"],
        help="pruner configs of sweeplab's, each `name` or `name:key=value,...` (e.g. median:n_warmup_steps=1)",
    )
    args = parser.parse_args()
    table = CurveTable.from_csv(args.curves)
    started = time.perf_counter()
    orders = [random.Random(seed).sample(range(len(table)), args.trials) for seed in range(args.studies)]
    unpruned = [max(best_of(table.curves[c]) for c in order) for order in orders]
    full_epochs = args.trials * len(table.curves[0])
    print(
        f"{len(table)} recorded curves of {len(table.curves[0])} epochs; {args.studies} studies of {args.trials} trials each"
    )
    print("| setting | best = unpruned best | mean gap to it | worst gap | epochs spent | savings kept |")
    print("|---|---|---|---|---|---|")
    spent: dict[str, float] = {}
    for name, (make, rescue, resume, plain) in settings(args.pruners, args.rescue, args.margin).items():
        results = [replay(table, order, make(), rescue_top_k=rescue, resume=resume) for order in orders]
        gaps = [u - r.best for u, r in zip(unpruned, results, strict=True)]
        hits = sum(g <= 1e-12 for g in gaps) / len(gaps)
        epochs = spent[name] = statistics.mean(r.epochs for r in results) / full_epochs
        # the share of the plain pruner's savings (1 - its epochs) this setting keeps
        kept = "" if plain is None or spent[plain] >= 1 else f"{(1 - epochs) / (1 - spent[plain]):.0%}"
        print(
            f"| {name} | {hits:.1%} | {statistics.mean(gaps):.4f} | {max(gaps):.4f} | {epochs:.1%} | {kept} |",
            flush=True,
        )
    print(f"replayed in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
