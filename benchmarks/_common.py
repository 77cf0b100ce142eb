"""Helpers the benchmark commands share: run a command and time it, run sweeplab's train.py."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "runners" / "train.py"
# no augmentation, no LR monitor, no progress bar: the same work as the hand-written baselines
PLAIN = [
    "data.augment.scale=[1.0,1.0]",
    "data.augment.rotate=0",
    "data.augment.translate=0",
    "callbacks.lr_monitor=null",
    "callbacks.progress=null",
]


class RunFailed(SystemExit):
    """A benchmarked command failed or ran out of time: ends a benchmark with its message (exit status 1),
    or is caught by one that goes on (the GPU check)."""

    def __init__(self, cmd: list[str], reason: str, log: Path) -> None:
        super().__init__(f"{' '.join(cmd)} {reason}; its output: {log}")
        self.reason, self.log = reason, log


def timed(
    cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None, timeout: float | None = None
) -> float:
    """Wall seconds from launching `cmd` to its exit; its output goes to `log`. A failure, or a run past
    `timeout` seconds (then the command and every process it started are killed), raises RunFailed."""
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: a timeout ends its workers too
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RunFailed(cmd, f"ran past {timeout:.0f} s and was killed", log) from None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): the command's group goes with us
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    elapsed = time.perf_counter() - started
    if rc != 0:
        raise RunFailed(cmd, f"failed (exit {rc})", log)
    return elapsed


def sweeplab(*overrides: str) -> list[str]:
    return [sys.executable, str(TRAIN), *overrides]


def random_study(n_trials: int, n_jobs: int, *searched: str) -> list[str]:
    """`train.py -m` arguments of an unpruned study, the seeded random sampler over the learning rate and
    `searched` (more `key=choice(...)` overrides, sampled in this order), at full epochs."""
    return [
        "-m",
        "hparams_search=optuna_fast",
        "~search",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.sampler.seed=7",
        "models.optimizer.lr=tag(log, interval(1e-4, 1e-2))",
        *searched,
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
    ]


def grid_study(lrs: list[str], report: bool = False) -> list[str]:
    """`train.py -m` arguments of a study that runs exactly these learning rates, unpruned, at full epochs."""
    return [
        "-m",
        "hparams_search=optuna_fast",
        "~search",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        f"models.optimizer.lr=choice({','.join(lrs)})",
        f"hydra.sweeper.n_trials={len(lrs)}",
        "hydra.sweeper.quick_validation.enabled=false",
        f"hydra.sweeper.report={str(report).lower()}",
    ]


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
