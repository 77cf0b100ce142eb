"""Figure e: seconds from the command to the first training step, on CPU.

Method: each command is a fresh process; a callback records the wall-clock time of the first training
step (`benchmarks/_probe.py`), the benchmark subtracts the launch time. The commands side by side, the
order A B C D D C B A repeated `--rounds` times after one unmeasured warm-up of each (so every run finds the
files in the OS cache): a single `runners/train.py` run, the first trial of a `-m hparams_search=optuna_fast`
study (sweeper set-up, storage creation, search-space checks included), the first trial of the same study
with two workers (each trial in a process of its own), and the hand-written Optuna + Lightning script.
`--baseline DIR` adds both study commands as run from another checkout (its `src/` first on the path), in
the same rounds: a change to how trials start is measured before and after in one run. Printed: the median
of each and its ratio to the hand-written script.

    python benchmarks/startup.py --rounds 3 [--baseline /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import PLAIN, ROOT, machine, sweeplab, timed

BENCH = ROOT / "benchmarks"
PROBE = ["+callbacks.probe._target_=_probe.FirstStep", "trainer.accelerator=cpu"]
# one epoch of two steps, then a batch of validation and test: the run ends as soon as possible
SHORT = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout whose study commands run alongside")
    args = parser.parse_args()
    study = [
        "-m",
        "hparams_search=optuna_fast",
        "hydra.sweeper.report=false",
        "hydra.sweeper.quick_validation.epochs=1",
        *SHORT,
        *PLAIN,
        *PROBE,
    ]
    studies = {
        "train.py -m (1st trial)": [*study, "hydra.sweeper.n_trials=1"],
        "train.py -m n_jobs=2 (1st trial)": [*study, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"],
    }
    # this checkout's src/ first on the path too, as the baseline's is: both import alike
    here = os.pathsep.join([str(ROOT / "src"), str(BENCH)])
    paths = {name: here for name in ("train.py (one run)", *studies, "hand-written")}
    commands = {
        "train.py (one run)": sweeplab("trainer.max_epochs=1", *SHORT, *PLAIN, *PROBE),
        **{name: sweeplab(*overrides) for name, overrides in studies.items()},
        "hand-written": [
            sys.executable,
            str(BENCH / "handwritten_study.py"),
            "--out",
            "hw",
            "--epochs",
            "1",
            "--lrs",
            "1e-3",
        ],
    }
    if args.baseline is not None:
        base = args.baseline.resolve()
        for name, overrides in studies.items():
            commands[f"{name} baseline"] = [sys.executable, str(base / "runners" / "train.py"), *overrides]
            paths[f"{name} baseline"] = os.pathsep.join([str(base / "src"), str(BENCH)])
    names = list(commands)
    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="sweeplab-startup-") as tmp:
        runs = [(n, False) for n in names] + [
            (n, True) for _ in range(args.rounds) for n in names + names[::-1]
        ]
        for i, (name, measured) in enumerate(runs):
            cwd, probe = Path(tmp) / str(i), Path(tmp) / f"{i}.probe"
            launched = time.time()
            timed(
                commands[name],
                cwd,
                Path(tmp) / f"{i}.log",
                env={"SWEEPLAB_PROBE": str(probe), "PYTHONPATH": paths[name]},
            )
            if not probe.exists():
                sys.exit(f"{name}: no training step was recorded; output: {Path(tmp) / f'{i}.log'}")
            if measured:
                times[name].append(float(probe.read_text().split()[0]) - launched)
                print(f"  {name}: {times[name][-1]:.2f}s", flush=True)
    base = statistics.median(times["hand-written"])
    print(f"machine: {machine()}")
    for name in names:
        t = statistics.median(times[name])
        print(f"{name:>41}: {t:5.2f}s to the first training step  ratio to hand-written {t / base:.2f}")


if __name__ == "__main__":
    main()
