"""How late a forked worker's once-a-second beat comes on a loaded machine: the basis of the default of
`hydra.sweeper.stall_timeout` (a worker silent that long is killed as stalled and its trial re-run).

Method: a study of `--trials` trials with n_jobs=2 on the bundled digits (full epochs, checkpoints saved
each epoch), while `--burners` processes spin on the cores, so the workers share them with more busy
processes than there are cores. In every worker `benchmarks/_probe.py:BeatGaps` runs a thread that does
what the worker's watch thread does (sleep BEAT_S, wake) and records how late each wake-up comes: the sweep
sees a worker silent for at most BEAT_S plus that delay. Reported: beats measured, the largest delay and
the 99th percentile over all trials, per run; `--runs` runs one after another.

    python benchmarks/beat_delays.py --burners 2 --runs 2
    python benchmarks/beat_delays.py --trials 4 --epochs 2 model=resnet50 data=synthetic data.img_size=64 \\
        +trainer.limit_train_batches=4 +trainer.limit_val_batches=2    # 100 MB checkpoints, saved each epoch
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
from pathlib import Path

from _common import ROOT, machine, random_study, sweeplab, timed


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--burners", type=int, default=2, help="processes spinning on the cores meanwhile")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (model, data, ...)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.burners} spinning processes beside the study")
    for run in range(args.runs):
        burners = [mp.get_context("spawn").Process(target=spin, daemon=True) for _ in range(args.burners)]
        for b in burners:
            b.start()
        try:
            with tempfile.TemporaryDirectory(prefix="sweeplab-beats-") as tmp:
                probe = Path(tmp) / "beats.jsonl"
                cmd = sweeplab(
                    *random_study(args.trials, 2),
                    f"trainer.max_epochs={args.epochs}",
                    "hydra.sweeper.quick_validation.enabled=false",
                    "hydra.sweeper.report=false",
                    "callbacks.progress=null",
                    "exp_name=beats",
                    "+hydra.callbacks.beats._target_=_probe.BeatGaps",
                    *args.overrides,
                )
                env = {
                    "SWEEPLAB_PROBE": str(probe),
                    "PYTHONPATH": os.pathsep.join(
                        [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
                    ),
                }
                wall = timed(cmd, Path(tmp) / "run", Path(tmp) / "run.log", env=env)
                rows = [json.loads(line) for line in probe.read_text().splitlines()]
        finally:
            for b in burners:
                b.kill()
        beats = [r for r in rows if r["event"] == "beats"]
        worst = max(r["max_delay"] for r in beats)
        p99 = max(r["p99_delay"] for r in beats)
        n = sum(r["beats"] for r in beats)
        print(
            f"run {run + 1}: {len(beats)} trials, {n} beats in {wall:.0f} s; largest delay {worst:.3f} s, "
            f"worst trial's 99th percentile {p99:.3f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
