"""The models an ensemble is made of: trained runs on disk (a k-fold run gives one model per fold), or the
top complete trials of a study (each trial's job dir is a run). Everything here reads files only: a member
that cannot be used is refused in one line before any model is loaded."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeplab.errors import SweeplabError, config_error
from sweeplab.search.checkpoints import removed_reasons, with_checkpoints
from sweeplab.search.records import ATTR_OUTPUT_DIR
from sweeplab.search.view import StudyView

RUN_CONFIG = "config_resolved.yaml"  # the config a run trained with, resolved (runners/train.py writes it)
RUN_METRICS = "metrics.json"


@dataclass(frozen=True)
class Member:
    """One trained model: where it comes from, its checkpoint, and the config it trained with."""

    name: str  # "<exp_name>/<time>", "<...>/fold_<i>", "trial_<n>": unique within an ensemble
    run_dir: Path
    checkpoint: Path
    config: DictConfig  # the run's resolved config: its preprocessing, model and metric
    classes: tuple[str, ...]
    val_score: float | None  # its optimized_metric on its validation split (the fold's, for a fold)

    @property
    def metric(self) -> str:
        return str(self.config.optimized_metric)

    @property
    def mode(self) -> str:
        return str(self.config.get("optimized_mode", "max"))

    @property
    def img_size(self) -> int:
        return int(self.config.data.img_size)

    @property
    def in_chans(self) -> int:
        return int(self.config.data.in_chans)


def from_runs(run_dirs: Sequence[Any], root: Path) -> list[Member]:
    """Each run dir's models: its best checkpoint, or each fold's best for a k-fold run."""
    members: list[Member] = []
    for i, given in enumerate(run_dirs):
        path = Path(str(given)).expanduser()
        run_dir = (path if path.is_absolute() else root / path).resolve()
        members += run_members(run_dir, f"runs[{i}]", str(given), f"{run_dir.parent.name}/{run_dir.name}")
    return members


def from_study(view: StudyView, top_k: int) -> list[Member]:
    """The `top_k` complete trials of a single-objective study, best first (all folds of a k-fold trial)."""
    if not view.single:
        raise config_error(
            "study_name",
            view.name,
            f"has {len(view.metrics)} objectives and top_k ranks by one; name the trials' dirs in runs=[...]",
        )
    ranked = view.ranked()
    if not ranked:
        states = ", ".join(f"{n} {s.lower()}" for s, n in view.counts.items() if n) or "no trials"
        raise SweeplabError(f"study_name={view.name!r}: no complete trial to predict with ({states})")
    removed = removed_reasons(view.study)
    gone = [t.number for t in ranked[:top_k] if str(t.number) in removed]
    if gone:
        have = with_checkpoints(view.study, ranked)
        raise config_error(
            "top_k",
            top_k,
            f"study {view.name!r}: trial(s) {', '.join(map(str, gone))} have no checkpoint "
            f"({removed[str(gone[0])]}); ask top_k={have} or fewer, or keep more checkpoints with "
            f"hydra.sweeper.checkpoints.keep={top_k} (or null) when running the study",
        )
    members: list[Member] = []
    for trial in ranked[:top_k]:
        where = trial.user_attrs.get(ATTR_OUTPUT_DIR)
        if not where:
            raise SweeplabError(
                f"study_name={view.name!r}: trial {trial.number} stored no output dir; pass its dir in runs=[...]"
            )
        members += run_members(Path(where), "study_name", view.name, f"trial_{trial.number}")
    return members


def run_members(run_dir: Path, key: str, given: str, name: str) -> list[Member]:
    """The models of one run dir, each with its checkpoint found and its classes known."""
    if not run_dir.is_dir():
        raise config_error(key, given, f"no such run dir ({run_dir})")
    files = {f: run_dir / f for f in (RUN_METRICS, RUN_CONFIG)}
    lacking = [f for f, p in files.items() if not p.is_file()]
    if lacking:
        raise config_error(
            key, given, f"{run_dir} has no {' or '.join(lacking)}: not a finished runners/train.py run"
        )
    metrics = json.loads(files[RUN_METRICS].read_text())
    config = OmegaConf.load(files[RUN_CONFIG])
    assert isinstance(config, DictConfig)
    classes = metrics.get("classes") or _data_classes(config)
    folds = metrics.get("folds")
    entries = (
        [(f"{name}/fold_{f['fold']}", f.get("best_checkpoint"), f.get("value")) for f in folds]
        if folds
        else [(name, metrics.get("best_checkpoint"), metrics.get("value"))]
    )
    members = []
    for member_name, recorded, value in entries:
        checkpoint = _checkpoint(run_dir, config, recorded)
        if checkpoint is None:
            raise config_error(
                key, given, f"{member_name}: no checkpoint at {recorded or 'the path metrics.json records'}"
            )
        score = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        members.append(Member(member_name, run_dir, checkpoint, config, tuple(map(str, classes)), score))
    return members


def _data_classes(config: DictConfig) -> tuple[str, ...]:
    """The classes of the run's data, as training numbered them, for a run whose metrics.json predates
    recording them (its data is decoded to find them: the same source and order as in training)."""
    from sweeplab.training.build import build_datamodule

    return tuple(build_datamodule(on_cpu(config)).classes)


def on_cpu(config: DictConfig) -> DictConfig:
    """A run's config with its data built on the CPU (prediction moves the batches itself)."""
    cpu = config.copy()
    cpu.trainer.accelerator, cpu.data.resident = "cpu", False
    return cpu


def _checkpoint(run_dir: Path, config: DictConfig, recorded: str | None) -> Path | None:
    """The recorded checkpoint, or the same file under `run_dir` when the run dir was moved or copied."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_file():
        return path
    trained_in = Path(str(OmegaConf.select(config, "paths.output_dir", default="") or ""))
    try:
        moved = run_dir / path.relative_to(trained_in)
    except ValueError:
        return None
    return moved if moved.is_file() else None


def check_agree(members: Sequence[Member]) -> tuple[tuple[str, ...], int, int]:
    """The classes, image size and channels every member shares; a mismatch names two members."""
    first = members[0]
    for m in members[1:]:
        for what, mine, theirs in (
            ("classes", m.classes, first.classes),
            ("data.img_size", m.img_size, first.img_size),
            ("data.in_chans", m.in_chans, first.in_chans),
        ):
            if mine != theirs:
                raise SweeplabError(
                    f"members disagree on {what}: {first.name} has {_short(theirs)}, {m.name} has "
                    f"{_short(mine)}; an ensemble needs one set of classes, one image size and one channel count"
                )
    names = [m.name for m in members]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweeplabError(f"member {repeated[0]} is given twice; name each run once")
    return first.classes, first.img_size, first.in_chans


def _short(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 6:
        return f"{len(value)} classes ({', '.join(value[:3])}, ...)"
    return str(list(value) if isinstance(value, tuple) else value)
