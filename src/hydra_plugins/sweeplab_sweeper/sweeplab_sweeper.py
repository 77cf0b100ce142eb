"""The Hydra plugin classes: the sweeper, its config schema, and the search path of its sampler/pruner configs.

Select it with `override hydra/sweeper: sweeplab`. Its keys are a superset of hydra-optuna-sweeper's
(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, params,
custom_search_space) with the same meaning; the work is done in `sweeplab.search`.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger("sweeplab.sweep")


@dataclass
class StopConf:
    # stop after this many finished trials without a new best (improvement > min_delta)
    patience: int | None = None
    min_delta: float = 0.0
    # stop once the best value reaches this (in the study's direction)
    target: float | None = None


@dataclass
class QuickValidationConf:
    """Applied to every trial of a study, never to single runs: fewer epochs, a batch size, part of the data."""

    enabled: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    train_fraction: float | None = None
    # k: every trial trains k models on stratified folds (data.folds=k); its value is their mean
    folds: int | None = None


@dataclass
class GuardConf:
    """Rules that veto the pruner (sweeplab.search.guard); all off here, on in hparams_search=optuna."""

    leader: bool = False  # never prune the best value any trial reported at this step
    margin: float | None = None  # ... nor one within this of the best finished trial's value
    threshold: float | None = None  # ... nor one past this absolute value (in the study's direction)


@dataclass
class RescueConf:
    top_k: int = 0  # after n_trials: run the k best-ranked pruned trials again, unpruned, as new trials


@dataclass
class SweeplabSweeperConf:
    _target_: str = "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper"
    _recursive_: bool = False  # sampler and pruner are built by the sweeper, after its checks
    # _self_ first: the chosen sampler/pruner configs fill the `sampler`/`pruner` keys below
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])

    # --- the stock plugin's keys, same meaning ---
    sampler: Any = None
    direction: Any = "minimize"
    storage: Any = None  # null: sqlite:///<cwd>/studies/<study_name>.db
    study_name: str | None = None  # null: the job config's exp_name + study_suffix
    n_trials: int = 20  # the study's total, counted across reruns and workers
    n_jobs: int = 1  # trials at once; > 1 with the basic launcher: one process per trial, no batch barrier
    max_failure_rate: float = 0.0
    search_space: dict[str, Any] | None = None  # removed upstream; refused with a pointer to `params`
    params: dict[str, str] | None = None
    custom_search_space: str | None = None

    # --- sweeplab's own ---
    pruner: Any = None
    # params only some trials get: {parent key: {value: {param: sweep or value}}}, e.g. ConvNeXt's layer
    # scale only when model=convnext_tiny (see conf/search/families.yaml)
    conditional: Any = None
    guard: GuardConf = field(default_factory=GuardConf)
    # staged search: {from: <earlier study>} searches the space narrowed around its top trials
    focus: Any = field(default_factory=lambda: {"from": None})
    rescue: RescueConf = field(default_factory=RescueConf)
    study_suffix: str = ""
    timeout: float | None = None  # seconds for this invocation of the study
    stop: StopConf = field(default_factory=StopConf)
    quick_validation: QuickValidationConf = field(default_factory=QuickValidationConf)
    allow_space_change: bool = False
    # seconds between a running trial's heartbeats; a trial silent for 2 intervals is failed and re-run
    heartbeat_interval: int | None = 60
    # true: start the next n_jobs trials only when the whole batch has ended (the stock plugin's way)
    synchronous: bool = False
    share_gpus: bool = False  # allow n_jobs > visible GPUs (workers i and i+g share GPU i)
    # at the end: plots, report.md/html and the best trial as preset=optimized/<study> (result files always)
    report: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper", name="sweeplab", node=SweeplabSweeperConf, provider="sweeplab"
)


class SweeplabSearchPath(SearchPathPlugin):
    """Adds `hydra/sweeper/{sampler,pruner}/*` (YAML beside this file) and the configs studies generate.

    Exported presets and focused search spaces are written to `<cwd>/studies/conf/<group>/...`; with
    this path, `preset=optimized/<study>` works from the same directory without copying files.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from sweeplab.reporting.export import generated_conf_dir

        search_path.append(provider="sweeplab", path="pkg://hydra_plugins.sweeplab_sweeper.conf")
        search_path.append(provider="sweeplab-studies", path=f"file://{generated_conf_dir(Path.cwd())}")


