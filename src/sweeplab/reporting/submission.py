"""The report's path from the winner to a submission: retrain it on k folds and predict with the k models
(a majority vote), or predict at once with the study's top trials. Offered where the app is sweeplab's
training app: `runners/predict.py` beside its script and `data.folds` in its config."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from sweeplab.reporting.document import Block, Code, Para
from sweeplab.reporting.export import command_line
from sweeplab.search.checkpoints import with_checkpoints
from sweeplab.search.naming import path_safe
from sweeplab.search.records import ATTR_EPOCHS, ATTR_OUTPUT_DIR, ATTR_QUICK
from sweeplab.search.storage import default_storage, has_password
from sweeplab.search.view import StudyView

PREDICT_SCRIPT = "predict.py"  # beside the training script (runners/)
FOLDS, MIN_AGREE = 5, 3  # the seeds' ensemble: 5 folds, at least 3 of the 5 models agree
TOP_K = 3


def submission_steps(
    view: StudyView, retrain: str | None, job: dict | None, script: str, root_dir: Path
) -> list[Block]:
    """The two commands from the best trial's preset to submission.csv, then the top-k variant; none where
    the app has no predict runner or no `data.folds`, or where the run dir cannot be told."""
    predict = Path(script).with_name(PREDICT_SCRIPT)
    if not (predict if predict.is_absolute() else root_dir / predict).is_file():
        return []
    data = (job or {}).get("data")
    if not isinstance(data, dict) or "folds" not in data:
        return []
    files = _job_files(view.best)
    blocks: list[Block] = []
    run_parent = _run_parent(files)
    if retrain and run_parent is not None:
        where = _input(files)
        # the k-fold run gets a dir of its own name, so the predict step finds it whatever ran in between
        folds_dir = f"{run_parent}/{path_safe(view.name)}_{FOLDS}folds"
        folds = f"{retrain} {shlex.join([f'data.folds={FOLDS}', f'hydra.run.dir={folds_dir}'])}"
        runs = f"runs=[{folds_dir}]"
        blocks += [
            Para(
                f"Ensemble for a submission: retrain the best trial on {FOLDS} folds ({FOLDS} models, each "
                f"validated on its own fold), then predict with the {FOLDS} models, keeping a class where at "
                f"least {MIN_AGREE} of them agree (else the mean probability decides). "
                + (
                    "It writes submission.csv in sample_submission.csv's order, with each model's and the "
                    "ensemble's probabilities:"
                    if where
                    else "On the held-out test split it writes submission.csv and metrics.json with each "
                    "model's and the ensemble's macro F1 (for a competition's test images add "
                    "input=submission input.root=<folder>):"
                )
            ),
            Code(
                folds
                + "\n"
                + command_line(str(predict), runs, "ensemble=vote", f"ensemble.min_agree={MIN_AGREE}", *where)
            ),
        ]
    top = _top_k_command(view, str(predict), root_dir)
    if top:
        epochs = sorted({t.user_attrs.get(ATTR_EPOCHS) for t in view.ranked()[:TOP_K]} - {None})
        quick = any(t.user_attrs.get(ATTR_QUICK) for t in view.ranked()[:TOP_K])
        trained = f"{'quick-validation ' if quick else ''}checkpoints" + (
            f" of {', '.join(map(str, epochs))} epochs" if epochs else ""
        )
        blocks += [
            Para(f"Or predict now with the top {TOP_K} trials of this study as they are (their {trained}):"),
            Code(top),
        ]
    return blocks


def _job_files(trial: FrozenTrial | None) -> tuple[dict[str, Any], DictConfig] | None:
    """The trial's Hydra config as written (unresolved) and its resolved job config, from its job dir."""
    job_dir = trial.user_attrs.get(ATTR_OUTPUT_DIR) if trial is not None else None
    if not job_dir:
        return None
    hydra_file, config_file = Path(job_dir) / ".hydra" / "hydra.yaml", Path(job_dir) / "config_resolved.yaml"
    if not hydra_file.is_file() or not config_file.is_file():
        return None
    hydra = OmegaConf.to_container(OmegaConf.load(hydra_file), resolve=False)
    config = OmegaConf.load(config_file)
    assert isinstance(hydra, dict) and isinstance(config, DictConfig)
    return hydra, config


def _run_parent(files: tuple[dict[str, Any], DictConfig] | None) -> str | None:
    """Where a single run of the trial's config writes (`outputs/<exp_name>`): Hydra's run dir without its
    time stamp, with the exp_name the trial resolved."""
    if files is None:
        return None
    hydra, config = files
    run_dir = str(((hydra.get("hydra") or {}).get("run") or {}).get("dir") or "")
    exp_name = OmegaConf.select(config, "exp_name", default=None)
    parent, _, last = run_dir.rpartition("/")
    if not parent or "${now:" not in last or exp_name is None:
        return None
    parent = parent.replace("${exp_name}", str(exp_name))
    return None if "${" in parent else parent


def _input(files: tuple[dict[str, Any], DictConfig] | None) -> list[str]:
    """`input=submission input.root=<root>` where the trial's data is a competition folder with its
    sample_submission.csv and test/; [] for the held-out split."""
    root = OmegaConf.select(files[1], "data.root", default=None) if files is not None else None
    if root and (Path(root) / "sample_submission.csv").is_file() and (Path(root) / "test").is_dir():
        return ["input=submission", f"input.root={root}"]
    return []


def _top_k_command(view: StudyView, predict: str, root_dir: Path) -> str | None:
    if not view.single or not view.ranked():
        return None
    top_k = min(TOP_K, with_checkpoints(view.study, view.ranked()))
    if top_k == 0:
        return None
    args = [f"study_name={view.name}", f"top_k={top_k}"]
    if view.storage_url != default_storage(view.name, root_dir):
        if has_password(view.storage_url) or "***" in view.storage_url:
            return None  # a printed command would carry the password; docs/parallel.md says how to pass it
        args.append(f"storage={view.storage_url}")
    return command_line(predict, *args)
