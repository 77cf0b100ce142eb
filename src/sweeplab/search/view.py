"""A study as its readers see it (reports, prediction): loaded from its storage alone, with what sweeplab
stored beside Optuna's data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import config_error
from sweeplab.search.records import (
    ATTR_OVERRIDES,
    ATTR_QUICK,
    STUDY_METRICS,
    searched_space,
    sign,
    state_counts,
)
from sweeplab.search.records import front as pareto_front
from sweeplab.search.records import ranked as best_first
from sweeplab.search.storage import STUDIES_DIR, load_study, masked, resolve_storage, sqlite_path


@dataclass
class StudyView:
    """One snapshot of a study (it may still be running): its trials and what they mean."""

    study: optuna.Study
    storage_url: str  # masked: safe to print and to write into files

    @classmethod
    def load(cls, study_name: str, storage_url: str, key: str = "storage") -> StudyView:
        """Open `study_name` in `storage_url`; an unknown name fails with the names the storage holds."""
        return cls(load_study(study_name, storage_url, key), masked(storage_url))

    @property
    def name(self) -> str:
        return self.study.study_name

    @cached_property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @cached_property
    def directions(self) -> list[str]:
        return [d.name.lower() for d in self.study.directions]

    @property
    def single(self) -> bool:
        return len(self.directions) == 1

    @property
    def sign(self) -> float:
        """+1 when larger values of the first objective are better."""
        return sign(self.directions[0])

    @cached_property
    def metrics(self) -> list[str]:
        """Names of the objectives (optimized_metric, then extra_objectives)."""
        names = self.study.user_attrs.get(STUDY_METRICS) or []
        if len(names) == len(self.directions):
            return [str(n) for n in names]
        return ["value"] if self.single else [f"value_{i}" for i in range(len(self.directions))]

    @property
    def metric(self) -> str:
        return self.metrics[0]

    def attr(self, key: str, default: Any = None) -> Any:
        return self.study.user_attrs.get(key, default)

    @cached_property
    def counts(self) -> dict[str, int]:
        """Trials per state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
        return state_counts(self.trials)

    @cached_property
    def front(self) -> list[FrozenTrial]:
        """The Pareto front, by trial number."""
        return pareto_front(self.study)

    def front_rows(self) -> list[dict[str, Any]]:
        """The front as result files write it: trial, values, params."""
        return [{"trial": t.number, "values": list(t.values), "params": dict(t.params)} for t in self.front]

    def state(self, *states: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in states]

    @property
    def complete(self) -> list[FrozenTrial]:
        return self.state(TrialState.COMPLETE)

    @property
    def pruned(self) -> list[FrozenTrial]:
        return self.state(TrialState.PRUNED)

    @property
    def failed(self) -> list[FrozenTrial]:
        return self.state(TrialState.FAIL)

    def ranked(self) -> list[FrozenTrial]:
        """Complete trials, best first by the first objective."""
        return best_first(self.trials, self.directions[0])

    @property
    def best(self) -> FrozenTrial | None:
        """The best complete trial (single objective), or None before the first one finishes."""
        ranked = self.ranked()
        return ranked[0] if ranked and self.single else None

    @cached_property
    def space(self) -> dict[str, BaseDistribution]:
        """The searched distributions: as stored with the study, else as the trials sampled them."""
        return searched_space(self.study, self.trials)

    @property
    def param_names(self) -> list[str]:
        names = list(self.space)
        for t in self.trials:
            names.extend(n for n in t.params if n not in names)
        return names


def full_overrides(trial: FrozenTrial) -> list[str]:
    """The overrides that train this trial in full: the job's overrides without its quick validation."""
    quick = set(trial.user_attrs.get(ATTR_QUICK) or [])
    return [o for o in trial.user_attrs.get(ATTR_OVERRIDES) or [] if o not in quick]


def last_report(trial: FrozenTrial) -> tuple[int | None, float | None]:
    """(step, value) of the trial's last intermediate report."""
    if not trial.intermediate_values:
        return None, None
    step = max(trial.intermediate_values)
    return step, trial.intermediate_values[step]


def check_name(study_name: Any, purpose: str = "to report") -> str:
    if not isinstance(study_name, str) or not study_name.strip():
        raise config_error(
            "study_name", study_name, f"give the study {purpose}, e.g. study_name=digits_test_resnet_fast"
        )
    return study_name


def stored_study_url(study_name: str, storage: str | None, root: Path) -> str:
    """The storage URL of an existing study: `storage`, else the default SQLite file under `root`, which
    must exist (a missing one names the studies that are there)."""
    url = resolve_storage(storage, study_name, root, key="storage")
    path = sqlite_path(url)
    if storage is None and path is not None and not path.is_file():
        here = sorted(p.stem for p in (root / STUDIES_DIR).glob("*.db"))
        raise config_error(
            "study_name",
            study_name,
            f"no study file {STUDIES_DIR}/{path.name} under {root}; studies here: {', '.join(here) or 'none'} "
            "(or pass storage=<url>)",
        )
    return url


def dumps(data: Any) -> str:
    """JSON as files carry it: NaN and infinities become null (strict JSON readers refuse them)."""
    return json.dumps(_finite(data), indent=2, sort_keys=False) + "\n"


def _finite(data: Any) -> Any:
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return None
    if isinstance(data, dict):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
