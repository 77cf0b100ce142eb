"""Two settings of sweeplab's study side by side, each run with `peers.py --systems sweeplab --sweeplab-set
...` into its own --out: per seed the best, the epochs, the wall, and the best at equal epochs (the fewer
epochs of the two runs of that seed), then the medians and means. A preset change is judged on this before
it ships (BENCHMARKS.md, "TPE's multivariate").

    python benchmarks/peers_variants.py benchmarks/runs/mv_false benchmarks/runs/mv_true --problem hard3k
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from peers_breakdown import best_within, sweeplab_trials


def seeds_of(out: Path, problem: str) -> dict[int, dict]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {r["seed"]: r for r in runs if r["system"] == "sweeplab" and r["problem"] == problem}


def compare(a: Path, b: Path, problem: str) -> str:
    """A markdown table of the seeds both runs hold, with medians and means under it."""
    ra, rb = seeds_of(a, problem), seeds_of(b, problem)
    common = sorted(set(ra) & set(rb))
    if not common:
        raise SystemExit(f"{a} and {b} hold no seed of {problem} in common")
    lines = [
        f"| {problem} seed | {a.name}: best / epochs / wall | {b.name}: best / epochs / wall | equal epochs (E) "
        f"| {a.name} at E | {b.name} at E | {b.name} - {a.name} at E |",
        "|---|---|---|---|---|---|---|",
    ]
    cols: list[list[float]] = [[] for _ in range(8)]
    for seed in common:
        ta = sweeplab_trials(a / f"sweeplab_{problem}_{seed}", problem, seed)
        tb = sweeplab_trials(b / f"sweeplab_{problem}_{seed}", problem, seed)
        ea, eb = sum(t.epochs for t in ta), sum(t.epochs for t in tb)
        equal = min(ea, eb)
        at_a, at_b = best_within(ta, equal), best_within(tb, equal)
        row = [ra[seed]["best"], ea, ra[seed]["wall"], rb[seed]["best"], eb, rb[seed]["wall"], at_a, at_b]
        for col, value in zip(cols, row, strict=True):
            col.append(value)
        lines.append(
            f"| {seed} | {row[0]:.4f} / {ea} / {row[2]:.1f} | {row[3]:.4f} / {eb} / {row[5]:.1f} | {equal} "
            f"| {at_a:.4f} | {at_b:.4f} | {at_b - at_a:+.4f} |"
        )
    for name, f in (("median", statistics.median), ("mean", statistics.fmean)):
        v = [f(c) for c in cols]
        lines.append(
            f"| {name} | {v[0]:.4f} / {v[1]:.1f} / {v[2]:.1f} | {v[3]:.4f} / {v[4]:.1f} / {v[5]:.1f} | "
            f"| {v[6]:.4f} | {v[7]:.4f} | {v[7] - v[6]:+.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first run's --out")
    parser.add_argument("b", type=Path, help="the second run's --out")
    parser.add_argument("--problem", default="hard3k")
    args = parser.parse_args()
    print(compare(args.a.resolve(), args.b.resolve(), args.problem))


if __name__ == "__main__":
    main()
