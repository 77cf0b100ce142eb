"""Where each tuner's wall time went in `benchmarks/peers.py`, and what each found at equal epochs.

    python benchmarks/peers_breakdown.py          # after peers.py: reads benchmarks/runs/peers, draws its PNGs
    python benchmarks/peers_breakdown.py --out benchmarks/runs/peers47c --curves-of hard3k \
        --curves benchmarks/data/hard3k_curves.csv   # the stock sweeper's unpruned curves, for the replay
    python benchmarks/peers_breakdown.py --out benchmarks/runs/peers47e --sweeplab benchmarks/runs/med2
        # sweeplab's runs of another call (a preset measured alone) beside this run's four peers;
        # tables and PNGs to benchmarks/runs/med2/beside_peers47e

Method: read back the trials each system stored in its run dir (sweeplab's SQLite study, Optuna's journal,
Ray's `result.json` per trial): when each started and ended, the epochs it trained, its value if it ran
its whole budget. Per run, with 2 workers:
- span: the first trial's start to the last one's end; outside = wall - span (start-up: interpreter,
  imports, config check, study, Ray's runtime; and the end: result files, report, shutdown);
- busy: worker-seconds inside trials (the sum of trial durations), and that per epoch trained (training
  plus each trial's own start: process, model, data, test);
- idle: worker-seconds inside the span but in no trial (2 x span - busy): gaps between trials and a worker
  waiting while the other runs the last trial;
- at equal epochs: the best complete trial among those that ended before the system had trained E epochs
  in all, E being the fewest epochs any system trained for that problem and seed (trials in the order they
  ended; a trial's epochs count when it ends);
- at equal wall: the best complete trial that ended within T seconds of launch, T being the shortest wall
  of any system for that problem and seed;
- gap: the seed's best (over every system's whole budget) minus the system's best.
Syne Tune's trial script records each of its starts (`peers_syne_trial.py`): a trial paused and resumed is
one span per start, the epochs each trained (a start after its checkpoint was removed trains from the first
epoch again), its value where it reached the whole budget.
Ray's times are whole seconds (its `timestamp`); a trial there starts at its first report minus that
report's `time_this_iter_s`. The stock hydra-optuna-sweeper asks a batch's trials together and tells them
after the whole batch: its trials span from their batch's start to its end, so a worker waiting for the
other one's trial counts as busy there.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from _common import ROOT

SYSTEMS = ("sweeplab", "ray", "optuna", "stock", "syne")


@dataclass(frozen=True)
class Trial:
    start: float  # seconds since the epoch
    end: float
    epochs: int
    value: float | None  # complete trials only (the whole budget)


def sweeplab_trials(run_dir: Path, problem: str, seed: int) -> list[Trial]:
    name = f"peers_{problem}_{seed}"
    return _optuna_trials(f"sqlite:///{run_dir / 'studies' / name}.db", name, epochs_attr="epochs_run")


def optuna_trials(run_dir: Path, problem: str, seed: int) -> list[Trial]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = f"optuna_{problem}_{seed}"
    return _optuna_trials(JournalStorage(JournalFileBackend(str(run_dir / f"{name}.journal"))), name)


def stock_trials(run_dir: Path, problem: str, seed: int, budget: int) -> list[Trial]:
    """hydra-optuna-sweeper's study: no intermediate values (it cannot prune), every trial trains `budget`."""
    name = f"stock_{problem}_{seed}"
    return _optuna_trials(f"sqlite:///{run_dir / 'studies' / name}.db", name, epochs_each=budget)


def _optuna_trials(
    storage: Any, name: str, epochs_attr: str | None = None, epochs_each: int | None = None
) -> list[Trial]:
    import optuna

    found = []
    for t in optuna.load_study(study_name=name, storage=storage).get_trials():
        if t.datetime_start is None or t.datetime_complete is None:
            continue
        epochs = t.user_attrs.get(epochs_attr) if epochs_attr else None
        found.append(
            Trial(
                t.datetime_start.timestamp(),
                t.datetime_complete.timestamp(),
                int(epochs if epochs is not None else epochs_each or len(t.intermediate_values)),
                t.value if t.state.name == "COMPLETE" else None,
            )
        )
    return found


