"""Figure e: seconds from the command to the first training step, on CPU.

Method: each command is a fresh process; a callback records the wall-clock time of the first training
step (`benchmarks/_probe.py`), the benchmark subtracts the launch time. Three commands side by side, the
order A B C C B A repeated `--rounds` times after one unmeasured warm-up of each (so every run finds the
files in the OS cache): a single `runners/train.py` run, the first trial of a `-m hparams_search=optuna_fast`
study (sweeper set-up, storage creation, search-space checks included), and the hand-written Optuna +
Lightning script. Printed: the median of each and its ratio to the hand-written script.

    python benchmarks/startup.py --rounds 3
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    commands = {
        "train.py (one run)": sweeplab("trainer.max_epochs=1", *SHORT, *PLAIN, *PROBE),
        "train.py -m (1st trial)": sweeplab(
            "-m",
            "hparams_search=optuna_fast",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.report=false",
            "hydra.sweeper.quick_validation.epochs=1",
            *SHORT,
            *PLAIN,
            *PROBE,
        ),
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
                env={"SWEEPLAB_PROBE": str(probe), "PYTHONPATH": str(BENCH)},
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
        print(f"{name:>24}: {t:5.2f}s to the first training step  ratio to hand-written {t / base:.2f}")


if __name__ == "__main__":
    main()
