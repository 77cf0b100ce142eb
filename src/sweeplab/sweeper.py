"""The sweep the plugin's sweeper runs: plan → claim a sweep dir → the study loop → result files and report.

`hydra_plugins.sweeplab_sweeper` is Hydra's face of it: it keeps Hydra's `setup` arguments and calls
`StudySweeper.sweep`. Here the keys of `hydra.sweeper` become a plan (`sweeplab.search.plan`), the loop
(`sweeplab.search.loop`) asks, launches and tells, and reporting writes what the study found.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from sweeplab.errors import SweeplabError, config_error, one_line
from sweeplab.hydra_errors import composing, full_error, say_and_exit
from sweeplab.launching.executors import (
    LauncherBatches,
    ProcessPool,
    assign_devices,
    gpus,
    start_trial_server,
    trials_in_processes,
    visible_devices,
)
from sweeplab.launching.interrupts import EXIT_INTERRUPTED, Interrupted, stop_handlers
from sweeplab.launching.ranks import refuse_rank_sweep
from sweeplab.reporting import write_study_report
from sweeplab.reporting.export import Flattener
from sweeplab.reporting.files import write_files
from sweeplab.search.coordination import writes_report
from sweeplab.search.liveness import claim_sweep_dir, link_latest, release_sweep_dir
from sweeplab.search.loop import run_study
from sweeplab.search.naming import path_safe  # importing it registers ${sweeplab.study_dir:...}
from sweeplab.search.opening import choose_study
from sweeplab.search.plan import QUIET_CONSOLE, SweepPlan, make_plan
from sweeplab.search.records import counted, state_counts
from sweeplab.search.schema import SweeplabSweeperConf
from sweeplab.search.space import format_value, override_key
from sweeplab.search.storage import STORAGE_ENV, has_password, masked, open_storage
from sweeplab.search.view import StudyView

log = logging.getLogger("sweeplab.sweep")


class StudySweeper:
    """One `python app.py -m ...` as an Optuna study; each trial is one Hydra job of the app."""

    def __init__(
        self,
        keys: dict[str, Any],
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        # `hydra.sweeper` as Hydra passes it; the plan types it inside sweep(), where a key Hydra let through
        # (`+hydra.sweeper.x=1`) fails as one line rather than inside Hydra's instantiation message.
        self.keys = keys
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        HydraConfig.instance().set_config(config)  # so ${hydra:...} in the job config resolves for our checks
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Run the sweep with SIGINT and SIGTERM as clean stops: the loop stops the workers and closes the
        open trials (`launching.interrupts`), then the sweep exits 128 + signum with one line, no traceback.
        Returns None, as the stock plugin's sweep does: what the study found is in its storage and files."""
        with stop_handlers():
            try:
                self._sweep(arguments)
            except Interrupted as stop:
                if not stop.said:
                    log.error("sweep stopped by %s; run the same command to resume", stop.name)
                raise SystemExit(stop.exit_code) from None
            except KeyboardInterrupt:  # the loop has said what it stopped; no traceback, the shell's status
                raise SystemExit(EXIT_INTERRUPTED) from None
            except SweeplabError as exc:
                if full_error():
                    raise
                say_and_exit(exc)

    def _sweep(self, arguments: list[str]) -> None:
        refuse_rank_sweep()
        if trials_in_processes(self.config):  # the trials' fork server imports torch & co. meanwhile
            start_trial_server()
        root_dir = str(self.config.hydra.runtime.cwd)
        plan = make_plan(
            self.keys, self.config, arguments, self.group_options, root_dir=root_dir, compose=self.compose
        )
        # workers x devices per trial that the visible GPUs cannot hold: one line, before anything is written
        slots = self._worker_devices(plan.conf)
        # a storage that cannot be opened is one line before any sweep dir is made (the study reuses it)
        open_storage(
            plan.storage_url, heartbeat_interval=plan.conf.heartbeat_interval, retry_s=plan.conf.storage_retry
        )
        plan = choose_study(plan, root_dir)
        if plan.study_name != plan.conf.study_name:  # the sweep dir's ${sweeplab.study_dir:...} names it too
            with read_write(self.config.hydra), open_dict(self.config.hydra.sweeper):
                self.config.hydra.sweeper.study_name = plan.study_name
        sweep_dir = self._claim_sweep_dir()
        if QUIET_CONSOLE in plan.hydra_overrides:  # the basic launcher's "Launching"/"#n : ..." lines too
            logging.getLogger("hydra._internal.core_plugins.basic_launcher").setLevel(logging.WARNING)
        try:
            executor = self._executor(plan.conf, slots)
            self._hide_password(plan.storage_url)
            study, stopped = run_study(
                plan, executor, on_early_stop=lambda st, why: self._files_of(st, plan, why)
            )
            self._results(study, plan, stopped, root_dir)
        finally:
            release_sweep_dir(sweep_dir)

    def _claim_sweep_dir(self) -> Path:
        """This sweep's own `hydra.sweep.dir` (see `claim_sweep_dir`), set where the launcher and jobs read it;
        `latest` beside it points at it."""
        wanted = Path(str(self.config.hydra.sweep.dir))
        claimed = claim_sweep_dir(wanted)
        if claimed != wanted:
            log.info(
                "%s is in use by another sweep started at the same time: this sweep writes to %s",
                wanted,
                claimed,
            )
        # the jobs are composed again from the hydra overrides: they get the dir as this sweep resolved it
        with read_write(self.config.hydra):
            self.config.hydra.sweep.dir = str(claimed)
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={format_value(str(claimed))}")
        link_latest(claimed)
        return claimed

    def _results(self, study: Any, plan: SweepPlan, stopped: str, root_dir: str) -> None:
        """The sweep has ended: result files, and with `report`, plots, report.md/html and the preset."""
        view = StudyView(study, masked(plan.storage_url))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        retrain = None
        report, by = writes_report(view.trials) if plan.conf.report else (False, "")
        if plan.conf.report and not report:  # a study shared by sweeps that end together: one report
            log.info("the study's plots and report: written by %s", by)
        if report:
            # a study's sweeps in a folder of their own (`${sweeplab.study_dir:...}`) share its plotly.min.js
            study_dir = sweep_dir.parent if sweep_dir.parent.name == path_safe(view.name) else None
            flattener = Flattener(self.compose, plan.script)
            retrain = write_study_report(view, sweep_dir, flattener, root_dir, js_dir=study_dir).retrain
        else:
            write_files(view, sweep_dir, retrain=None)
        _log_summary(view, stopped, sweep_dir, retrain, plan.n_trials, report)

    def _files_of(self, study: Any, plan: SweepPlan, why: str) -> None:
        """The sweep stopped on an error or a signal: the result files of the trials the study has (no plots
        or report: a stopping sweep does not make the user wait), and one line saying so."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            view = StudyView(study, masked(plan.storage_url))
            finished = len(counted(view.trials))
            if finished:
                write_files(view, sweep_dir, retrain=None)
        except Exception as exc:  # the storage may be what stopped the sweep
            log.error("study %s stopped early (%s); no result files: %s", plan.study_name, why, one_line(exc))
            return
        log.error(
            "study %s stopped early (%s) with %d of %d trials%s",
            plan.study_name,
            why,
            finished,
            plan.n_trials,
            f"; their result files: {sweep_dir}" if finished else "",
        )

    def _hide_password(self, url: str) -> None:
        """Jobs get a password-carrying storage URL through the environment, never through saved overrides."""
        if not has_password(url):
            return
        os.environ[STORAGE_ENV] = url  # inherited by worker processes and read by in-process jobs
        kept = [o for o in self.config.hydra.overrides.hydra if override_key(o) != "hydra.sweeper.storage"]
        with read_write(self.config.hydra.overrides):
            self.config.hydra.overrides.hydra = [*kept, f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"]

    def _worker_devices(self, conf: SweeplabSweeperConf) -> list[str | None] | None:
        """Each worker process's GPUs ("0,1"; None: the CPU), or None where trials run as batches through the
        launcher: in this process (n_jobs=1 and one device per trial) or elsewhere (SLURM and the like).
        Worker processes run trials for n_jobs > 1, and for trials on several devices, whose DDP ranks join
        their worker (a rank's failure must not end the sweep)."""
        basic = isinstance(self.launcher, BasicLauncher)
        if not basic and conf.devices_per_trial > 1:
            raise config_error(
                "hydra.sweeper.devices_per_trial",
                conf.devices_per_trial,
                f"trials on several devices run in worker processes of Hydra's basic launcher, not under "
                f"{type(self.launcher).__name__}; use hydra/launcher=basic with n_jobs workers per machine",
            )
        if not basic or (conf.n_jobs == 1 and conf.devices_per_trial == 1):
            return None
        return assign_devices(conf.n_jobs, visible_devices(), conf.share_gpus, conf.devices_per_trial)

    def _executor(self, conf: SweeplabSweeperConf, slots: list[str | None] | None) -> Any:
        """The workers of `_worker_devices`, or batches through the launcher."""
        if slots is None:
            # a job in this process writes to the sweep's console: its output goes to its worker.log, as a
            # worker process's does (`hydra.verbose=true` keeps it on the console)
            quiet = isinstance(self.launcher, BasicLauncher) and not self.config.hydra.get("verbose")
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            here = isinstance(self.launcher, BasicLauncher)
            return LauncherBatches(self.launcher.launch, conf.n_jobs, sweep_dir if quiet else None, here)
        per_trial = conf.devices_per_trial
        log.info(
            "%d worker%s%s: %s",
            conf.n_jobs,
            "s" if conf.n_jobs > 1 else "",
            f", {per_trial} devices per trial" if per_trial > 1 else "",
            ", ".join(f"worker {i} on {gpus(d) if d is not None else 'CPU'}" for i, d in enumerate(slots)),
        )
        return ProcessPool(
            self.hydra_context, self.task_function, self.config, slots, conf.stall_timeout, per_trial
        )

    def compose(self, overrides: list[str]) -> DictConfig:
        """A job's config for `overrides`, composed as the launcher composes trials (run mode, on the search
        path the command line gave); a YAML error in one of the app's files is one line."""
        searchpath = [o for o in self.config.hydra.overrides.hydra if override_key(o) == "hydra.searchpath"]
        with composing():
            return self.hydra_context.config_loader.load_configuration(
                config_name=str(self.config.hydra.job.config_name),
                overrides=[*searchpath, *overrides],
                run_mode=RunMode.RUN,
            )

    def group_options(self, name: str) -> list[str] | None:
        """The options of config group `name`, those of its nested groups included (`search=focused/<study>`)."""
        loader = self.hydra_context.config_loader
        # the app's search path as its jobs see it: the primary config's and the command line's hydra.searchpath
        app = {
            "config_name": str(self.config.hydra.job.config_name),
            "overrides": list(self.config.hydra.overrides.hydra),
        }

        def options(group: str) -> list[str]:
            found = list(loader.get_group_options(group, ObjectType.CONFIG, **app))
            for sub in loader.get_group_options(group, ObjectType.GROUP, **app):
                found += [f"{sub}/{o}" for o in options(f"{group}/{sub}")]
            return found

        return options(name.replace(".", "/")) or None


def _log_summary(
    view: StudyView, stopped: str, sweep_dir: Path, retrain: str | None, n_trials: int, report: bool
) -> None:
    counts = state_counts(counted(view.trials))
    uncounted = sum(t.state.is_finished() for t in view.trials) - sum(counts.values())
    early = sum(counts.values()) < n_trials
    log.info(
        "study %s %s (%s): %d complete, %d pruned, %d failed%s",
        view.name,
        f"stopped early with {sum(counts.values())} of {n_trials} trials" if early else "finished",
        stopped,
        counts["COMPLETE"],
        counts["PRUNED"],
        counts["FAIL"],
        f" ({uncounted} more interrupted or not run, not counted)" if uncounted else "",
    )
    best = view.best
    if best is not None:
        log.info("best %s %.4f (trial %d): %s", view.metric, best.values[0], best.number, best.params)
    elif not view.single:
        for t in view.front:
            log.info("Pareto trial %d: values %s params %s", t.number, t.values, t.params)
    if retrain:
        log.info("retrain it: %s", retrain)
    log.info("results%s: %s", ", plots and report" if report else "", sweep_dir)
