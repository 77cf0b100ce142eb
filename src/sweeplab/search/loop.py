"""The study loop: open or resume the study, then ask → start → wait → tell until it has its trials.

Trial N runs as Hydra job N (so output dirs follow trial numbers and never collide on resume); the job
finds its trial through the storage and reports every epoch (`sweeplab.search.trial`). An executor
(`sweeplab.search.executors`) runs the jobs: forked workers, or batches through any Hydra launcher.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import SweeplabError, config_error
from sweeplab.search import pauses
from sweeplab.search.executors import Executor, Outcome
from sweeplab.search.interrupts import interrupt_after
from sweeplab.search.liveness import Heartbeats, grace_period, owned_here, recover, running_elsewhere
from sweeplab.search.plan import SweepPlan
from sweeplab.search.pruning import describe, rescue_candidates, sampler_name
from sweeplab.search.records import (
    ATTR_CONFIG_ERROR,
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_FOCUS_BEST,
    ATTR_HOST,
    ATTR_LOST,
    ATTR_OVERRIDES,
    ATTR_PRUNED_AT,
    ATTR_QUICK,
    ATTR_RESCUE_OF,
    ATTR_RETRY_OF,
    NOT_RUN,
    STUDY_COMMAND,
    STUDY_CONFIG_NAME,
    STUDY_FOCUSED_FROM,
    STUDY_METRICS,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_SCRIPT,
    STUDY_SETTINGS,
    STUDY_SPACE,
    STUDY_STOPPED,
    SURPLUS,
    close_interrupted,
    counted,
    counts,
    front,
    interrupted,
    never_ran,
    sign,
    stored_space,
)
from sweeplab.search.space import format_value, override_key
from sweeplab.search.storage import checkpoint, masked, open_storage

log = logging.getLogger("sweeplab.sweep")

MAX_REPEATS = 20  # proposals in a row that repeat other trials' params before the space counts as exhausted
WAIT_S = 5.0  # how often a sweep waiting for other sweeps' trials looks again


def run_study(plan: SweepPlan, executor: Executor) -> tuple[optuna.Study, str]:
    """Open or resume the study and run it to its end; returns the study and why it stopped."""
    study = open_study(plan)
    log.info(
        "study %s: %d trials in all, %d param(s) searched, sampler %s, pruner %s, %d at a time",
        plan.study_name,
        plan.n_trials,
        len(plan.space.all_distributions()),
        sampler_name(plan.sampler),
        describe(plan.pruner),
        plan.n_jobs,
    )
    try:
        stopped = StudySweep(plan, study, executor).run()
        study.set_user_attr(STUDY_STOPPED, stopped)
    finally:
        checkpoint(plan.storage_url)  # the .db file alone holds the study, even after Ctrl-C
    return study, stopped


def open_study(plan: SweepPlan) -> optuna.Study:
    """Load the study or create it; a different search space or direction is refused before any write."""
    storage = open_storage(plan.storage_url, heartbeat_interval=plan.conf.heartbeat_interval)
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
            study.set_user_attr(STUDY_SPACE, _json(plan.space.to_json()))
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
        if diff and not plan.conf.allow_space_change:
            raise SweeplabError(
                f"study {plan.study_name!r} in {masked(plan.storage_url)} was run with another search space "
                f"({'; '.join(diff)}); pass hydra.sweeper.allow_space_change=true to continue it anyway, "
                "or hydra.sweeper.study_name=<new name> to start a new study"
            )
        if diff:
            log.warning(
                "continuing study %s with a changed search space: %s", plan.study_name, "; ".join(diff)
            )
            study.set_user_attr(STUDY_SPACE, _json(plan.space.to_json()))
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
        STUDY_SAMPLER: sampler_name(plan.sampler),
        STUDY_PRUNER: describe(plan.pruner),
        STUDY_SETTINGS: {
            "sampler": plan.conf.sampler,
            "pruner": plan.conf.pruner,
            "n_trials": plan.n_trials,
            "n_jobs": plan.n_jobs,
            "timeout": plan.conf.timeout,
            "quick_validation": plan.quick_overrides,
        },
        STUDY_STOPPED: f"not finished: a sweep started {time.strftime('%Y-%m-%d %H:%M:%S')} is running or was killed",
    }.items():
        study.set_user_attr(key, value)
    recover(study)
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
    """Runs a study to its total of `n_trials` finished trials through an executor."""

    def __init__(self, plan: SweepPlan, study: optuna.Study, executor: Executor) -> None:
        self.plan, self.study, self.executor = plan, study, executor
        self.started = time.monotonic()
        self.session_finished = 0
        self.session_failed = 0
        self.asked: dict[int, optuna.Trial] = {}  # by number: the trials this sweep owns until it tells them
        self.heartbeats = Heartbeats(study, plan.conf.heartbeat_interval)
        self.exhausted: str | None = None  # why no new configuration can be proposed
        self.waited_for: list[int] = []

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> str:
        """Run trials until the study has n_trials finished ones (or a stop rule fires); returns why it stopped.

        A trial starts whenever the executor has room (with `synchronous`, only once the whole previous
        batch has ended); the wait wakes at least every heartbeat interval to close trials of sweeps that
        died. A sweep ends only when no trial runs anywhere: it re-runs a dead sweep's trials itself.
        """
        executor, conf = self.executor, self.plan.conf
        try:
            stopping: str | None = None
            while True:
                recover(self.study, self.owned)
                trials = self.study.get_trials(deepcopy=False)
                # stop rules end the study's own trials; queued rescues run regardless
                stopping = stopping or (None if _waiting_rescues(trials) else self.stop_reason(trials))
                remaining = self.remaining(trials)
                barrier = conf.synchronous and bool(executor.running)
                while not barrier and stopping is None and remaining > 0 and executor.has_room():
                    trial = self.ask()
                    if trial is None:
                        break
                    executor.start(trial.number, self.job_overrides(trial))
                    remaining -= 1
                if not executor.running:
                    if stopping is not None:
                        return stopping
                    if self.enqueue_rescues():
                        continue
                    trials = self.study.get_trials(deepcopy=False)
                    if self.remaining(trials) > 0 and self.exhausted is None:
                        continue
                    if self.wait_for_others():  # their trials may fail and need re-running here
                        continue
                    self.close_surplus_waiting()
                    pauses.remove_all(self.study, "the study ended")
                    return self.exhausted or self.done_reason(self.study.get_trials(deepcopy=False))
                for number, outcome in executor.wait_any(timeout=conf.heartbeat_interval):
                    self.tell(self.asked.pop(number), outcome)
        except BaseException:  # Ctrl-C, a config error, too many failures: never leave trials RUNNING
            stopped = executor.stop_all()
            open_trials = [t for t in self.asked.values() if not self._finished(t)]
            for trial in open_trials:
                close_interrupted(self.study, trial._trial_id)
            if open_trials:
                log.error(
                    "sweep stopped: trials %s stored as FAIL (interrupted)%s; run the same command to resume",
                    [t.number for t in open_trials],
                    f", their {len(stopped)} worker process(es) stopped" if stopped else "",
                )
            elif sys.exc_info()[0] is KeyboardInterrupt:
                log.error("sweep stopped between trials; run the same command to resume")
            raise
        finally:
            self.heartbeats.close()

    @property
    def owned(self) -> set[int]:
        """Trial ids this sweep asked and has not told: alive, whatever their heartbeats say."""
        return {t._trial_id for t in self.asked.values()}

    def wait_for_others(self) -> bool:
        """Trials of other sweeps still run: wait a while (True), or, when this sweep cannot tell whether
        they are alive (heartbeats off and a trial on another machine), end now (False)."""
        others = running_elsewhere(self.study, self.owned)
        if not others:
            return False
        host = owned_here()[ATTR_HOST]
        if grace_period(self.study) is None and any(
            t.user_attrs.get(ATTR_HOST) not in (None, host) for t in others
        ):
            return False
        numbers = sorted(t.number for t in others)
        if numbers != self.waited_for:
            log.info(
                "waiting for trials %s of other sweeps: their values complete the study, and if their sweep "
                "stopped they run again here",
                numbers,
            )
            self.waited_for = numbers
        time.sleep(min(self.plan.conf.heartbeat_interval or WAIT_S, WAIT_S))
        return True

    def close_surplus_waiting(self) -> None:
        """The study has its trials: close re-queued trials still waiting (their sweep died after queueing
        them), so that nothing is left to run. A waiting trial is claimed (WAITING → RUNNING) before it is
        closed, so one that another sweep takes at this moment is left to it."""
        storage = self.study._storage
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if ATTR_RESCUE_OF in t.user_attrs:
                continue
            for key, value in owned_here().items():
                storage.set_trial_user_attr(t._trial_id, key, value)
            if storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                storage.set_trial_user_attr(t._trial_id, ATTR_FAIL_REASON, SURPLUS)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    def remaining(self, trials: list[FrozenTrial]) -> int:
        """Trials still to start: n_trials minus finished and running ones, on every worker and machine,
        plus rescues waiting to start (they come on top of n_trials)."""
        own = [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]
        running = [t for t in own if t.state == TrialState.RUNNING]
        return self.plan.n_trials - len(counted(own)) - len(running) + len(_waiting_rescues(trials))

    def enqueue_rescues(self) -> int:
        """Once the study's own trials are finished everywhere (n_trials of them, or every configuration of
        an exhausted space): queue the pruned trials that ranked best at their prune step (up to
        rescue.top_k, counting earlier rescues), to run unpruned. Returns how many."""
        top_k = self.plan.conf.rescue.top_k
        if not top_k or len(self.plan.directions) > 1:
            return 0
        trials = self.study.get_trials(deepcopy=False)
        own = [t for t in trials if ATTR_RESCUE_OF not in t.user_attrs]
        busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in own)
        if busy or (len(counted(own)) < self.plan.n_trials and self.exhausted is None):
            return 0
        done = {int(t.user_attrs[ATTR_RESCUE_OF]) for t in trials if ATTR_RESCUE_OF in t.user_attrs}
        picked = rescue_candidates(own, self.study.direction, top_k - len(done), exclude=done)
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
        plan, stop = self.plan, self.plan.conf.stop
        timeout = plan.conf.timeout
        if timeout is not None and time.monotonic() - self.started >= timeout:
            return f"hydra.sweeper.timeout={timeout:g}s reached"
        if len(plan.directions) > 1:
            return None
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return None
        s = sign(plan.directions[0])
        best = max(complete, key=lambda t: s * t.value)
        if stop.target is not None and s * (best.value - stop.target) >= 0:
            return (
                f"hydra.sweeper.stop.target={stop.target:g} reached by trial {best.number} ({best.value:.4f})"
            )
        if stop.patience is not None:
            finished = sorted(counted(trials), key=lambda t: t.datetime_complete)
            best_at, best_value = -1, -math.inf
            for i, t in enumerate(finished):
                if t.state == TrialState.COMPLETE and s * t.value > best_value + stop.min_delta:
                    best_at, best_value = i, s * t.value
            since = len(finished) - 1 - best_at
            if best_at >= 0 and since >= stop.patience:
                return (
                    f"hydra.sweeper.stop.patience={stop.patience}: {since} finished trials without a new best"
                )
        return None

    # -- one trial --------------------------------------------------------------------------------
    def ask(self) -> optuna.Trial | None:
        """A new trial with params no other trial of the study has, or None when other sweeps on the storage
        took the last places first or the space has no new configuration left (`exhausted`)."""
        self.exhausted = None
        if self.grid_started():
            self.exhausted = "the grid sampler has started every point of its grid"
            return None
        for _ in range(MAX_REPEATS):
            with interrupt_after():  # a trial is created and owned as one step, even under Ctrl-C
                trial = self.study.ask(self.plan.space.distributions)
                self.own(trial)
            if self.surplus(trial):
                self.close_unrun(trial, SURPLUS)
                return None
            self.plan.space.suggest(trial)  # the params of the branches its values take
            if self.plan.custom_search_space is not None:
                self.plan.custom_search_space(trial)
            twin = self.twin(trial)
            if twin is not None:
                self.close_unrun(trial, f"{NOT_RUN}the same params as trial {twin}")
                if not self.queue_untaken(trial.number):
                    return None
                continue
            quick, own = self.task_overrides(trial.params)
            trial.set_user_attr(ATTR_OVERRIDES, [*quick, *own])
            trial.set_user_attr(ATTR_QUICK, quick)
            return trial
        self.exhausted = (
            f"the sampler proposed {MAX_REPEATS} configurations in a row that other trials have: "
            "the search space looks exhausted"
        )
        return None

    def own(self, trial: optuna.Trial) -> None:
        """Make `trial` this sweep's: its first heartbeat, then its owner (`search.liveness` relies on the order)."""
        self.asked[trial.number] = trial
        self.heartbeats.add(trial._trial_id)
        for key, value in owned_here().items():
            trial.set_user_attr(key, value)

    def close_unrun(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(ATTR_FAIL_REASON, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.heartbeats.discard(trial._trial_id)
        del self.asked[trial.number]

    def twin(self, trial: optuna.Trial) -> int | None:
        """The number of another trial with the same params, if any (None for a deliberate re-run).

        Every sweep checks its new trial against all others once its params are set, so of two sweeps that
        drew the same point at the same moment at least one sees the other's: the study never runs it twice.
        """
        params = trial.params
        if not params or any(k in trial.user_attrs for k in (ATTR_RETRY_OF, ATTR_RESCUE_OF, ATTR_FOCUS_BEST)):
            return None
        for other in self.study.get_trials(deepcopy=False):
            if other.number == trial.number or interrupted(other) or never_ran(other):
                continue
            if other.params == params:
                return other.number
        return None

    def queue_untaken(self, number: int) -> bool:
        """After a repeat in a finite space (a sampler may keep proposing the points it likes): queue one of
        the configurations no trial has, drawn by the trial's number; False when none is left (`exhausted`)."""
        every = None if self.plan.custom_search_space else self.plan.space.configurations()
        if every is None:
            return True  # continuous or large: the next proposal differs
        taken = [t.params for t in self.study.get_trials(deepcopy=False) if not never_ran(t)]
        untaken = [c for c in every if c not in taken]
        if not untaken:
            self.exhausted = f"every one of the {len(every)} configurations of the search space has a trial"
            return False
        pick = untaken[int(np.random.default_rng([self.plan.n_trials, number]).integers(len(untaken)))]
        self.study.enqueue_trial(pick, skip_if_exists=False)
        return True

    def grid_started(self) -> bool:
        """A grid whose every point has started (and no re-run waits): a new trial could only repeat one."""
        started = getattr(self.plan.sampler, "all_started", None)
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return started is not None and not waiting and started(self.study)

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
        taken = {override_key(o) for o in own}
        quick = [o for o in self.plan.quick_overrides if override_key(o) not in taken]
        return quick, own

    def job_overrides(self, trial: optuna.Trial) -> list[str]:
        return [
            *trial.user_attrs[ATTR_OVERRIDES],
            f"hydra.sweeper.study_name={format_value(self.plan.study_name)}",
            *self.plan.hydra_overrides,
        ]

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        self.heartbeats.discard(trial._trial_id)
        if self._finished(trial):  # closed by another sweep that took it for dead: its re-run stands
            log.warning(
                "trial %d was closed by another sweep while it ran (no heartbeat reached it); its outcome is "
                "dropped and its re-run counts",
                trial.number,
            )
            return
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
            pauses.keep_best(self.study, self.plan.conf.paused_kept)
        elif problem is None:
            state = TrialState.COMPLETE
            self.study.tell(trial, values)
        else:
            state = TrialState.FAIL
            trial.set_user_attr(ATTR_FAIL_REASON, problem)
            if outcome.config_error:  # the config's fault, not the params': it takes no place of n_trials
                trial.set_user_attr(ATTR_CONFIG_ERROR, True)
            self.study.tell(trial, state=state)
            self.session_failed += 1
        self.session_finished += 1
        self.status_line(self.study._storage.get_trial(trial._trial_id))
        if outcome.config_error:  # a config problem fails every trial alike: stop now, with its one line
            raise SweeplabError(problem.removeprefix(f"{SweeplabError.__name__}: "))
        rate = self.plan.conf.max_failure_rate
        if state == TrialState.FAIL and self.session_failed > rate * self.plan.n_trials:
            raise SweeplabError(
                f"trial {trial.number} failed ({problem}); {self.session_failed} "
                f"failures exceed hydra.sweeper.max_failure_rate={rate:g} of n_trials={self.plan.n_trials}"
            )

    def status_line(self, frozen: FrozenTrial) -> None:
        """One line per finished trial: its state and value, the study's count and best, the time so far and
        the time left at this session's pace."""
        number, state = frozen.number, frozen.state
        own = [t for t in self.study.get_trials(deepcopy=False) if ATTR_RESCUE_OF not in t.user_attrs]
        done, total = len(counted(own)), self.plan.n_trials
        elapsed = time.monotonic() - self.started
        left = ""
        if self.session_finished and done < total:
            left = f" left~{_duration(elapsed / self.session_finished * (total - done))}"
        value = _fmt(frozen.values) if frozen.values else "-"
        if ATTR_EPOCHS in frozen.user_attrs:
            progress = f" epochs={frozen.user_attrs[ATTR_EPOCHS]}"
        elif frozen.intermediate_values:
            progress = f" steps={max(frozen.intermediate_values)}"
        else:
            progress = ""
        extra = f" fail_reason={frozen.user_attrs.get(ATTR_FAIL_REASON)}" if state == TrialState.FAIL else ""
        pruned = f" at step {frozen.user_attrs.get(ATTR_PRUNED_AT)}" if state == TrialState.PRUNED else ""
        log.info(
            "[%d/%d] trial %d %s%s value=%s%s best=%s elapsed=%s%s%s",
            min(done, total),
            total,
            number,
            state.name,
            pruned,
            value,
            progress,
            self.best_text(),
            _duration(elapsed),
            left,
            extra,
        )

    def best_text(self) -> str:
        if len(self.plan.directions) > 1:
            return f"{len(front(self.study))} on the Pareto front"
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


def _duration(seconds: float) -> str:
    """12.3s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt(values: Sequence[float]) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def _json(data: dict[str, str]) -> str:
    return json.dumps(data, sort_keys=True)
