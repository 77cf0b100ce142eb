"""Where a study lives by name: its storage folder, its generated configs, its sweep dir.

Importing this module registers the `${sweeplab.study_dir:<base>}` resolver that sweeplab's own configs
use for `hydra.sweep.dir` (its runners, its sweeper and its dir callbacks import it).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweeplab.config import GENERATED_CONF, STUDIES_DIR
from sweeplab.search.schema import TARGET

# How a Hydra app finds the generated configs: sweeplab's own root configs list it in hydra.searchpath;
# a command printed for another app carries it as an override. Relative: commands run from that directory.
GENERATED_SEARCHPATH = f"file://{STUDIES_DIR}/{GENERATED_CONF}"
# ... which does not exist before a study has written there: Hydra's warning about that says nothing wrong
warnings.filterwarnings(
    "ignore",
    message=f"provider=hydra.searchpath in [a-z-]+, path={STUDIES_DIR}/{GENERATED_CONF} is not available",
)


def study_name(configured: str | None, job_name: str | None, suffix: str) -> str:
    """The study a sweep runs: `hydra.sweeper.study_name`, else the app's job name plus `study_suffix`."""
    return str(configured or f"{job_name or 'sweeplab'}{suffix}")


def path_safe(name: str) -> str:
    """A study name as one file or folder name (Hydra reads `.` and `/` in option names as structure)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "study"


def generated_conf_dir(root_dir: str | os.PathLike) -> Path:
    """`<root_dir>/studies/conf`: the config groups a study writes (presets, focused spaces)."""
    return Path(root_dir).resolve() / STUDIES_DIR / GENERATED_CONF


def _study_dir(base: str, *, _root_: DictConfig) -> str:
    """`${sweeplab.study_dir:<base>}`: `<base>/<study>` while a sweeplab study runs, `<base>` for any other
    run or multirun; for `hydra.sweep.dir`, so that each study's sweeps share a folder of their own."""
    hydra = _root_.get("hydra")
    sweeper = hydra.get("sweeper") if hydra is not None else None
    if sweeper is None or sweeper.get("_target_") != TARGET:
        return base
    name = study_name(sweeper.get("study_name"), hydra.job.get("name"), sweeper.get("study_suffix") or "")
    return f"{base}/{path_safe(name)}"


OmegaConf.register_new_resolver("sweeplab.study_dir", _study_dir, replace=True)
