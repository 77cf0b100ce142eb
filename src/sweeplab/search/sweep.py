"""The study loop behind the Hydra sweeper: check everything, then ask → launch → tell until the study is done.

Trial N runs as Hydra job N (so output dirs follow trial numbers and never collide on resume); the job
finds its trial through the storage and reports every epoch (see `sweeplab.search.trial`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from sweeplab.data.datamodule import check_folds
from sweeplab.errors import SweeplabError, config_error
from sweeplab.search.algorithms import build_pruner, build_sampler
from sweeplab.search.guard import ATTR_RESCUE_OF, describe, rescue_candidates
from sweeplab.search.space import SearchSpace, format_value
from sweeplab.search.study import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_FOCUS_BEST,
    ATTR_LOST,
    ATTR_OVERRIDES,
    ATTR_PRUNED_AT,
    ATTR_QUICK,
    ATTR_SPACE,
    STUDY_COMMAND,
    STUDY_CONFIG_NAME,
    STUDY_FOCUSED_FROM,
    STUDY_METRICS,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_SCRIPT,
    STUDY_STOPPED,
    SURPLUS,
    close_interrupted,
    counted,
    counts,
    masked,
    masked_argument,
    open_storage,
    owned_here,
    recover_orphans,
    recover_stale,
    resolve_storage,
    stored_space,
)
from sweeplab.search.workers import Outcome, ProcessPool

log = logging.getLogger("sweeplab.sweep")

DIRECTIONS = ("minimize", "maximize")

Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


@dataclass
class SweepPlan:
    """Everything a study needs, checked before anything touches the storage."""

    study_name: str
    storage_url: str
    directions: list[str]
    n_trials: int
    n_jobs: int
    space: SearchSpace
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    max_failure_rate: float = 0.0
    timeout: float | None = None
    patience: int | None = None
    target: float | None = None
    min_delta: float = 0.0
    allow_space_change: bool = False
    heartbeat_interval: int | None = 60
    rescue_top_k: int = 0
    # wait for every trial of a batch of n_jobs before asking the next (the stock plugin's behaviour)
    synchronous: bool = False
    quick_overrides: list[str] = field(default_factory=list)
    custom_search_space: Callable[[DictConfig, optuna.Trial], None] | None = None
    script: str = "runners/train.py"
    config_name: str = "train"
    # what each objective is: optimized_metric, *extra_objectives
    metrics: list[str] = field(default_factory=list)
    # the sweep's command-line arguments, any password in a URL masked
    command: list[str] = field(default_factory=list)
    focus: Focus | None = None


@dataclass(frozen=True)
class Focus:
    """Staged search: the earlier study, the space narrowed around its top trials, and its best params."""

    study_name: str
    space: dict[str, str]
    best_params: dict[str, Any]


def _focus(sweeper: DictConfig, root_dir: str) -> Focus | None:
    """`hydra.sweeper.focus.from=<study>`: read the earlier study (same storage) before anything is written."""
    from sweeplab.reporting.analysis import focused_space
    from sweeplab.reporting.view import StudyView

    source = (sweeper.get("focus") or {}).get("from")
    if not source:
        return None
    url = resolve_storage(sweeper.get("storage"), str(source), root_dir)
    view = StudyView.load(str(source), url, key="hydra.sweeper.focus.from")
    space = focused_space(view) if view.single else None
    if space is None or view.best is None:
        raise config_error(
            "hydra.sweeper.focus.from",
            source,
            f"needs a single-objective study with at least 2 complete trials; it has {len(view.complete)}",
        )
    return Focus(str(source), space, dict(view.best.params))


def make_plan(
    sweeper: DictConfig,
    job_cfg: DictConfig,
    arguments: Sequence[str],
    group_options: Callable[[str], list[str] | None],
    root_dir: str,
    config_name: str = "train",
    compose: Callable[[list[str]], DictConfig] | None = None,
) -> SweepPlan:
    """Check `hydra.sweeper` and the search space against the composed config; raise one line on the first problem.

    `compose` (the sweeper's config loader) recomposes the job config for a conditional branch's group
    choice, so that its keys are checked where they exist (ConvNeXt's `ls_init_value` under model=convnext)."""
    if sweeper.get("search_space"):
        raise config_error(
            "hydra.sweeper.search_space", "...", "was removed from the stock plugin; use hydra.sweeper.params"
        )
    n_trials = _int_at_least(sweeper, "n_trials", 1)
    n_jobs = _int_at_least(sweeper, "n_jobs", 1)
    directions = _directions(sweeper.get("direction", "minimize"))
    extra = list(job_cfg.get("extra_objectives") or [])
    if len(directions) != 1 + len(extra):
        raise config_error(
            "hydra.sweeper.direction",
            directions,
            f"gives {len(directions)} direction(s) but each trial returns {1 + len(extra)} value(s) "
            f"(optimized_metric plus extra_objectives={extra})",
        )
    mode = str(job_cfg.get("optimized_mode", "max"))
    if directions[0] != f"{mode}imize":
        raise config_error(
            "hydra.sweeper.direction",
            directions[0],
            f"contradicts optimized_mode={mode} (checkpoints keep the {mode} of {job_cfg.get('optimized_metric')}); "
            f"set both the same way",
        )
    max_failure_rate = float(sweeper.get("max_failure_rate", 0.0))
    if not 0.0 <= max_failure_rate <= 1.0:
        raise config_error("hydra.sweeper.max_failure_rate", max_failure_rate, "must lie in [0, 1]")
    timeout = sweeper.get("timeout")
    if timeout is not None and float(timeout) <= 0:
        raise config_error("hydra.sweeper.timeout", timeout, "must be a number of seconds > 0, or null")
    stop = sweeper.get("stop") or {}
    patience = stop.get("patience")
    if patience is not None and int(patience) < 1:
        raise config_error("hydra.sweeper.stop.patience", patience, "must be at least 1, or null")
    heartbeat = sweeper.get("heartbeat_interval")
    if heartbeat is not None and (
        not isinstance(heartbeat, int) or isinstance(heartbeat, bool) or heartbeat < 1
    ):
        raise config_error(
            "hydra.sweeper.heartbeat_interval", heartbeat, "must be a whole number of seconds >= 1, or null"
        )
    target = stop.get("target")
    if target is not None and len(directions) > 1:
        raise config_error("hydra.sweeper.stop.target", target, "needs a single-objective study")

    focus = _focus(sweeper, root_dir)
    # a focused study searches the narrowed space of the earlier one (plus the command line's params)
    space = SearchSpace.parse(
        focus.space if focus else sweeper.get("params"),
        arguments,
        None if focus else _container(sweeper.get("conditional")),
    )
    custom = _custom_search_space(sweeper.get("custom_search_space"))
    if not space.all_distributions() and custom is None:
        raise SweeplabError(
            "nothing to search: hydra.sweeper.params has no sweep (choice/range/interval) and no "
            "custom_search_space is set; pick a search space with search=<name> or pass one on the command line"
        )
    space.check_keys(job_cfg, group_options)
    if space.conditional:
        space.check_branches(job_cfg, group_options, compose)
        space.defaults = _parent_defaults(space, job_cfg, compose)
        if str((sweeper.get("sampler") or {}).get("_target_", "")).endswith("GridSampler"):
            raise config_error(
                "hydra.sweeper.sampler",
                "grid",
                "runs one fixed grid and cannot sample hydra.sweeper.conditional; use tpe, random, qmc, ...",
            )
    quick = _quick_overrides(sweeper.get("quick_validation"))

    study_name = str(
        sweeper.get("study_name")
        or f"{job_cfg.get('exp_name') or 'sweeplab'}{sweeper.get('study_suffix') or ''}"
    )
    return SweepPlan(
        study_name=study_name,
        storage_url=resolve_storage(sweeper.get("storage"), study_name, root_dir),
        directions=directions,
        n_trials=n_trials,
        n_jobs=n_jobs,
        space=space,
        sampler=build_sampler(sweeper.get("sampler"), space.distributions),
        pruner=build_pruner(sweeper.get("pruner"), sweeper.get("guard")),
        max_failure_rate=max_failure_rate,
        timeout=float(timeout) if timeout is not None else None,
        patience=int(patience) if patience is not None else None,
        target=float(target) if target is not None else None,
        min_delta=float(stop.get("min_delta") or 0.0),
        allow_space_change=bool(sweeper.get("allow_space_change", False)),
        heartbeat_interval=heartbeat,
        synchronous=bool(sweeper.get("synchronous", False)),
        rescue_top_k=_int_at_least(
            sweeper.get("rescue") or DictConfig({"top_k": 0}), "top_k", 0, "hydra.sweeper.rescue.top_k"
        ),
        quick_overrides=quick,
        custom_search_space=custom,
        script=_script(),
        config_name=config_name,
        metrics=[str(job_cfg.get("optimized_metric")), *map(str, extra)],
        command=[masked_argument(a) for a in sys.argv[1:]],
        focus=focus,
    )


def open_study(plan: SweepPlan) -> optuna.Study:
    """Load the study or create it; a different search space or direction is refused before any write."""
    storage = open_storage(plan.storage_url, heartbeat_interval=plan.heartbeat_interval)
    study = None
    if plan.study_name not in optuna.study.get_all_study_names(storage):
        try:
            study = optuna.create_study(
                study_name=plan.study_name,
                storage=storage,
                sampler=plan.sampler,
                pruner=plan.pruner,
                directions=plan.directions,
            )
            study.set_user_attr(ATTR_SPACE, _json(plan.space.to_json()))
            log.info("study %s created in %s", plan.study_name, masked(plan.storage_url))
            if plan.focus is not None:
                _start_focused(study, plan)
        except optuna.exceptions.DuplicatedStudyError:
            study = None  # another sweep created it a moment ago: load it as below
    if study is None:
        study = optuna.load_study(
            study_name=plan.study_name, storage=storage, sampler=plan.sampler, pruner=plan.pruner
        )
        stored_dirs = [d.name.lower() for d in study.directions]
        if stored_dirs != plan.directions:
            raise config_error(
                "hydra.sweeper.direction",
                plan.directions,
                f"study {plan.study_name!r} was created with {stored_dirs}; use another hydra.sweeper.study_name",
            )
        stored = stored_space(study)
        diff = plan.space.differences(stored) if stored is not None else []
        if diff and not plan.allow_space_change:
            raise SweeplabError(
                f"study {plan.study_name!r} in {masked(plan.storage_url)} was run with another search space "
                f"({'; '.join(diff)}); pass hydra.sweeper.allow_space_change=true to continue it anyway, "
                "or hydra.sweeper.study_name=<new name> to start a new study"
            )
        if diff:
            log.warning(
                "continuing study %s with a changed search space: %s", plan.study_name, "; ".join(diff)
            )
            study.set_user_attr(ATTR_SPACE, _json(plan.space.to_json()))
        log.info(
            "study %s loaded from %s: %d trials so far",
            plan.study_name,
            masked(plan.storage_url),
            len(study.trials),
        )
    for key, value in {
        STUDY_CONFIG_NAME: plan.config_name,
        STUDY_SCRIPT: plan.script,
        STUDY_COMMAND: plan.command,
        STUDY_METRICS: plan.metrics,
        STUDY_SAMPLER: type(plan.sampler).__name__,
        STUDY_PRUNER: describe(plan.pruner),
        STUDY_STOPPED: f"not finished: a sweep started {time.strftime('%Y-%m-%d %H:%M:%S')} is running or was killed",
    }.items():
        study.set_user_attr(key, value)
    recover_orphans(study)
    recover_stale(study)
    return study


def _start_focused(study: optuna.Study, plan: SweepPlan) -> None:
    """Link the new study to the earlier one and make the earlier best its first trial."""
    assert plan.focus is not None
    study.set_user_attr(STUDY_FOCUSED_FROM, plan.focus.study_name)
    searched = plan.space.all_distributions()
    best = {k: v for k, v in plan.focus.best_params.items() if k in searched}
    study.enqueue_trial(best, user_attrs={ATTR_FOCUS_BEST: plan.focus.study_name})
    log.info(
        "focused on study %s: %s; its best params run first",
        plan.focus.study_name,
        ", ".join(f"{k}: {v}" for k, v in plan.focus.space.items()),
    )


class StudySweep:
    """Runs a study to its total of `n_trials` finished trials through a Hydra launcher."""

    def __init__(self, plan: SweepPlan, study: optuna.Study, launch: Launch, sweeper_cfg: DictConfig) -> None:
        self.plan, self.study, self.launch = plan, study, launch
        self.config = sweeper_cfg  # handed to custom_search_space, as the stock plugin does
        self.started = time.monotonic()
        self.session_finished = 0
        self.session_failed = 0

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, pool: ProcessPool | None = None) -> str:
        """Run trials until the study has n_trials finished ones (or a stop rule fires); returns why it stopped.

        With a pool, a trial starts whenever a worker is free; without one, batches of n_jobs go to the
        Hydra launcher (in this process for the basic launcher, elsewhere for SLURM and the like).
        """
        asked: dict[int, optuna.Trial] = {}
        try:
            return self._run_pool(pool, asked) if pool is not None else self._run_batches(asked)
        except BaseException:  # Ctrl-C, a config error, too many failures: never leave trials RUNNING
            stopped = pool.stop_all() if pool is not None else []
            open_trials = [t for t in asked.values() if not self._finished(t)]
            for trial in open_trials:
                close_interrupted(self.study, trial._trial_id)
            if open_trials:
                log.error(
                    "sweep stopped: trials %s stored as FAIL (interrupted)%s; run the same command to resume",
                    [t.number for t in open_trials],
                    f", their {len(stopped)} worker process(es) stopped" if stopped else "",
                )
            raise

    def _run_batches(self, asked: dict[int, optuna.Trial]) -> str:
        while True:
            recover_stale(self.study)
            trials = self.study.get_trials(deepcopy=False)
            remaining = self.remaining(trials)
            if remaining <= 0:
                if self.enqueue_rescues():
                    continue
                return self.done_reason(trials)
            reason = None if _waiting_rescues(trials) else self.stop_reason(trials)
            if reason:
                return reason
            batch = [
                t for t in (self.ask() for _ in range(min(self.plan.n_jobs, remaining))) if t is not None
            ]
            if not batch:
                continue
            asked.update((t.number, t) for t in batch)
            returns = self.launch_trials(batch)
            for trial, ret in zip(batch, returns, strict=True):
                self.tell(asked.pop(trial.number), Outcome.of(ret))

    def _run_pool(self, pool: ProcessPool, asked: dict[int, optuna.Trial]) -> str:
        stopping: str | None = None
        while True:
            recover_stale(self.study)  # trials of sweeps elsewhere that died
            trials = self.study.get_trials(deepcopy=False)
            # stop rules end the study's own trials; queued rescues run regardless
            stopping = stopping or (None if _waiting_rescues(trials) else self.stop_reason(trials))
            remaining = self.remaining(trials)
            barrier = self.plan.synchronous and bool(pool.running)
            while not barrier and stopping is None and remaining > 0 and pool.free_slot() is not None:
                trial = self.ask()
                if trial is None:
                    break
                asked[trial.number] = trial
                pool.start(trial.number, self.job_overrides(trial))
                remaining -= 1
            if not pool.running:
                if stopping is None and self.enqueue_rescues():
                    continue
                return stopping or self.done_reason(self.study.get_trials(deepcopy=False))
            for number, outcome in pool.wait_any(timeout=self.plan.heartbeat_interval):
                self.tell(asked.pop(number), outcome)

    def remaining(self, trials: list[FrozenTrial]) -> int:
        """Trials still to start: n_trials minus finished and running ones, on every worker and machine,
        plus rescues waiting to start (they come on top of n_trials)."""
        own = [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]
        running = [t for t in own if t.state == TrialState.RUNNING]
        return self.plan.n_trials - len(counted(own)) - len(running) + len(_waiting_rescues(trials))

    def enqueue_rescues(self) -> int:
        """Once the study's own n_trials are finished everywhere: queue the pruned trials that ranked best
        at their prune step (up to rescue.top_k, counting earlier rescues), to run unpruned. Returns how many."""
        if not self.plan.rescue_top_k or len(self.plan.directions) > 1:
            return 0
        trials = self.study.get_trials(deepcopy=False)
        own = [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]
        busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in own)
        if busy or len(counted(own)) < self.plan.n_trials:
            return 0
        done = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in trials if ATTR_RESCUE_OF in t.user_attrs}
        picked = rescue_candidates(
            own, self.study.direction, self.plan.rescue_top_k - len(done), exclude=done
        )
        for t in picked:
            self.study.enqueue_trial(t.params, user_attrs={ATTR_RESCUE_OF: t.number}, skip_if_exists=False)
        if picked:
            log.info(
                "rescue: pruned trials %s ranked best at their prune step; running them again, unpruned",
                ", ".join(
                    f"{t.number} (epoch {t.last_step}: {t.intermediate_values[t.last_step]:.4f})"
                    for t in picked
                ),
            )
        return len(picked)

    def done_reason(self, trials: list[FrozenTrial]) -> str:
        running = sum(t.state == TrialState.RUNNING for t in trials)
        elsewhere = f" ({running} still running in other sweeps)" if running else ""
        rescued = sum(ATTR_RESCUE_OF in t.user_attrs for t in trials)
        rescues = f" and {rescued} rescued" if rescued else ""
        return f"the study has its {self.plan.n_trials} trials{rescues}{elsewhere}"

    def _finished(self, trial: optuna.Trial) -> bool:
        return self.study._storage.get_trial(trial._trial_id).state.is_finished()

    def stop_reason(self, trials: list[FrozenTrial]) -> str | None:
        plan = self.plan
        if plan.timeout is not None and time.monotonic() - self.started >= plan.timeout:
            return f"hydra.sweeper.timeout={plan.timeout:g}s reached"
        if getattr(plan.sampler, "exhausted", False):
            return "the grid sampler has run every point of its grid"
        if len(plan.directions) > 1:
            return None
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return None
        sign = 1.0 if plan.directions[0] == "maximize" else -1.0
        best = max(complete, key=lambda t: sign * t.value)
        if plan.target is not None and sign * (best.value - plan.target) >= 0:
            return (
                f"hydra.sweeper.stop.target={plan.target:g} reached by trial {best.number} ({best.value:.4f})"
            )
        if plan.patience is not None:
            finished = sorted(counted(trials), key=lambda t: t.datetime_complete)
            best_at, best_value = -1, -math.inf
            for i, t in enumerate(finished):
                if t.state == TrialState.COMPLETE and sign * t.value > best_value + plan.min_delta:
                    best_at, best_value = i, sign * t.value
            since = len(finished) - 1 - best_at
            if best_at >= 0 and since >= plan.patience:
                return (
                    f"hydra.sweeper.stop.patience={plan.patience}: {since} finished trials without a new best"
                )
        return None

    # -- one trial --------------------------------------------------------------------------------
    def ask(self) -> optuna.Trial | None:
        """A new trial, or None when other sweeps on the same storage took the last places first."""
        trial = self.study.ask(self.plan.space.distributions)
        if self.surplus(trial):
            trial.set_user_attr(ATTR_FAIL_REASON, SURPLUS)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        self.plan.space.suggest(trial)  # the params of the branches its values take
        if self.plan.custom_search_space is not None:
            self.plan.custom_search_space(self.config, trial)
        for key, value in owned_here().items():
            trial.set_user_attr(key, value)
        quick, own = self.task_overrides(trial.params)
        trial.set_user_attr(ATTR_OVERRIDES, [*quick, *own])
        trial.set_user_attr(ATTR_QUICK, quick)
        return trial

    def surplus(self, trial: optuna.Trial) -> bool:
        """Whether `trial` would go past n_trials: places go by trial number, which the storage hands out in order.

        Sweeps on several machines each see a free place and ask at the same moment; the later numbers lose.
        """
        if ATTR_RESCUE_OF in trial.user_attrs:
            return False  # a rescue comes on top of n_trials
        places = sorted(
            t.number
            for t in self.study.get_trials(deepcopy=False)
            if (t.state in (TrialState.RUNNING, TrialState.WAITING) or counts(t))
            and ATTR_RESCUE_OF not in t.user_attrs
        )
        return places.index(trial.number) >= self.plan.n_trials

    def task_overrides(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(quick validation, the space's overrides); a searched or fixed key wins over a quick one."""
        own = self.plan.space.overrides(params)
        taken = {o.split("=", 1)[0].lstrip("+") for o in own}
        quick = [o for o in self.plan.quick_overrides if o.split("=", 1)[0].lstrip("+") not in taken]
        return quick, own

    def job_overrides(self, trial: optuna.Trial) -> list[str]:
        return [
            *trial.user_attrs[ATTR_OVERRIDES],
            f"hydra.sweeper.study_name={format_value(self.plan.study_name)}",
        ]

    def launch_trials(self, batch: list[optuna.Trial]) -> list[JobReturn]:
        """Job number = trial number; trials with consecutive numbers go to the launcher together."""
        numbers = [t.number for t in batch]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launch([self.job_overrides(t) for t in batch], numbers[0]))
        return [r for t in batch for r in self.launch([self.job_overrides(t)], t.number)]

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        if outcome.lost:  # not the params' fault: run them again, as after an interrupted sweep
            trial.set_user_attr(ATTR_LOST, outcome.error)
            close_interrupted(self.study, trial._trial_id)
            log.warning(
                "trial %d lost (%s): stored FAIL (interrupted), its params run again",
                trial.number,
                outcome.error,
            )
            self.status_line(self.study._storage.get_trial(trial._trial_id))
            return
        frozen = self.study._storage.get_trial(trial._trial_id)
        values: list[float] | None = None
        problem = outcome.error
        if problem is None:
            values, problem = _values(outcome.value, len(self.plan.directions))
        if outcome.pruned or (problem is None and ATTR_PRUNED_AT in frozen.user_attrs):
            state = TrialState.PRUNED
            self.study.tell(trial, state=state)
        elif problem is None:
            state = TrialState.COMPLETE
            self.study.tell(trial, values)
        else:
            state = TrialState.FAIL
            trial.set_user_attr(ATTR_FAIL_REASON, problem)
            self.study.tell(trial, state=state)
            self.session_failed += 1
        self.session_finished += 1
        self.status_line(self.study._storage.get_trial(trial._trial_id))
        if outcome.config_error:  # a config problem fails every trial alike: stop now, with its one line
            raise SweeplabError(problem.removeprefix(f"{SweeplabError.__name__}: "))
        allowed = self.plan.max_failure_rate * self.plan.n_trials
        if state == TrialState.FAIL and self.session_failed > allowed:
            raise SweeplabError(
                f"trial {trial.number} failed ({problem}); {self.session_failed} "
                f"failures exceed hydra.sweeper.max_failure_rate={self.plan.max_failure_rate:g} of "
                f"n_trials={self.plan.n_trials}"
            )

    def status_line(self, frozen: FrozenTrial) -> None:
        number, state = frozen.number, frozen.state
        value = _fmt(frozen.values) if frozen.values else "-"
        epochs = frozen.user_attrs.get(ATTR_EPOCHS, "-")
        extra = f" fail_reason={frozen.user_attrs.get(ATTR_FAIL_REASON)}" if state == TrialState.FAIL else ""
        pruned = f" at epoch {frozen.user_attrs.get(ATTR_PRUNED_AT)}" if state == TrialState.PRUNED else ""
        log.info(
            "trial %d %s%s value=%s epochs=%s best=%s elapsed=%.1fs%s",
            number,
            state.name,
            pruned,
            value,
            epochs,
            self.best_text(),
            time.monotonic() - self.started,
            extra,
        )

    def best_text(self) -> str:
        if len(self.plan.directions) > 1:
            return f"{len(self.study.best_trials)} on the Pareto front"
        try:
            best = self.study.best_trial
        except ValueError:
            return "-"
        return f"{best.value:.4f} (trial {best.number})"


def _waiting_rescues(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if ATTR_RESCUE_OF in t.user_attrs and t.state == TrialState.WAITING]


def _values(raw: Any, n: int) -> tuple[list[float] | None, str | None]:
    try:
        values = [float(raw)] if n == 1 else [float(v) for v in raw]
    except (TypeError, ValueError):
        return None, f"ValueError: the job returned {raw!r}; the study needs {n} number(s)"
    if len(values) != n:
        return None, f"ValueError: the job returned {len(values)} values; the study has {n} directions"
    if any(math.isnan(v) for v in values):
        return None, "ValueError: the job's value is NaN (training diverged or never validated)"
    return values, None


def _directions(raw: Any) -> list[str]:
    items = list(raw) if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw]
    items = [str(getattr(d, "name", d)).lower() for d in items]
    if not items:
        raise config_error("hydra.sweeper.direction", raw, "give minimize or maximize, or a list of them")
    for d in items:
        if d not in DIRECTIONS:
            raise config_error(
                "hydra.sweeper.direction", d, "allowed: minimize, maximize (or a list of them)"
            )
    return items