def ray_trials(run_dir: Path, problem: str, seed: int, budget: int) -> list[Trial]:
    found = []
    for result in sorted((run_dir / "ray" / f"ray_{problem}_{seed}").glob("*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        epochs = max(int(r["training_iteration"]) for r in rows)
        found.append(
            Trial(
                float(rows[0]["timestamp"]) - float(rows[0]["time_this_iter_s"]),
                float(rows[-1]["timestamp"]),
                epochs,
                max(float(r["val_f1"]) for r in rows) if epochs >= budget else None,
            )
        )
    return found


def syne_trials(run_dir: Path, budget: int) -> list[Trial]:
    """Syne Tune's: each start of a trial (the first, each resume from a pause) is one busy span here."""
    from peers import syne_segments

    return [Trial(s["start"], s["end"], s["epochs"], s["value"]) for s in syne_segments(run_dir, budget)]


def stock_curves(out: Path, problem: str) -> list[tuple[int, int, dict[str, Any], list[float]]]:
    """The stock sweeper's trials as learning curves, every one trained in full (it cannot prune): per
    seed and trial its sampled params (`.hydra/overrides.yaml`) and val/f1 after each epoch (the trial's
    `csv/metrics.csv`), for `pruning_replay.py --curves`."""
    from peers import SPACE

    curves = []
    for run_dir in sorted(out.glob(f"stock_{problem}_*")):
        seed = int(run_dir.name.rsplit("_", 1)[1])
        for metrics in sorted(run_dir.glob("multirun/*/*/*/csv/metrics.csv")):
            job = metrics.parent.parent
            if job.parent.is_symlink():  # `latest`, a link to the sweep's dir
                continue
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            params = {k: float(v) for k, v in (o.split("=", 1) for o in overrides) if k in SPACE}
            with metrics.open(newline="") as f:
                by_epoch = {int(r["epoch"]): float(r["val/f1"]) for r in csv.DictReader(f) if r["val/f1"]}
            curves.append((seed, int(job.name), params, [by_epoch[e] for e in sorted(by_epoch)]))
    return curves


def anytime_by_epochs(trials: list[Trial]) -> list[list[float]]:
    """[epochs trained in all, best complete value so far], at each trial's end in the order they ended."""
    spent, best, curve = 0, None, []
    for t in sorted(trials, key=lambda t: t.end):
        spent += t.epochs
        if t.value is not None:
            best = t.value if best is None else max(best, t.value)
        curve.append([spent, best])
    return curve


def anytime_by_wall(done: list[list[float]]) -> list[list[float]]:
    """[seconds since launch, best complete value so far], at each complete trial's end."""
    best, curve = None, []
    for t, v in sorted(done):
        best = v if best is None else max(best, v)
        curve.append([t, best])
    return curve


def best_within(trials: list[Trial], epochs: int) -> float | None:
    """The best complete trial among those that ended before `epochs` epochs were trained in all."""
    spent, best = 0, None
    for t in sorted(trials, key=lambda t: t.end):
        spent += t.epochs
        if spent > epochs:
            break
        if t.value is not None:
            best = t.value if best is None else max(best, t.value)
    return best


def breakdown(
    results: dict[str, Any], out: Path, sweeplab_out: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per problem, one row per run: its time split and its best at the problem and seed's equal epochs.
    sweeplab's run dirs are read from `sweeplab_out` where given (its runs measured in another call)."""
    budget = int(results["args"]["epochs"])
    sweeplab_out = sweeplab_out or out
    runs: dict[tuple[str, int], dict[str, tuple[dict[str, Any], list[Trial]]]] = {}
    for run in results["runs"]:
        system, problem, seed = run["system"], run["problem"], int(run["seed"])
        run_dir = (sweeplab_out if system == "sweeplab" else out) / f"{system}_{problem}_{seed}"
        if system == "sweeplab":
            trials = sweeplab_trials(run_dir, problem, seed)
        elif system == "optuna":
            trials = optuna_trials(run_dir, problem, seed)
        elif system == "stock":
            trials = stock_trials(run_dir, problem, seed, budget)
        elif system == "syne":
            trials = syne_trials(run_dir, budget)
        else:
            trials = ray_trials(run_dir, problem, seed, budget)
        runs.setdefault((problem, seed), {})[system] = (run, trials)
    rows: dict[str, list[dict[str, Any]]] = {}
    for (problem, seed), systems in sorted(runs.items()):
        equal = min(sum(t.epochs for t in trials) for _, trials in systems.values())
        equal_wall = min(run["wall"] for run, _ in systems.values())
        top = max((run["best"] for run, _ in systems.values() if run["best"] is not None), default=None)
        for system, (run, trials) in systems.items():
            span = max(t.end for t in trials) - min(t.start for t in trials)
            busy = sum(t.end - t.start for t in trials)
            epochs = sum(t.epochs for t in trials)
            rows.setdefault(problem, []).append(
                {
                    "system": system,
                    "seed": seed,
                    "wall": run["wall"],
                    "outside": run["wall"] - span,
                    "busy": busy,
                    "busy_per_epoch": busy / epochs if epochs else None,
                    "idle": 2 * span - busy,
                    "trials": len(trials),
                    "epochs": epochs,
                    "equal_epochs": equal,
                    "best_at_equal": best_within(trials, equal),
                    "equal_wall": equal_wall,
                    "best_at_equal_wall": max((v for t, v in run["done"] if t <= equal_wall), default=None),
                    "best": run["best"],
                    "gap": None if run["best"] is None or top is None else top - run["best"],
                    "by_epochs": anytime_by_epochs(trials),
                    "by_wall": anytime_by_wall(run["done"]),
                }
            )
    return rows


def time_table(problem: str, rows: list[dict[str, Any]]) -> str:
    """Medians over seeds, one line per system."""

    def med(key: str, system: str, fmt: str) -> str:
        got = [r[key] for r in rows if r["system"] == system and r[key] is not None]
        return format(statistics.median(got), fmt) if got else "-"

    lines = [
        f"| {problem} | wall (s) | outside trials (s) | busy worker-s | s per epoch | idle worker-s | epochs "
        "| best at equal epochs (E) | best at equal wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        if not any(r["system"] == system for r in rows):
            continue
        lines.append(
            f"| {system} | {med('wall', system, '.1f')} | {med('outside', system, '.1f')} | "
            f"{med('busy', system, '.0f')} | {med('busy_per_epoch', system, '.2f')} | {med('idle', system, '.0f')} | "
            f"{med('epochs', system, '.0f')} | {med('best_at_equal', system, '.4f')} "
            f"({med('equal_epochs', system, '.0f')}) | {med('best_at_equal_wall', system, '.4f')} "
            f"({med('equal_wall', system, '.0f')}) |"
        )
    return "\n".join(lines)


COLORS = {
    "sweeplab": "tab:blue",
    "ray": "tab:orange",
    "optuna": "tab:green",
    "stock": "tab:red",
    "syne": "tab:purple",
}
LABELS = {
    "sweeplab": "sweeplab",
    "ray": "Ray Tune",
    "optuna": "Optuna by hand",
    "stock": "stock sweeper",
    "syne": "Syne Tune",
}


def figure(problem: str, rows: list[dict[str, Any]], path: Path) -> None:
    """One PNG per problem: the anytime curves (best so far against wall seconds and against epochs, one
    line per seed) and, per system, the medians over seeds (bars) with each seed (dots) of the best at equal
    epochs, at equal wall, the gap to the seed's best, wall, epochs and idle worker-seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for ax, key, xlabel in (
        (axes[0][0], "by_wall", "wall time since launch (s)"),
        (axes[0][1], "by_epochs", "epochs trained in all"),
    ):
        for system in systems:
            labelled = False
            for row in (r for r in rows if r["system"] == system):
                pts = [(x, y) for x, y in row[key] if y is not None]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    end = row["wall"] if key == "by_wall" else row["epochs"]
                    ax.step(
                        [*xs, end],
                        [*ys, ys[-1]],
                        where="post",
                        color=COLORS[system],
                        alpha=0.6,
                        label=None if labelled else LABELS[system],
                    )
                    labelled = True
        ax.set_xlabel(xlabel)
        ax.set_ylabel("best val/f1 so far (complete trials)")
    axes[0][0].set_title("anytime best against wall time")
    axes[0][1].set_title("anytime best against epochs")
    axes[0][0].legend(fontsize=8)
    panels = (
        (axes[0][2], "best_at_equal", "best at equal epochs"),
        (axes[0][3], "best_at_equal_wall", "best at equal wall time"),
        (axes[1][0], "gap", "gap to the seed's best (lower is better)"),
        (axes[1][1], "wall", "wall (s)"),
        (axes[1][2], "epochs", "epochs trained"),
        (axes[1][3], "idle", "idle worker-seconds"),
    )
    for ax, key, name in panels:
        for x, system in enumerate(systems):
            got = [r[key] for r in rows if r["system"] == system and r[key] is not None]
            if got:
                ax.bar(x, statistics.median(got), color=COLORS[system], alpha=0.5)
                ax.plot([x] * len(got), got, "o", color=COLORS[system], markersize=4)
        ax.set_xticks(range(len(systems)), [LABELS[s] for s in systems], rotation=20, fontsize=8)
        ax.set_title(name, fontsize=10)
        if key.startswith("best"):
            values = [r[key] for r in rows if r[key] is not None]
            if values:
                low, high = min(values), max(values)
                ax.set_ylim(low - 0.1 * (high - low + 0.01), high + 0.1 * (high - low + 0.01))
    fig.suptitle(f"{problem}: medians over seeds (bars), each seed (dots)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "peers")
    parser.add_argument("--figures", type=Path, default=None, help="where the PNGs go (default: --out)")
    parser.add_argument("--curves-of", default=None, help="a problem: write its stock sweeper's curves")
    parser.add_argument("--curves", type=Path, default=None, help="the curve table --curves-of writes")
    parser.add_argument(
        "--sweeplab",
        type=Path,
        default=None,
        help="another peers.py --out whose sweeplab runs replace this run's (same problems, seeds and budget)",
    )
    args = parser.parse_args()
    out = args.out.resolve()
    if args.curves_of:
        from hard_curves import write_curve_rows

        found = stock_curves(out, args.curves_of)
        path = args.curves or out / f"{args.curves_of}_curves.csv"
        rows = write_curve_rows(path, found)
        print(f"{rows} curves of {args.curves_of} (the stock sweeper's trials) -> {path}")
        for seed in sorted({c[0] for c in found}):  # how far apart its configurations end
            values = [max(c[3]) for c in found if c[0] == seed]
            best, median = max(values), statistics.median(values)
            print(
                f"seed {seed}: {len(values)} trials, best {best:.4f}, median {median:.4f}, apart {best - median:.4f}"
            )
        return
    results = json.loads((out / "results.json").read_text())
    into, sweeplab_out = out, None
    if args.sweeplab:
        sweeplab_out = args.sweeplab.resolve()
        results = beside(results, json.loads((sweeplab_out / "results.json").read_text()), sweeplab_out)
        into = sweeplab_out / f"beside_{out.name}"
        into.mkdir(exist_ok=True)
    rows = breakdown(results, out, sweeplab_out)
    (into / "breakdown.json").write_text(json.dumps(rows, indent=1))
    for problem, found in rows.items():
        print(time_table(problem, found))
        figure(problem, found, (args.figures or into) / f"peers_{problem}.png")


def beside(peers: dict[str, Any], other: dict[str, Any], where: Path) -> dict[str, Any]:
    """The peers' runs with another call's sweeplab runs in place of their own, refused unless that call ran
    the same budget and every (problem, seed) of the peers."""
    for key in ("trials", "epochs", "quick"):
        if peers["args"].get(key) != other["args"].get(key):
            raise SystemExit(
                f"--sweeplab {where}: {key}={other['args'].get(key)!r}, this run's is {peers['args'].get(key)!r}"
            )
    mine = [r for r in other["runs"] if r["system"] == "sweeplab"]
    wanted = {(r["problem"], r["seed"]) for r in peers["runs"]}
    missing = sorted(wanted - {(r["problem"], r["seed"]) for r in mine})
    if missing:
        raise SystemExit(f"--sweeplab {where}: no sweeplab run of {missing}; it holds {len(mine)} runs")
    runs = [r for r in peers["runs"] if r["system"] != "sweeplab"]
    return {**peers, "runs": runs + [r for r in mine if (r["problem"], r["seed"]) in wanted]}


if __name__ == "__main__":
    main()