class SweeplabSweeper(Sweeper):
    """Runs `python app.py -m ...` as an Optuna study; each trial is one Hydra job."""

    def __init__(self, **_: Any) -> None:
        # Hydra passes the node's keys; they are read from the full config in setup(), resolved there.
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        HydraConfig.instance().set_config(config)  # so ${hydra:...} in the job config resolves for our checks
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from sweeplab.reporting import StudyView, write_study_report
        from sweeplab.reporting.export import Flattener
        from sweeplab.reporting.files import write_files
        from sweeplab.search.guard import describe
        from sweeplab.search.study import STUDY_STOPPED, checkpoint, masked
        from sweeplab.search.sweep import StudySweep, make_plan, open_study

        assert self.config is not None and self.hydra_context is not None
        sweeper_cfg = self.config.hydra.sweeper
        job_cfg = OmegaConf.masked_copy(self.config, [k for k in self.config if k != "hydra"])
        root_dir = str(self.config.hydra.runtime.cwd)
        plan = make_plan(
            sweeper_cfg,
            job_cfg,
            arguments,
            self._group_options,
            root_dir=root_dir,
            config_name=str(self.config.hydra.job.config_name),
            compose=self._compose,
        )
        pool = self._pool(plan.n_jobs, bool(sweeper_cfg.get("share_gpus", False)))
        self._hide_password(plan.storage_url)
        study = open_study(plan)
        log.info(
            "study %s: %d trials in all, %d param(s) searched, sampler %s, pruner %s, %d at a time",
            plan.study_name,
            plan.n_trials,
            len(plan.space.all_distributions()),
            type(plan.sampler).__name__,
            describe(plan.pruner),
            plan.n_jobs,
        )
        sweep = StudySweep(plan, study, self.launcher.launch, sweeper_cfg)
        try:
            stopped = sweep.run(pool)
            study.set_user_attr(STUDY_STOPPED, stopped)
        finally:
            checkpoint(plan.storage_url)  # the .db file alone holds the study, even after Ctrl-C
        view = StudyView(study, masked(plan.storage_url))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if sweeper_cfg.get("report", True):
            report = write_study_report(view, sweep_dir, Flattener(self._compose, plan.script), root_dir)
            preset = report.preset
        else:
            write_files(view, sweep_dir, retrain=None)
            preset = None
        _log_summary(view, stopped, sweep_dir, preset.command if preset else None)
        return view

    def _hide_password(self, url: str) -> None:
        """Jobs get a password-carrying storage URL through the environment, never through saved overrides."""
        from sweeplab.search.study import STORAGE_ENV, has_password

        if not has_password(url):
            return
        assert self.config is not None
        os.environ[STORAGE_ENV] = url  # inherited by worker processes and read by in-process jobs
        kept = [
            o
            for o in self.config.hydra.overrides.hydra
            if o.split("=", 1)[0].lstrip("+~") != "hydra.sweeper.storage"
        ]
        with read_write(self.config.hydra.overrides):
            self.config.hydra.overrides.hydra = [*kept, f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"]

    def _pool(self, n_jobs: int, share_gpus: bool) -> Any:
        """Worker processes for n_jobs > 1 under the basic launcher; other launchers get batches as usual."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from sweeplab.search.workers import ProcessPool, assign_devices, visible_devices

        if n_jobs == 1 or not isinstance(self.launcher, BasicLauncher):
            return None
        assert self.hydra_context is not None and self.task_function is not None and self.config is not None
        slots = assign_devices(n_jobs, visible_devices(), share_gpus)
        log.info(
            "%d workers: %s",
            n_jobs,
            ", ".join(f"worker {i} on {'GPU ' + d if d is not None else 'CPU'}" for i, d in enumerate(slots)),
        )
        return ProcessPool(self.hydra_context, self.task_function, self.config, slots)

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A job's config for `overrides`, composed as the launcher composes trials (run mode)."""
        assert self.config is not None and self.hydra_context is not None
        return self.hydra_context.config_loader.load_configuration(
            config_name=str(self.config.hydra.job.config_name), overrides=overrides, run_mode=RunMode.RUN
        )

    def _group_options(self, name: str) -> list[str] | None:
        assert self.hydra_context is not None
        options = self.hydra_context.config_loader.get_group_options(name.replace(".", "/"))
        return options or None


def _log_summary(view: Any, stopped: str, sweep_dir: Path, retrain: str | None) -> None:
    log.info(
        "study %s finished (%s): %d complete, %d pruned, %d failed",
        view.name,
        stopped,
        len(view.complete),
        len(view.pruned),
        len(view.failed),
    )
    best = view.best
    if best is not None:
        log.info("best %s %.4f (trial %d): %s", view.metric, best.values[0], best.number, best.params)
    elif not view.single:
        for t in view.study.best_trials:
            log.info("Pareto trial %d: values %s params %s", t.number, t.values, t.params)
    if retrain:
        log.info("retrain it: %s", retrain)
    log.info("results, plots and report: %s", sweep_dir)


__all__ = ["SweeplabSearchPath", "SweeplabSweeper", "SweeplabSweeperConf"]