def _int_at_least(node: DictConfig, key: str, low: int, name: str | None = None) -> int:
    value = node.get(key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if number < low or (isinstance(value, float) and not value.is_integer()):
        raise config_error(name or f"hydra.sweeper.{key}", value, f"must be an integer >= {low}")
    return number


def _quick_overrides(node: DictConfig | None) -> list[str]:
    """`quick_validation` becomes overrides of every trial's training (never of single runs)."""
    if not node or not node.get("enabled", True):
        return []
    out = []
    if node.get("epochs") is not None:
        if int(node.epochs) < 1:
            raise config_error("hydra.sweeper.quick_validation.epochs", node.epochs, "must be at least 1")
        out.append(f"trainer.max_epochs={int(node.epochs)}")
    if node.get("batch_size") is not None:
        if int(node.batch_size) < 1:
            raise config_error(
                "hydra.sweeper.quick_validation.batch_size", node.batch_size, "must be at least 1"
            )
        out.append(f"data.batch_size={int(node.batch_size)}")
    if node.get("folds") is not None:
        folds, _ = check_folds(node.folds, key="hydra.sweeper.quick_validation.folds")
        out.append(f"data.folds={folds}")
    if node.get("train_fraction") is not None:
        fraction = float(node.train_fraction)
        if not 0.0 < fraction <= 1.0:
            raise config_error(
                "hydra.sweeper.quick_validation.train_fraction", fraction, "must lie in (0, 1]"
            )
        out.append(f"++trainer.limit_train_batches={fraction}")
    return out


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _parent_defaults(
    space: SearchSpace, job_cfg: DictConfig, compose: Callable[[list[str]], DictConfig] | None
) -> dict[str, str]:
    """What each conditional parent is on a trial that neither samples nor fixes it: the config's choice
    of a group (model -> test_resnet), else the composed value of the key."""
    choices: dict[str, Any] = {}
    if compose is not None:
        choices = OmegaConf.to_container(compose(space.job_overrides()).hydra.runtime.choices) or {}  # type: ignore[assignment]
    out = {}
    for parent in space.conditional:
        value = choices.get(parent, OmegaConf.select(job_cfg, parent, default=None))
        if value is not None:
            out[parent] = format_value(value)
    return out


def _custom_search_space(path: str | None) -> Callable[[DictConfig, optuna.Trial], None] | None:
    if not path:
        return None
    try:
        return get_method(path)
    except Exception as exc:
        raise config_error("hydra.sweeper.custom_search_space", path, f"cannot import it: {exc}") from None


def _script() -> str:
    argv0 = Path(sys.argv[0])
    try:
        return str(argv0.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(argv0)


def _fmt(values: Sequence[float]) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def _json(data: dict[str, str]) -> str:
    return json.dumps(data, sort_keys=True)
