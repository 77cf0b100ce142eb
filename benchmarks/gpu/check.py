"""The GPU check: every GPU path of sweeplab in one run, each promise a PASS/FAIL line or a figure.

Steps, in order of what matters most, inside one time budget (a step that would not fit is SKIP, with why):
1. study: a pruned study (`hparams_search=optuna` on the digits, n_jobs=2, share_gpus) whose workers
   train on the GPU; the sweep process itself never initialises CUDA, and no worker is forked after a CUDA
   driver call in its parent (`_probe.CudaWatch` records both in every process); its rescue starts from
   exactly the weights its paused trial had (`_probe.WeightTrail`) and trains on to the full epochs.
2. predict: `runners/predict.py` with the study's best trial, TTA hflip, bf16 against fp32: the labels
   agree on at least 99% of the held-out images.
3. memory: trials in the sweep's own process (n_jobs=1), one of them with a far too large batch: that
   one is stored FAIL with a memory reason, the next runs, and the GPU memory torch holds at each
   trial's start (and at the sweep's end) is the baseline the first trial left.
4. parallel (figure d): trials per hour with n_jobs=4 share_gpus=true against n_jobs=1, the same seeded
   trials, GPU utilisation sampled with nvidia-smi (target >= 3x).
5. throughput (figure b): images/s of a study trial against the hand-written loop
   (`benchmarks/gpu_throughput.py`), bf16 and channels-last with resident data, per model as time allows
   (target >= 0.97).
6. ddp: a study with devices_per_trial=2 where the machine has 2 GPUs; else one line saying so.

Without a GPU (or with --dry-run) every step runs at toy size on what there is: the same commands and
the same judging, except for what only a GPU can show (CUDA in the workers, GPU memory, the figures'
targets), which are INFO lines.

    bash benchmarks/gpu/check.sh OUT                     # the GPU machine (bash benchmarks/gpu/prepare.sh first)
    python benchmarks/gpu/check.py --dry-run --out OUT   # here: toy size, under 2 minutes on 2 cores

It writes OUT/check.json, OUT/check.md and OUT/logs.tar.gz (every command's log) and exits 1 naming each
broken promise.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import optuna  # noqa: E402
import torch  # noqa: E402  (never initialises CUDA here: device_count asks NVML)
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from sweeplab.search.records import ATTR_FAIL_REASON, ATTR_RESCUE_OF, ATTR_RESUMED  # noqa: E402

from _common import ROOT, TRAIN, RunFailed, timed  # noqa: E402
from gpu_throughput import Setting, measure  # noqa: E402
from parallel_throughput import study_command  # noqa: E402

PREDICT = ROOT / "runners" / "predict.py"
PASS, FAIL, INFO, SKIP = "PASS", "FAIL", "INFO", "SKIP"
MIB = 2**20


@dataclass(frozen=True)
class Scale:
    """The sizes of every step: `GPU` for the real check, `TOY` for a dry run."""

    name: str
    budget_s: float
    study_trials: int
    study_epochs: int
    study_extra: tuple[str, ...]
    memory_model: str
    memory_data: tuple[str, ...]
    memory_batches: tuple[int, int, int, int]  # the grid's order with seed 0: [2], [3], [1] (too large), [0]
    memory_extra: tuple[str, ...]
    throughput: tuple[Setting, ...]
    parallel_trials: int
    parallel_epochs: str
    parallel_extra: tuple[str, ...]
    ddp_extra: tuple[str, ...]


LIMITS = ("+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1")
GPU = Scale(
    name="gpu",
    budget_s=450,
    study_trials=8,
    study_epochs=4,
    study_extra=(),
    memory_model="resnet50",
    # 5000 images of 224 px resident on the GPU; a batch of the whole train split (4000) needs ~200 GB
    memory_data=("data=synthetic", "data.num_images=5000", "data.img_size=224"),
    memory_batches=(64, 4000, 96, 128),
    memory_extra=("+trainer.limit_train_batches=8", *LIMITS),
    throughput=tuple(
        Setting(m, img_size=224, batch=64, warmup=15, steps=60)
        for m in ("resnet50", "convnext_tiny", "efficientnet_b0")
    ),
    parallel_trials=12,
    parallel_epochs="1,2",
    parallel_extra=("model=resnet18", "data=synthetic", "data.num_images=1024", "data.img_size=64"),
    ddp_extra=(),
)
TOY = Scale(
    name="toy",
    budget_s=170,
    study_trials=6,
    study_epochs=3,
    study_extra=("+trainer.limit_train_batches=6", *LIMITS),
    memory_model="test_resnet",
    # on a CPU the too large batch fails against a cap on the trial's address space (_probe.AddressSpaceCap)
    memory_data=("data=synthetic", "data.num_images=1600", "data.img_size=64", "data.num_classes=4"),
    memory_batches=(16, 1280, 24, 32),
    memory_extra=(
        "+trainer.limit_train_batches=2",
        *LIMITS,
        "+hydra.callbacks.cap._target_=_probe.AddressSpaceCap",
        "+hydra.callbacks.cap.headroom_mb=768",
    ),
    throughput=(Setting("test_resnet", img_size=32, batch=16, warmup=2, steps=5),),
    parallel_trials=4,
    parallel_epochs="1",
    parallel_extra=("+trainer.limit_train_batches=3", *LIMITS),
    ddp_extra=("trainer.accelerator=cpu", "+trainer.limit_train_batches=2", *LIMITS),
)


@dataclass
class Line:
    """One promise judged (PASS/FAIL), a figure or a fact (INFO), or a step left out (SKIP)."""

    status: str
    promise: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """What the steps share: sizes, where they work, the deadline, what the machine has."""

    scale: Scale
    work: Path
    deadline: float
    gpus: int
    on_gpu: bool  # the GPU is used (not a dry run, a GPU present): the GPU-only promises are judged

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def env(self, probe: Path | None = None) -> dict[str, str]:
        env = {
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p),
            "XDG_CACHE_HOME": str(self.work / "cache"),  # the decode cache: the check's own
            "PYTHONUNBUFFERED": "1",
            "HYDRA_FULL_ERROR": "1",  # a failure's log holds its traceback
        }
        if probe is not None:
            env["SWEEPLAB_PROBE"] = str(probe)
        return env

    def run(self, name: str, cmd: list[str], cwd: Path, probe: Path | None = None) -> float:
        """Run a command in `cwd`, its output in logs/<name>.log; RunFailed when it fails or outlasts the
        budget."""
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        return timed(cmd, cwd, self.work / "logs" / f"{name}.log", env=self.env(probe), timeout=self.left())


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(TRAIN), *overrides]


def records(probe: Path) -> list[dict[str, Any]]:
    if not probe.exists():
        return []
    return [json.loads(line) for line in probe.read_text().splitlines() if line.strip()]


def trials_of(cwd: Path, study: str) -> list[FrozenTrial]:
    storage = f"sqlite:///{cwd / 'studies' / study}.db"
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def said(exc: RunFailed, n: int = 3) -> str:
    """Which command failed and how, and the last `n` non-empty lines of its log."""
    log = exc.log
    lines = (
        [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()] if log.exists() else []
    )
    return f"{log.name} {exc.reason}; it said last: {' | '.join(lines[-n:])[-400:] or '(nothing)'}"


# --- 1. the pruned study, CUDA in its workers, its rescue -------------------------------------------------

STUDY = "gpucheck"


def step_study(c: Check) -> list[Line]:
    cwd, probe = c.work / "study", c.work / "study.probe.jsonl"
    c.run(
        "study",
        train_cmd(
            "-m",
            "hparams_search=optuna",
            f"exp_name={STUDY}",
            f"hydra.sweeper.study_name={STUDY}",
            "~search",
            "models.optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=3",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.pruner.n_warmup_steps=1",
            f"hydra.sweeper.n_trials={c.scale.study_trials}",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.share_gpus=true",
            "hydra.sweeper.report=false",
            f"trainer.max_epochs={c.scale.study_epochs}",
            "callbacks.progress=null",
            "+callbacks.trail._target_=_probe.WeightTrail",
            "+hydra.callbacks.watch._target_=_probe.CudaWatch",
            *c.scale.study_extra,
        ),
        cwd,
        probe,
    )
    trials, seen = trials_of(cwd, STUDY), records(probe)
    return [*judge_study(trials), *judge_processes(seen, c.on_gpu), *judge_rescue(trials, seen, c)]


def judge_study(trials: list[FrozenTrial]) -> list[Line]:
    states = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    figures = {**states, "FAIL": len(failed)}
    if failed:
        why = "; ".join(f"trial {t.number}: {t.user_attrs.get(ATTR_FAIL_REASON, '?')}" for t in failed[:3])
        return [Line(FAIL, "every trial of the pruned study ends complete or pruned", why, figures)]
    if not states["PRUNED"]:
        return [Line(FAIL, "the pruner stops trials", f"no trial of {len(trials)} was pruned", figures)]
    said = f"{states['COMPLETE']} complete, {states['PRUNED']} pruned, none failed"
    return [Line(PASS, "every trial of the pruned study ends complete or pruned", said, figures)]


def verdict(promise: str, broken: str | None, held: str, figures: dict[str, Any] | None = None) -> Line:
    """FAIL saying `broken` where the promise is broken (not None), else PASS saying `held`."""
    if broken is not None:
        return Line(FAIL, promise, broken, figures or {})
    return Line(PASS, promise, held, figures or {})


def judge_processes(seen: list[dict[str, Any]], on_gpu: bool) -> list[Line]:
    sweep = [r for r in seen if r["event"] in ("sweep_start", "sweep_end")]
    starts = [r for r in seen if r["event"] == "job_start"]
    ends = [r for r in seen if r["event"] == "job_end"]
    if not sweep or not starts:
        return [Line(FAIL, "the probes recorded the sweep and its workers", f"{len(seen)} records")]
    in_sweep = [r["job"] for r in starts if r["pid"] == sweep[0]["pid"]]
    touched = [r["event"] for r in sweep if r.get("cuda_initialized")]
    poisoned = sorted(r["job"] for r in starts if r.get("bad_fork"))
    cold = sorted(r["job"] for r in ends if not r.get("cuda_initialized"))
    gpus = sorted({r.get("gpu", "?") for r in ends if r.get("cuda_initialized")})
    forked, on_device = "no worker is forked after a CUDA call in the sweep", "workers train on the GPU"
    lines = [
        verdict(
            "each trial of an n_jobs=2 study runs in a worker process",
            f"jobs {in_sweep} ran in the sweep's process" if in_sweep else None,
            f"{len(starts)} jobs",
        ),
        verdict(
            "the sweep process never initialises CUDA",
            f"it was initialised at {touched[0]}" if touched else None,
            "not initialised at its end (checked)",
        ),
    ]
    if not on_gpu:  # without NVML, torch's device count itself calls the driver: every fork is "bad"
        return [
            *lines,
            Line(INFO, forked, f"no GPU: not judged ({len(poisoned)} workers in a bad fork, torch says)"),
            Line(INFO, on_device, "no GPU: the workers trained on the CPU"),
        ]
    return [
        *lines,
        verdict(
            forked,
            f"jobs {poisoned}: the sweep had called the CUDA driver, torch refuses CUDA there"
            if poisoned
            else None,
            f"{len(starts)} workers",
        ),
        verdict(
            on_device,
            f"jobs {cold} never initialised CUDA" if cold else None,
            f"{len(ends)} workers on {', '.join(gpus)}",
        ),
    ]


def judge_rescue(trials: list[FrozenTrial], seen: list[dict[str, Any]], c: Check) -> list[Line]:
    promise = "a rescue resumes its paused trial's weights and trains on to the full epochs"
    rescues = [t for t in trials if ATTR_RESCUE_OF in t.user_attrs]
    if not rescues:
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        return [Line(FAIL, promise, f"no rescue ran ({pruned} pruned trials)")]
    r = rescues[0]
    paused = next(t for t in trials if t.number == r.user_attrs[ATTR_RESCUE_OF])
    resumed = r.user_attrs.get(ATTR_RESUMED) or {}
    if "checkpoint" not in resumed:
        return [Line(FAIL, promise, f"trial {r.number} trained from scratch: {resumed.get('reason', '?')}")]
    step, epochs = int(resumed["step"]), c.scale.study_epochs
    trail = [x for x in seen if x.get("job") in (r.number, paused.number) and "checksum" in x]
    at_pause = [x for x in trail if x["job"] == paused.number and x["event"] == "validated"]
    start = [x for x in trail if x["job"] == r.number and x["event"] == "train_start"]
    curve = {s: round(v, 4) for s, v in sorted(r.intermediate_values.items())}
    figures = {"rescue": r.number, "paused": paused.number, "step": step, "curve": curve}
    if r.state != TrialState.COMPLETE:
        return [Line(FAIL, promise, f"rescue trial {r.number} ended {r.state.name}", figures)]
    if not at_pause or not start:
        return [Line(FAIL, promise, "the weight probe recorded neither the pause nor the resume", figures)]
    before, after = at_pause[-1], start[0]
    figures["checksums"] = [before["checksum"], after["checksum"]]
    same = math.isclose(after["checksum"], before["checksum"], rel_tol=1e-9, abs_tol=1e-9)
    if after["epoch"] != step or not same:
        detail = (
            f"trial {paused.number} paused at epoch {step} with weights {before['checksum']!r}; rescue "
            f"{r.number} started at epoch {after['epoch']} with {after['checksum']!r}"
        )
        return [Line(FAIL, promise, detail, figures)]
    new = [s for s in curve if s > step]
    held = (
        f"trial {r.number} resumed trial {paused.number} at epoch {step} on {after['on']} with the same "
        f"weights, reported {new[0] if new else '-'}..{new[-1] if new else '-'}: {curve}"
    )
    broken = f"after the pause at {step} it reported steps {new}, not to {epochs}"
    return [verdict(promise, broken if new != list(range(step + 1, epochs + 1)) else None, held, figures)]


# --- 2. predict, bf16 against fp32 ----------------------------------------------------------------------


def step_predict(c: Check) -> list[Line]:
    cwd = c.work / "study"
    if not (cwd / "studies" / f"{STUDY}.db").exists():
        return [Line(SKIP, "predict in bf16 agrees with fp32", "the study of step 1 did not run")]
    labels, scores = {}, {}
    for precision in ("32", "bf16"):
        out = cwd / f"predict_{precision}"
        c.run(
            f"predict_{precision}",
            [
                sys.executable,
                str(PREDICT),
                f"study_name={STUDY}",
                "top_k=1",
                "tta=hflip",
                f"precision={precision}",
                f"hydra.run.dir={out}",
            ],
            cwd,
        )
        with (out / "submission.csv").open() as fh:
            rows = list(csv.reader(fh))[1:]
        labels[precision] = {row[0]: row[1] for row in rows}
        metrics = json.loads((out / "metrics.json").read_text())
        scores[precision] = {k: metrics["ensemble"].get(k) for k in ("f1", "acc")}
        scores[precision]["images_per_s"] = metrics.get("images_per_s")
    same = sum(labels["32"][k] == v for k, v in labels["bf16"].items())
    share = same / max(1, len(labels["32"]))
    figures = {"images": len(labels["32"]), "agree": share, "metrics": scores}
    status = PASS if share >= 0.99 and labels["32"].keys() == labels["bf16"].keys() else FAIL
    f1 = ", ".join(f"{p}: F1 {m['f1']:.4f}" for p, m in scores.items() if m.get("f1") is not None)
    detail = f"{same} of {len(labels['32'])} images ({share:.2%}) get the same label with TTA hflip ({f1})"
    return [Line(status, "predict in bf16 agrees with fp32 on >= 99% of images", detail, figures)]


# --- 3. GPU memory between trials; a far too large batch -------------------------------------------------


def step_memory(c: Check) -> list[Line]:
    cwd, probe, study = c.work / "memory", c.work / "memory.probe.jsonl", "gpucheck_memory"
    s = c.scale
    c.run(
        "memory",
        train_cmd(
            "-m",
            "hparams_search=optuna_fast",
            f"exp_name={study}",
            f"hydra.sweeper.study_name={study}",
            "~search",
            "hydra/sweeper/sampler=grid",
            "hydra.sweeper.sampler.seed=0",
            "hydra/sweeper/pruner=none",
            f"data.batch_size=choice({','.join(map(str, s.memory_batches))})",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.max_failure_rate=0.5",
            "hydra.sweeper.quick_validation.enabled=false",
            "hydra.sweeper.report=false",
            f"model={s.memory_model}",
            *s.memory_data,
            "trainer.max_epochs=1",
            "callbacks.progress=null",
            "+callbacks.trail._target_=_probe.WeightTrail",
            "+hydra.callbacks.watch._target_=_probe.CudaWatch",
            *s.memory_extra,
        ),
        cwd,
        probe,
    )
    trials, seen = trials_of(cwd, study), records(probe)
    huge = max(s.memory_batches)
    big = [t for t in trials if t.params.get("data.batch_size") == huge]
    if not big:
        return [Line(FAIL, "a far too large batch fails with a memory reason", f"no trial ran batch {huge}")]
    oom = big[0]
    reason = str(oom.user_attrs.get(ATTR_FAIL_REASON, ""))
    after = [t for t in trials if t.number > oom.number]
    return [
        verdict(
            "a far too large batch fails with a memory reason",
            None
            if oom.state == TrialState.FAIL and "OutOfMemory" in reason
            else f"trial {oom.number} (batch {huge}) ended {oom.state.name}: {reason[:160] or 'no reason'}",
            f"trial {oom.number}: {reason[:160]}",
        ),
        verdict(
            "the trial after it runs",
            None
            if after and all(t.state == TrialState.COMPLETE for t in after)
            else ", ".join(f"trial {t.number} {t.state.name}" for t in after) or "none ran",
            f"trial {after[0].number} {after[0].state.name}" if after else "",
        ),
        *judge_memory(seen, c.on_gpu),
    ]


def judge_memory(seen: list[dict[str, Any]], on_gpu: bool) -> list[Line]:
    points = [r for r in seen if r["event"] in ("job_start", "sweep_end")]
    kept = {str(r.get("job", "end")): r["models_alive"] for r in points if r.get("models_alive")}
    freed = verdict(
        "each trial's model is freed before the next trial starts",
        f"models alive as jobs started: {kept}" if kept or len(points) < 4 else None,
        f"none alive at {sum(r['event'] == 'job_start' for r in points)} job starts nor at the sweep's end",
    )
    return [freed, judge_gpu_memory(points, on_gpu)]


def judge_gpu_memory(points: list[dict[str, Any]], on_gpu: bool) -> Line:
    promise = "GPU memory after each trial is back to the first trial's baseline"
    held = [(r.get("job", "end"), r.get("allocated"), r.get("reserved")) for r in points]
    figures = {
        "allocated_mib": {str(j): a / MIB for j, a, _ in held if a is not None},
        "reserved_mib": {str(j): r / MIB for j, _, r in held if r is not None},
    }
    if not on_gpu:
        return Line(INFO, promise, "no GPU: torch holds no GPU memory to measure", figures)
    measured = [(j, a) for j, a, _ in held[1:] if a is not None]  # the first trial starts before CUDA
    if len(measured) < 3:
        return Line(FAIL, promise, f"measured after {len(measured)} trials only", figures)
    base = measured[0][1]
    off = [(j, (a - base) / MIB) for j, a in measured if abs(a - base) > MIB]
    detail = ", ".join(
        f"{'end' if j == 'end' else f'before trial {j}'}: {a / MIB:.1f} MiB" for j, a in measured
    )
    return Line(FAIL if off else PASS, promise, detail, figures)


# --- 4. figure d: trials per hour, n_jobs=4 against n_jobs=1 on one GPU ----------------------------------


class GpuSampler:
    """GPU utilisation and memory sampled by `nvidia-smi` every 200 ms while a block runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None

    @contextmanager
    def sampling(self) -> Iterator[GpuSampler]:
        self.samples = []
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        try:
            yield self
        finally:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait()
                self.proc = None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                util, used = (float(x) for x in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((util, used))

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        utils = [u for u, _ in self.samples]
        return {
            "util_mean": statistics.mean(utils),
            "util_max": max(utils),
            "mem_max_mib": max(m for _, m in self.samples),
            "samples": len(utils),
        }


def step_parallel(c: Check) -> list[Line]:
    s, sampler = c.scale, GpuSampler()
    per_hour, gpu = {}, {}
    for n_jobs in (1, 4):
        cmd = [
            *study_command(n_jobs, s.parallel_trials, s.parallel_epochs, list(s.parallel_extra)),
            "callbacks.progress=null",
        ]
        with sampler.sampling():
            wall = c.run(f"parallel_n{n_jobs}", cmd, c.work / f"parallel_{n_jobs}")
        per_hour[n_jobs] = 3600 * s.parallel_trials / wall
        gpu[n_jobs] = sampler.summary()
    ratio = per_hour[4] / per_hour[1]
    util = "; ".join(
        f"n_jobs={n}: GPU busy {g['util_mean']:.0f}% (max {g['util_max']:.0f}%)"
        if g
        else f"n_jobs={n}: no GPU sampled"
        for n, g in gpu.items()
    )
    detail = (
        f"{per_hour[4]:.0f} against {per_hour[1]:.0f} trials/hour: {ratio:.2f}x "
        f"({s.parallel_trials} trials of {s.parallel_epochs} epochs); {util}"
    )
    figures = {"trials_per_hour": per_hour, "ratio": ratio, "gpu": gpu}
    status = (PASS if ratio >= 3 else FAIL) if c.on_gpu else INFO
    return [
        Line(
            status,
            "figure d: n_jobs=4 share_gpus=true gives >= 3x the trials/hour of n_jobs=1",
            detail,
            figures,
        )
    ]


# --- 5. figure b: a study trial's images/s against the hand-written loop --------------------------------


def step_throughput(c: Check) -> list[Line]:
    lines, per_model = [], 0.0
    for i, setting in enumerate(c.scale.throughput):
        promise = f"figure b: {setting.model} in a study trial runs at >= 0.97 of the hand-written loop"
        if i and c.left() < 1.5 * per_model:
            lines.append(Line(SKIP, promise, f"{c.left():.0f} s left, one model took {per_model:.0f} s"))
            continue
        started = time.monotonic()
        try:
            loops, trial = measure(setting, c.work / "throughput", timeout=c.left())
        except RunFailed as exc:  # the next model may still run
            lines.append(Line(FAIL, promise, said(exc)))
            continue
        finally:
            per_model = time.monotonic() - started
        loop = statistics.mean(loops)
        detail = (
            f"{setting.img_size}px batch {setting.batch}: loop {loop:.0f} img/s "
            f"({', '.join(f'{v:.0f}' for v in loops)}), trial {trial:.0f} img/s, ratio {trial / loop:.3f}"
        )
        status = (PASS if trial / loop >= 0.97 else FAIL) if c.on_gpu else INFO
        lines.append(Line(status, promise, detail, {"loop": loops, "trial": trial, "ratio": trial / loop}))
    return lines


# --- 6. DDP trials --------------------------------------------------------------------------------------


def step_ddp(c: Check) -> list[Line]:
    promise = "DDP trials (devices_per_trial=2) end complete or pruned"
    if c.on_gpu and c.gpus < 2:
        return [Line(INFO, promise, f"this machine has {c.gpus} GPU: DDP trials need 2, not run")]
    cwd, study = c.work / "ddp", "gpucheck_ddp"
    c.run(
        "ddp",
        train_cmd(
            "-m",
            "hparams_search=optuna_fast",
            f"exp_name={study}",
            f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.devices_per_trial=2",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.quick_validation.enabled=false",
            "hydra.sweeper.report=false",
            "trainer.max_epochs=2",
            "callbacks.progress=null",
            *c.scale.ddp_extra,
        ),
        cwd,
    )
    trials = trials_of(cwd, study)
    ended = [t.state.name for t in trials]
    ok = len(trials) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    where = "on 2 GPUs" if c.on_gpu else "on 2 CPU processes (gloo)"
    return [Line(PASS if ok else FAIL, promise, f"trials {ended} {where}")]


STEPS: tuple[tuple[str, Callable[[Check], list[Line]], float], ...] = (
    # name, step, the least time it needs (s) at GPU size: a step that would not fit is SKIP
    ("study", step_study, 60),
    ("predict", step_predict, 30),
    ("memory", step_memory, 45),
    ("parallel", step_parallel, 60),
    ("throughput", step_throughput, 45),
    ("ddp", step_ddp, 45),
)


# --- the run -------------------------------------------------------------------------------------------


def describe(gpus: int) -> str:
    gpu = "no GPU"
    if gpus and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        first = subprocess.run(query, capture_output=True, text=True).stdout.strip().splitlines()
        gpu = f"{gpus} x {first[0]}" if first else f"{gpus} GPU"
    return (
        f"{gpu}; {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"optuna {optuna.__version__}"
    )


def run_steps(c: Check, only: list[str] | None) -> list[dict[str, Any]]:
    done = []
    for name, step, least in STEPS:
        if only and name not in only:
            continue
        need = least if c.scale is GPU else least / 4
        started = time.monotonic()
        if c.left() < need:  # the check is incomplete: said as broken, with the budget that would do
            lines = [
                Line(
                    FAIL,
                    f"{name}: runs in the budget",
                    f"{c.left():.0f} s left of --budget, it needs {need:.0f} s",
                )
            ]
        else:
            try:
                lines = step(c)
            except RunFailed as exc:
                lines = [Line(FAIL, f"{name}: its command runs", said(exc))]
            except Exception as exc:  # the check's own mistake: said as one, the other steps go on
                lines = [Line(FAIL, f"{name}: the check itself", f"{type(exc).__name__}: {exc}")]
                traceback.print_exc()
        wall = time.monotonic() - started
        for line in lines:
            print(f"{line.status:4} [{name}] {line.promise}: {line.detail}", flush=True)
        done.append({"step": name, "wall_s": round(wall, 1), "lines": [asdict(x) for x in lines]})
    return done


def markdown(result: dict[str, Any]) -> str:
    out = [
        "# sweeplab GPU check",
        "",
        f"- device: {result['device']}",
        f"- mode: {result['mode']} (budget {result['budget_s']:.0f} s), wall {result['wall_s']:.0f} s, "
        f"started {result['started']}",
        f"- command: `{result['command']}`",
        "",
        "| step | s | status | promise | detail |",
        "|---|---|---|---|---|",
    ]
    for step in result["steps"]:
        for line in step["lines"]:
            detail = line["detail"].replace("|", "\\|")
            out.append(
                f"| {step['step']} | {step['wall_s']:.0f} | {line['status']} | {line['promise']} | {detail} |"
            )
    out += ["", f"Broken promises: {len(result['broken'])}"]
    out += [f"- {b}" for b in result["broken"]]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where check.json, check.md, logs.tar.gz go")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, on whatever the machine has")
    parser.add_argument("--budget", type=float, help="seconds for the whole check (default: the scale's)")
    parser.add_argument("--work", type=Path, help="where the steps run (default: a temporary folder)")
    parser.add_argument("--only", nargs="+", choices=[name for name, _, _ in STEPS], help="just these steps")
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.WARNING)

    gpus = torch.cuda.device_count()
    scale = TOY if args.dry_run or not gpus else GPU
    budget = args.budget or scale.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="sweeplab-gpucheck-"))
    work.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.datetime.now().isoformat(timespec="seconds"), time.monotonic()
    check = Check(scale, work, clock + budget, gpus, on_gpu=bool(gpus) and not args.dry_run)
    device = describe(gpus)
    print(f"GPU check, {scale.name} size, {budget:.0f} s budget, on {device}; work dir {work}", flush=True)
    steps = run_steps(check, args.only)
    broken = [
        f"[{s['step']}] {x['promise']}: {x['detail']}"
        for s in steps
        for x in s["lines"]
        if x["status"] == FAIL
    ]
    result = {
        "device": device,
        "mode": scale.name,
        "budget_s": budget,
        "started": started,
        "wall_s": round(time.monotonic() - clock, 1),
        "command": " ".join(["python", "benchmarks/gpu/check.py", *sys.argv[1:]]),
        "steps": steps,
        "broken": broken,
    }
    (args.out / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "check.md").write_text(markdown(result))
    with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
        for log in sorted(work.rglob("*.log")) + sorted(work.glob("*.jsonl")):
            tar.add(log, arcname=str(log.relative_to(work)))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall {result['wall_s']:.0f} s; {args.out / 'check.md'}", flush=True)
    if broken:
        sys.exit("broken promises:\n" + "\n".join(f"  {b}" for b in broken))


if __name__ == "__main__":
    main()
