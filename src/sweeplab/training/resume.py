"""A rescue resumes the pruned trial it re-runs from that trial's paused checkpoint, so the epochs before
the pause are not trained twice. Where the pause cannot be resumed (other folds, finished folds missing,
no checkpoint), the rescue trains from the first epoch and says why."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from sweeplab.training.results import FoldRun

if TYPE_CHECKING:
    import lightning.pytorch as L

    from sweeplab.search.trial import ResumePoint, StudyTrial

log = logging.getLogger(__name__)


@dataclass
class Resume:
    """A rescue that resumes its pruned trial: where, and the folds that trial had already finished."""

    point: ResumePoint
    earlier_folds: list[FoldRun]


def resume_point(study_trial: StudyTrial | None, folds: int | None) -> Resume | None:
    """For a rescue: its curve so far reported, and where to resume (None: train from the first epoch,
    with the reason logged and stored on the trial)."""
    point = study_trial.resume_point() if study_trial else None
    if study_trial is None or point is None:
        return None
    earlier: list[FoldRun] = []
    if point.checkpoint is not None and (point.fold is not None) != (folds is not None):
        point = replace(
            point, checkpoint=None, reason=f"trial {point.trial} was paused with other data.folds"
        )
    if point.checkpoint is not None and point.fold:
        earlier = _finished_folds(point)
        if len(earlier) < point.fold:
            point = replace(
                point, checkpoint=None, reason=f"trial {point.trial}'s finished folds are not on this machine"
            )
    if point.checkpoint is None:
        point = replace(point, values={})
    study_trial.continue_curve(point)
    if point.checkpoint is None:
        log.warning(
            "trial %d trains from the first epoch instead of resuming trial %d: %s",
            study_trial.number,
            point.trial,
            point.reason,
        )
        return None
    log.info(
        "trial %d resumes trial %d at step %d from %s",
        study_trial.number,
        point.trial,
        point.step,
        point.checkpoint,
    )
    return Resume(point, earlier)


RANKS_RESUME = ".sweeplab_resume.pkl"  # in the run's dir: what rank 0 resumes, for the trial's other ranks


def share_resume(resume: Resume | None, output_dir: Path) -> None:
    """Rank 0's resume decision, where the trial's other DDP ranks read it (`ranks_resume`): they start
    inside rank 0's first fit, after this is written, and must resume the same epoch from the same file."""
    path = output_dir / RANKS_RESUME
    if resume is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(resume))
    tmp.replace(path)


def ranks_resume(output_dir: Path) -> Resume | None:
    """On a trial's extra DDP rank: what rank 0 resumes (None: it trains from the first epoch)."""
    path = output_dir / RANKS_RESUME
    return pickle.loads(path.read_bytes()) if path.is_file() else None  # noqa: S301 -- rank 0 wrote it


def _finished_folds(point: ResumePoint) -> list[FoldRun]:
    """The folds the paused trial finished before the one it was paused in, from its metrics.json."""
    if point.run_dir is None or not (point.run_dir / "metrics.json").is_file():
        return []
    data = json.loads((point.run_dir / "metrics.json").read_text())
    metric = str(data.get("optimized_metric"))
    runs = []
    for record in (data.get("folds") or [])[: point.fold or 0]:
        best = {"epoch": record.get("best_epoch"), metric: record["value"]}
        runs.append(
            FoldRun(
                epochs=[],
                best=best,
                value=float(record["value"]),
                test=dict(record.get("test") or {}),
                best_checkpoint=record.get("best_checkpoint"),
                pruned_at=None,
                classes=tuple(data.get("classes") or ()),
            )
        )
    return runs


def relocated(checkpoint: Path, trainer: L.Trainer, write: bool = True) -> str:
    """A copy of the paused checkpoint for this run's dirs: the checkpoint callback's saved state (its best
    model and score so far) points into this run's checkpoints/, where the paused run's best model is
    copied, so the best checkpoint and its test metrics span the whole curve, as in an unpaused run.
    `write=False` (a trial's extra DDP ranks): only the path of the copy rank 0 writes."""
    saver = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if not write:
        there = Path(saver.dirpath) if saver is not None and saver.dirpath is not None else checkpoint.parent
        return str(there / "resume_from.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if saver is not None and saver.dirpath is not None:
        here = Path(saver.dirpath)
        here.mkdir(parents=True, exist_ok=True)
        for key, value in state.get("callbacks", {}).items():
            if not key.startswith("ModelCheckpoint") or not value.get("dirpath"):
                continue
            there = Path(value["dirpath"])
            best = value.get("best_model_path")
            if best and Path(best).is_file():
                shutil.copy2(best, here / Path(best).name)
            value["dirpath"] = str(here)
            for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
                value[name] = _moved(value.get(name), there, here)
            value["best_k_models"] = {
                _moved(k, there, here): v for k, v in (value.get("best_k_models") or {}).items()
            }
        target = here / "resume_from.ckpt"
    else:
        target = checkpoint.with_name("resume_from.ckpt")
    torch.save(state, target)
    return str(target)


def _moved(path: str | None, there: Path, here: Path) -> str | None:
    """`path` under `there` as the same path under `here` (other paths as they are)."""
    if not path or not Path(path).is_relative_to(there):
        return path
    return str(here / Path(path).relative_to(there))
