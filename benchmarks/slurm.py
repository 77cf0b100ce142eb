"""SLURM figures: time from `sbatch` to the first trial, per-trial overhead against the default launcher,
and the epochs that resuming preempted trials saves.

Needs a SLURM cluster (`bash .ci/slurm` starts one on this machine: slurmctld and two slurmd nodes on
127.0.0.1; export the SLURM_CONF it prints) and a PostgreSQL storage (`--storage`, e.g. the one
`.ci/postgres` starts). Every study: the bundled digits, `test_resnet`, `hparams_search=optuna_fast`
without pruning, N trials of E epochs.

- a) `sbatch --array=0-1 examples/slurm/study.sbatch`: seconds from `sbatch` to each task's first
  finished trial's start (the job's first log line), and to the end of the array.
- b) the same N trials one at a time through the default launcher (in the sweep's process) and through
  `hydra/launcher=submitit_slurm`, in the order A B B A per round: per-trial overhead of SLURM =
  (wall of B - wall of A) / N.
- c) preemption: a study whose sweep gets SIGTERM once each trial has saved epoch 2 (its next run picks
  the trial up), until the study ends; epochs trained in all, with `resume_interrupted` on and off.

    python benchmarks/slurm.py --storage postgresql://sweeplab:sweeplab-ci-pw@127.0.0.1:5432/sweeplab
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import optuna

from _common import PLAIN, ROOT, machine, timed

QUICK = ["trainer.accelerator=cpu", "+trainer.limit_train_batches=10", "+trainer.limit_val_batches=3"]


def study(name: str, trials: int, epochs: int) -> list[str]:
    return [
        "hparams_search=optuna_fast",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.quick_validation.enabled=false",
        "hydra.sweeper.report=false",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.study_name={name}",
        f"trainer.max_epochs={epochs}",
        "+trainer.limit_test_batches=1",
        *QUICK,
        *PLAIN,
    ]


def checkout_in(cwd: Path) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    for name in ("runners", "conf"):
        (cwd / name).symlink_to(ROOT / name)


def env(storage: str) -> dict[str, str]:
    return {"SWEEPLAB_DB": storage, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def first_start(log: Path) -> datetime:
    """The time of the job's first log line."""
    for line in log.read_text().splitlines():
        if line.startswith("[20"):
            return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    raise SystemExit(f"{log}: no log line")


def figure_a(work: Path, storage: str, trials: int, epochs: int) -> None:
    cwd = work / "a"
    checkout_in(cwd)
    name = f"bench_a_{uuid.uuid4().hex[:6]}"
    sbatch = ["sbatch", "--wait", "--array=0-1", str(ROOT / "examples/slurm/study.sbatch")]
    submitted = datetime.now()
    wall = timed([*sbatch, *study(name, trials, epochs)], cwd, work / "a.log", env(storage), timeout=1800)
    starts = [(first_start(p) - submitted).total_seconds() for p in sorted(cwd.glob("slurm-*.out"))]
    print(
        f"a) sbatch --array=0-1, {trials} trials of {epochs} epochs: first log line of each task "
        f"{', '.join(f'{s:.1f} s' for s in starts)} after sbatch; all done in {wall:.1f} s"
    )


def figure_b(work: Path, storage: str, trials: int, epochs: int, rounds: int) -> None:
    walls: dict[str, list[float]] = {"default": [], "submitit_slurm": []}
    for r in range(rounds):
        for how in ("default", "submitit_slurm", "submitit_slurm", "default"):
            cwd = work / f"b{r}_{how}_{len(walls[how])}"
            checkout_in(cwd)
            launcher = ["hydra/launcher=submitit_slurm"] if how != "default" else []
            cmd = [
                sys.executable,
                "runners/train.py",
                "-m",
                *launcher,
                "hydra.sweeper.storage=${oc.env:SWEEPLAB_DB}",
                *study(f"bench_b_{uuid.uuid4().hex[:6]}", trials, epochs),
            ]
            walls[how].append(timed(cmd, cwd, cwd / "sweep.log", env(storage), timeout=1800))
    a, b = statistics.mean(walls["default"]), statistics.mean(walls["submitit_slurm"])
    print(
        f"b) {trials} trials of {epochs} epochs, one at a time, means of {len(walls['default'])}: default launcher "
        f"{a:.1f} s, submitit_slurm {b:.1f} s: {(b - a) / trials:.1f} s more per trial on SLURM"
    )


def figure_c(work: Path, trials: int, epochs: int, resume: bool) -> tuple[int, int]:
    """Epochs trained in all by a study preempted once per trial, and the preemptions."""
    cwd = work / f"c_{resume}"
    checkout_in(cwd)
    name = f"bench_c_{uuid.uuid4().hex[:6]}"
    db = f"sqlite:///{cwd / 'studies' / name}.db"
    cmd = [
        sys.executable,
        "runners/train.py",
        "-m",
        f"hydra.sweeper.resume_interrupted={str(resume).lower()}",
        *study(name, trials, epochs),
    ]
    preempted: set[int] = set()
    while True:
        with (cwd / "sweep.log").open("a") as out:
            sweep = subprocess.Popen(
                cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        while sweep.poll() is None:
            try:
                running = [
                    t
                    for t in optuna.load_study(study_name=name, storage=db).trials
                    if t.state.name == "RUNNING"
                    and t.number not in preempted
                    and "retry_of" not in t.user_attrs
                    and len(t.intermediate_values) >= 2
                ]
            except Exception:  # no study yet
                running = []
            if running:
                preempted.add(running[0].number)
                os.killpg(sweep.pid, signal.SIGTERM)
                sweep.wait()
                break
            time.sleep(0.2)
        if sweep.returncode == 0:
            break
    done = optuna.load_study(study_name=name, storage=db).trials
    trained = sum(
        int(t.user_attrs.get("epochs_run") or 0) if t.state.name == "COMPLETE" else len(t.intermediate_values)
        for t in done
    )
    return trained, len(preempted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="a PostgreSQL URL every SLURM task reaches")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("SLURM_CONF is not set: `bash .ci/slurm` starts a cluster and prints it")
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        figure_a(work, args.storage, args.trials, args.epochs)
        figure_b(work, args.storage, args.trials, args.epochs, args.rounds)
        on, preemptions = figure_c(work, args.trials, args.epochs, resume=True)
        off, _ = figure_c(work, args.trials, args.epochs, resume=False)
        print(
            f"c) {args.trials} trials of {args.epochs} epochs, {preemptions} preemptions (each after a trial's "
            f"2nd epoch): {on} epochs trained with resume_interrupted=true, {off} with false "
            f"({off - on} saved; {args.trials * args.epochs} without preemption)"
        )


if __name__ == "__main__":
    main()
