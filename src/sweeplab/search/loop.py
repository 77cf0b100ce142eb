"""The study loop: open or resume the study, then ask → start → wait → tell until it has its trials.

Trial N runs as Hydra job N (so output dirs follow trial numbers and never collide on resume); the job is
handed its trial's address and reports every epoch (`sweeplab.search.trial`). An executor
(`sweeplab.launching.executors`) runs the jobs: worker processes, or batches through any Hydra launcher.
What the loop consults lives beside it: `opening` (the study), `stopping` (stop rules), `rescue`,
`coordination` (sweeps sharing the study) and `status` (the console line).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeplab.errors import SweeplabError, one_line
from sweeplab.launching.executors import Executor, Outcome
from sweeplab.launching.interrupts import Interrupted, interrupt_after, stop_signals_ignored
from sweeplab.search import checkpoints, pauses
from sweeplab.search.coordination import (
    OtherSweeps,
    close_surplus_waiting,
    grid_started,
    queue_untaken,
    remaining,
    surplus,
    twin,
)
from sweeplab.search.liveness import Heartbeats, owned_here, recover
from sweeplab.search.opening import open_study
from sweeplab.search.optuna_access import storage_of, trial_id
from sweeplab.search.outage import StorageCorrupt, StorageUnreachable, given_up
from sweeplab.search.plan import SweepPlan
from sweeplab.search.pruning import describe, sampler_name
from sweeplab.search.records import (
    ATTR_CONFIG_ERROR,
    ATTR_FAIL_REASON,
    ATTR_LOST,
    ATTR_OVERRIDES,
    ATTR_PRUNE_REFUSED,
    ATTR_PRUNED_AT,
    ATTR_QUICK,
    INTERRUPTED,
    NOT_RUN,
    STALLED,
    STUDY_STOPPED,
    SURPLUS,
    close_interrupted,
)
from sweeplab.search.rescue import enqueue_rescues, rescued_before, waiting_rescues
from sweeplab.search.space import format_value, override_key
from sweeplab.search.status import status_line
from sweeplab.search.stopping import done_reason, stop_reason
from sweeplab.search.storage import checkpoint

log = logging.getLogger("sweeplab.sweep")

MAX_REPEATS = 20  # proposals in a row that repeat other trials' params before the space counts as exhausted


def run_study(
    plan: SweepPlan, executor: Executor, on_early_stop: Callable[[optuna.Study, str], None] | None = None
) -> tuple[optuna.Study, str]:
    """Open or resume the study and run it to its end; returns the study and why it stopped.

    When the sweep stops on an exception (a stop signal, a config error, too many failures, the storage
    gone), the study records why and `on_early_stop(study, why)` writes what the trials so far found,
    before the exception goes on."""
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
    except StorageCorrupt:  # nothing more is read from or written to a damaged file, the WAL not folded in
        raise
    except BaseException as exc:
        why = _stop_cause(exc)
        with stop_signals_ignored(), contextlib.suppress(Exception):  # the storage may be what failed
            study.set_user_attr(STUDY_STOPPED, f"stopped early: {why}")
        if on_early_stop is not None:
            with stop_signals_ignored():
                on_early_stop(study, why)
        _fold_wal(plan)
        raise
    _fold_wal(plan)
    return study, stopped


def _fold_wal(plan: SweepPlan) -> None:
    try:
        checkpoint(plan.storage_url)  # the .db file alone holds the study, even after Ctrl-C
    except sqlite3.Error as exc:  # a full disk: the WAL keeps the study, and the sweep's error stands
        log.warning("the study's write-ahead log was not folded into its file: %s", exc)


def _stop_cause(exc: BaseException) -> str:
    """Why a sweep stopped on `exc`, in words for the study and the console."""
    if isinstance(exc, Interrupted):
        return f"stopped by {exc.name}"
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by Ctrl-C"
    return str(exc) if isinstance(exc, SweeplabError) else one_line(exc)


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
        self.others = OtherSweeps(study, plan.conf.heartbeat_interval)
        self.refusal_said = False  # a trainer that refused to stop the pruner: said once (`say_refused`)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> str:
        """Run trials until the study has n_trials finished ones (or a stop rule fires); returns why it stopped.

        A trial starts whenever the executor has room (with `synchronous`, only once the whole previous
        batch has ended); the wait wakes at least every heartbeat interval to close trials of sweeps that
        died. A sweep ends only when no trial runs anywhere: it re-runs a dead sweep's trials itself.
        """
        executor = self.executor
        try:
            stopping: str | None = None
            while True:
                recover(self.study, self.owned)
                trials = self.study.get_trials(deepcopy=False)
                # stop rules end the study's own trials; queued rescues run regardless
                stopping = stopping or (None if waiting_rescues(trials) else self.stop_reason(trials))
                self.start_trials(stopping, remaining(self.plan.n_trials, trials))
                if stopping is None and self.rescue_while_running():
                    continue  # started at the top of the loop
                if not executor.running:
                    if stopping is not None:
                        return stopping
                    ended = self.end_reason()
                    if ended is not None:
                        return ended
                    continue
                for number, outcome in executor.wait_any(timeout=self.plan.conf.heartbeat_interval):
                    self.tell(self.asked[number], outcome)
                    del self.asked[number]  # told: no longer this sweep's to close
        except BaseException as exc:  # a stop signal, a config error, too many failures: none left RUNNING
            self.close_open_trials(exc)
            raise
        finally:
            self.heartbeats.close()

    def start_trials(self, stopping: str | None, left: int) -> None:
        """Ask and start trials while the executor has room, `left` trials are to start and no stop rule
        fired (with `synchronous`, none while any of the batch runs)."""
        executor = self.executor
        barrier = self.plan.conf.synchronous and bool(executor.running)
        while not barrier and stopping is None and left > 0 and executor.has_room():
            trial = self.ask()
            if trial is None:
                break
            executor.start(trial.number, self.job_overrides(trial), self.plan.trial_address(trial.number))
            left -= 1

    def rescue_while_running(self) -> bool:
        """Queue one rescue for a worker that would otherwise wait for the study's last trials to end
        (`rescue.enqueue_rescues`); a synchronous sweep waits for its whole batch instead."""
        executor = self.executor
        if self.plan.conf.synchronous or not executor.running or not executor.has_room():
            return False
        return enqueue_rescues(self.study, self.plan, self.exhausted is not None, room=1) > 0

    def end_reason(self) -> str | None:
        """With nothing running here: why the sweep ends, or None when it goes on (rescues queued, trials
        left to start, other sweeps' trials to wait for)."""
        if enqueue_rescues(self.study, self.plan, self.exhausted is not None, room=self.plan.n_jobs):
            return None
        trials = self.study.get_trials(deepcopy=False)
        if remaining(self.plan.n_trials, trials) > 0 and self.exhausted is None:
            return None
        if self.others.wait(self.owned):  # their trials may fail and need re-running here
            return None
        close_surplus_waiting(self.study)
        pauses.remove_all(self.study, "the study ended")
        pauses.remove_resumables(self.study)
        checkpoints.keep_best(self.study, self.plan.conf.checkpoints.keep)
        return self.exhausted or done_reason(self.plan.n_trials, self.study.get_trials(deepcopy=False))

    def close_open_trials(self, exc: BaseException) -> None:
        """The sweep stops on `exc`: stop its workers, store its open trials as interrupted (their params run
        again), and say how to resume, in one line (a stop signal's `Interrupted` then counts as said)."""
        with stop_signals_ignored():  # the sweep is stopping already: a second Ctrl-C cannot cut this short
            stopped = self.executor.stop_all()
            try:
                open_trials = [t for t in self.asked.values() if not self._finished(t)]
                # a trial stopped by SIGTERM (preemption, scancel) resumes where it was; Ctrl-C's starts over
                ctrl_c = isinstance(exc, KeyboardInterrupt) or (
                    isinstance(exc, Interrupted) and exc.name == "SIGINT"
                )
                for trial in open_trials:
                    close_interrupted(self.study, trial_id(trial), resumable=not ctrl_c)
            except StorageCorrupt:  # its one line says it all: nothing is written to a damaged file
                return
            except StorageUnreachable:
                log.error(
                    "sweep stopped: the storage is unreachable, so trials %s stay RUNNING there; the next "
                    "sweep on the study closes them (their owner is gone) and runs their params again",
                    sorted(self.asked),
                )
                return
        by = f" by {exc.name}" if isinstance(exc, Interrupted) else ""
        if open_trials:
            log.error(
                "sweep stopped%s: trials %s stored as FAIL (interrupted)%s; run the same command to resume",
                by,
                [t.number for t in open_trials],
                f", their {len(stopped)} worker process(es) stopped" if stopped else "",
            )
        elif isinstance(exc, Interrupted | KeyboardInterrupt):
            log.error("sweep stopped%s between trials; run the same command to resume", by)
        if isinstance(exc, Interrupted):
            exc.said = True

    @property
    def owned(self) -> set[int]:
        """Trial ids this sweep asked and has not told: alive, whatever their heartbeats say."""
        return {trial_id(t) for t in self.asked.values()}

    def stop_reason(self, trials: list[FrozenTrial]) -> str | None:
        """Why this sweep stops starting the study's own trials (`stopping.stop_reason`), or None."""
        return stop_reason(self.plan, self.started, trials)

    def _finished(self, trial: optuna.Trial) -> bool:
        return storage_of(self.study).get_trial(trial_id(trial)).state.is_finished()

    # -- one trial --------------------------------------------------------------------------------
    def ask(self) -> optuna.Trial | None:
        """A new trial with params no other trial of the study has, or None when other sweeps on the storage
        took the last places first or the space has no new configuration left (`exhausted`)."""
        self.exhausted = None
        if grid_started(self.study, self.plan.sampler):
            self.exhausted = "the grid sampler has started every point of its grid"
            return None
        for _ in range(MAX_REPEATS):
            with interrupt_after():  # a trial is created and owned as one step, even under Ctrl-C
                trial = self.study.ask(self.plan.space.distributions)
                self.own(trial)
            earlier = rescued_before(self.study, trial)
            if earlier is not None:
                self.close_unrun(trial, f"{NOT_RUN}the same rescue as trial {earlier}")
                return None
            if surplus(self.study, self.plan.n_trials, trial):
                self.close_unrun(trial, SURPLUS)
                return None
            self.plan.space.suggest(trial)  # the params of the branches its values take
            if self.plan.custom_search_space is not None:
                self.plan.custom_search_space(trial)
            repeated = twin(self.study, trial)
            if repeated is not None:
                self.close_unrun(trial, f"{NOT_RUN}the same params as trial {repeated}")
                self.exhausted = queue_untaken(self.study, self.plan, trial.number)
                if self.exhausted is not None:
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
        self.heartbeats.add(trial_id(trial))
        for key, value in owned_here().items():
            trial.set_user_attr(key, value)

    def close_unrun(self, trial: optuna.Trial, reason: str) -> None:
        """Close a trial this sweep asked but will not run (FAIL, `reason`): it does not count."""
        trial.set_user_attr(ATTR_FAIL_REASON, reason)
        self.study.tell(trial, state=TrialState.FAIL)
        self.heartbeats.discard(trial_id(trial))
        del self.asked[trial.number]

    def task_overrides(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(quick validation, the space's overrides); a searched or fixed key wins over a quick one."""
        own = self.plan.space.overrides(params)
        taken = {override_key(o) for o in own}
        quick = [o for o in self.plan.quick_overrides if override_key(o) not in taken]
        return quick, own

    def job_overrides(self, trial: optuna.Trial) -> list[str]:
        """The trial's job command line: its overrides, the study's name and the Hydra overrides."""
        return [
            *trial.user_attrs[ATTR_OVERRIDES],
            f"hydra.sweeper.study_name={format_value(self.plan.study_name)}",
            *self.plan.hydra_overrides,
        ]

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Store the outcome of the trial's job; raise when it ends the sweep (a config error, too many
        failures)."""
        self.heartbeats.discard(trial_id(trial))
        if outcome.storage_lost:  # the job waited a whole window already: the sweep does not wait another
            given_up(self.study)
        if self._finished(trial):  # closed by another sweep that took it for dead: its re-run stands
            log.warning(
                "trial %d was closed by another sweep while it ran (no heartbeat reached it); its outcome is "
                "dropped and its re-run counts",
                trial.number,
            )
            return
        if outcome.lost:  # not the params' fault: run them again, as after an interrupted sweep
            reason = STALLED if str(outcome.error).startswith(STALLED) else INTERRUPTED
            trial.set_user_attr(ATTR_LOST, outcome.error)
            close_interrupted(self.study, trial_id(trial), reason=reason)
            log.warning(
                "trial %d lost (%s): stored FAIL (%s), its params run again",
                trial.number,
                outcome.error,
                reason,
            )
            self.status_line(trial)
            return
        state, problem = self.store_outcome(trial, outcome)
        self.session_finished += 1
        self.status_line(trial)
        self.say_refused(trial)
        if outcome.config_error:  # a config problem fails every trial alike: stop now, with its one line
            raise SweeplabError(problem.removeprefix(f"{SweeplabError.__name__}: "))
        rate = self.plan.conf.max_failure_rate
        if state == TrialState.FAIL and self.session_failed > rate * self.plan.n_trials:
            raise SweeplabError(
                f"trial {trial.number} failed ({problem}); {self.session_failed} "
                f"failures exceed hydra.sweeper.max_failure_rate={rate:g} of n_trials={self.plan.n_trials}"
            )

    def store_outcome(self, trial: optuna.Trial, outcome: Outcome) -> tuple[TrialState, str | None]:
        """Tell the study how the trial ended (PRUNED, COMPLETE with its values, or FAIL with why);
        returns the state and the problem, if any."""
        frozen = storage_of(self.study).get_trial(trial_id(trial))
        values: list[float] | None = None
        problem = outcome.error
        if problem is None:
            values, problem = _values(outcome.value, len(self.plan.directions))
        if outcome.pruned or (problem is None and frozen.user_attrs.get(ATTR_PRUNED_AT) is not None):
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
        checkpoints.keep_best(self.study, self.plan.conf.checkpoints.keep)
        return state, problem

    def say_refused(self, trial: optuna.Trial) -> None:
        """Once per sweep: a trial whose trainer went on after the pruner said stop (`ATTR_PRUNE_REFUSED`),
        so pruning saved less than it says, or nothing."""
        refused = storage_of(self.study).get_trial(trial_id(trial)).user_attrs.get(ATTR_PRUNE_REFUSED)
        if not refused or self.refusal_said:
            return
        self.refusal_said = True
        stopped = refused.get("stopped_at")
        log.warning(
            "trial %d: the pruner said stop after epoch %s but its trainer went on (%s) %s, so it is stored "
            "%s; pruning saves epochs only where the trainer can stop (said once per sweep)",
            trial.number,
            refused.get("asked_at"),
            refused.get("why"),
            f"to epoch {stopped}"
            if stopped is not None
            else f"to the end ({refused.get('epochs_run')} epochs)",
            f"PRUNED at epoch {stopped}" if stopped is not None else "COMPLETE",
        )

    def status_line(self, trial: optuna.Trial) -> None:
        """The console's line for the trial just told (`status.status_line`)."""
        frozen = storage_of(self.study).get_trial(trial_id(trial))
        status_line(
            self.study,
            self.plan.n_trials,
            len(self.plan.directions),
            frozen,
            self.started,
            self.session_finished,
        )


def _values(raw: Any, n: int) -> tuple[list[float] | None, str | None]:
    """The job's return value as the study's `n` objective values, or None and why it is not."""
    try:
        values = [float(raw)] if n == 1 else [float(v) for v in raw]
    except (TypeError, ValueError):
        return None, f"ValueError: the job returned {raw!r}; the study needs {n} number(s)"
    if len(values) != n:
        return None, f"ValueError: the job returned {len(values)} values; the study has {n} directions"
    if any(math.isnan(v) for v in values):
        return None, "ValueError: the job's value is NaN (training diverged or never validated)"
    return values, None
