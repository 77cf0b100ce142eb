"""The Hydra plugin: the sweeper, its typed config, and the search path of its sampler/pruner configs.

Select it with `override hydra/sweeper: sweeplab`. Its keys are a superset of hydra-optuna-sweeper's
(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, params,
custom_search_space) with the same meaning. `SweeplabSweeperConf` is the one place each key's type,
default and range are written; the study itself is run by `sweeplab.search` (plan → loop → executors).

Hydra's plugin scan executes this module again when it was imported before (sweeplab's own modules
import it), so its classes may exist twice: nothing may test an object against them with isinstance.
"""

import functools
import inspect
import logging
import os
import re
from collections.abc import Callable
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

from sweeplab.errors import SweeplabError, config_error

log = logging.getLogger("sweeplab.sweep")

DIRECTIONS = ("minimize", "maximize")
# Where studies keep their files, relative to the directory a command is started from: the default
# SQLite storage, and the configs a finished study generates under studies/conf/ (presets, focused spaces).
STUDIES_DIR = "studies"
GENERATED_CONF = "conf"
# The smallest heartbeat interval: SQLite stores heartbeats to the second and a busy sweep may write one a
# second or two late, so a shorter grace period (two intervals) could take a live trial for dead.
MIN_HEARTBEAT_S = 5
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


class SweeplabSweeper(Sweeper):
    """Runs `python app.py -m ...` as an Optuna study; each trial is one Hydra job."""

    def __init__(self, **keys: Any) -> None:
        # `hydra.sweeper` as Hydra passes it (resolved, typed by SweeplabSweeperConf). The plan makes the
        # dataclass of it inside sweep(): there a key Hydra let through (`+hydra.sweeper.x=1`) fails as one
        # line, where an error raised here would reach the user wrapped in Hydra's instantiation message.
        self.keys = keys
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
        from sweeplab.search.liveness import release_sweep_dir
        from sweeplab.search.loop import run_study
        from sweeplab.search.plan import QUIET_CONSOLE, make_plan

        assert self.config is not None
        root_dir = str(self.config.hydra.runtime.cwd)
        plan = make_plan(
            self.keys, self.config, arguments, self._group_options, root_dir=root_dir, compose=self._compose
        )
        sweep_dir = self._claim_sweep_dir()
        if QUIET_CONSOLE in plan.hydra_overrides:  # the basic launcher's "Launching"/"#n : ..." lines too
            logging.getLogger("hydra._internal.core_plugins.basic_launcher").setLevel(logging.WARNING)
        try:
            executor = self._executor(plan.conf)
            self._hide_password(plan.storage_url)
            try:
                study, stopped = run_study(plan, executor)
            except KeyboardInterrupt:  # the loop has said what it stopped; no traceback, the shell's status
                raise SystemExit(EXIT_INTERRUPTED) from None
            return self._results(study, plan, stopped, root_dir)
        finally:
            release_sweep_dir(sweep_dir)

    def _claim_sweep_dir(self) -> Path:
        """This sweep's own `hydra.sweep.dir` (see `claim_sweep_dir`), set where the launcher and jobs read it;
        `latest` beside it points at it."""
        from sweeplab.search.liveness import claim_sweep_dir, link_latest
        from sweeplab.search.space import format_value

        assert self.config is not None
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

    def _results(self, study: Any, plan: Any, stopped: str, root_dir: str) -> Any:
        """The sweep has ended: result files, and with `report`, plots, report.md/html and the preset."""
        from sweeplab.reporting import StudyView, write_study_report
        from sweeplab.reporting.export import Flattener
        from sweeplab.reporting.files import write_files
        from sweeplab.search.storage import masked

        assert self.config is not None
        view = StudyView(study, masked(plan.storage_url))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        retrain = None
        if plan.conf.report:
            report = write_study_report(view, sweep_dir, Flattener(self._compose, plan.script), root_dir)
            retrain = report.retrain
        else:
            write_files(view, sweep_dir, retrain=None)
        _log_summary(view, stopped, sweep_dir, retrain)
        return view

    def _hide_password(self, url: str) -> None:
        """Jobs get a password-carrying storage URL through the environment, never through saved overrides."""
        from sweeplab.search.space import override_key
        from sweeplab.search.storage import STORAGE_ENV, has_password

        if not has_password(url):
            return
        assert self.config is not None
        os.environ[STORAGE_ENV] = url  # inherited by worker processes and read by in-process jobs
        kept = [o for o in self.config.hydra.overrides.hydra if override_key(o) != "hydra.sweeper.storage"]
        with read_write(self.config.hydra.overrides):
            self.config.hydra.overrides.hydra = [*kept, f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"]

    def _executor(self, conf: "SweeplabSweeperConf") -> Any:
        """Worker processes for n_jobs > 1 under the basic launcher; batches through the launcher otherwise
        (in this process for the basic launcher, elsewhere for SLURM and the like)."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from sweeplab.search.executors import LauncherBatches, ProcessPool, assign_devices, visible_devices

        if conf.n_jobs == 1 or not isinstance(self.launcher, BasicLauncher):
            return LauncherBatches(self.launcher.launch, conf.n_jobs)
        assert self.hydra_context is not None and self.task_function is not None and self.config is not None
        slots = assign_devices(conf.n_jobs, visible_devices(), conf.share_gpus)
        log.info(
            "%d workers: %s",
            conf.n_jobs,
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
        """The options of config group `name`, those of its nested groups included (`search=focused/<study>`)."""
        assert self.hydra_context is not None
        loader = self.hydra_context.config_loader

        def options(group: str) -> list[str]:
            found = list(loader.get_group_options(group))
            for sub in loader.list_groups(group):
                found += [f"{sub}/{o}" for o in options(f"{group}/{sub}")]
            return found

        return options(name.replace(".", "/")) or None


def _log_summary(view: Any, stopped: str, sweep_dir: Path, retrain: str | None) -> None:
    from sweeplab.search.records import counted, state_counts

    counts = state_counts(counted(view.trials))
    uncounted = sum(t.state.is_finished() for t in view.trials) - sum(counts.values())
    log.info(
        "study %s finished (%s): %d complete, %d pruned, %d failed%s",
        view.name,
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
    log.info("results, plots and report: %s", sweep_dir)


# `_target_` of the sweeper: how a job or a callback knows it runs inside a sweeplab study.
TARGET = f"{SweeplabSweeper.__module__}.{SweeplabSweeper.__qualname__}"


@dataclass
class StopConf:
    # stop after this many finished trials without a new best (improvement > min_delta)
    patience: int | None = None
    min_delta: float = 0.0
    # stop once the best value reaches this (in the study's direction)
    target: float | None = None

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise config_error("hydra.sweeper.stop.patience", self.patience, "must be at least 1, or null")


@dataclass
class QuickValidationConf:
    """Applied to every trial of a study, never to single runs: fewer epochs, a batch size, part of the data."""

    enabled: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    train_fraction: float | None = None
    # k: every trial trains k models on stratified folds (data.folds=k); its value is their mean
    folds: int | None = None

    def __post_init__(self) -> None:
        key = "hydra.sweeper.quick_validation"
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise config_error(f"{key}.{name}", value, "must be at least 1")
        if self.folds is not None and self.folds < 2:
            raise config_error(
                f"{key}.folds",
                self.folds,
                "must be an integer >= 2 (k-fold), or null for one train/val split",
            )
        if self.train_fraction is not None and not 0.0 < self.train_fraction <= 1.0:
            raise config_error(f"{key}.train_fraction", self.train_fraction, "must lie in (0, 1]")


@dataclass
class GuardConf:
    """Rules that veto the pruner (`sweeplab.search.pruning`); all off here, on in hparams_search=optuna."""

    leader: bool = False  # never prune the best value any trial reported at this step
    margin: float | None = None  # ... nor one within this of the best finished trial's value
    threshold: float | None = None  # ... nor one past this absolute value (in the study's direction)

    def __post_init__(self) -> None:
        if self.margin is not None and self.margin < 0:
            raise config_error(
                "hydra.sweeper.guard.margin", self.margin, "must be a number >= 0, or null (off)"
            )


@dataclass
class RescueConf:
    top_k: int = 0  # after n_trials: run the k best-ranked pruned trials again, unpruned, as new trials

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise config_error("hydra.sweeper.rescue.top_k", self.top_k, "must be an integer >= 0")


@dataclass
class PauseConf:
    """A pruned trial keeps the checkpoint of the epoch it was pruned at, so a rescue resumes it there."""

    # how many paused checkpoints are kept (the best-ranked at their prune step, as rescue ranks them);
    # null: rescue.top_k, 0: none (a rescue then trains from scratch)
    keep: int | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise config_error("hydra.sweeper.pause.keep", self.keep, "must be an integer >= 0, or null")


@dataclass
class SweeplabSweeperConf:
    _target_: str = TARGET
    _recursive_: bool = False  # sampler and pruner are built by the sweeper, after its checks
    # _self_ first: the chosen sampler/pruner configs fill the `sampler`/`pruner` keys below
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])

    # --- the stock plugin's keys, same meaning ---
    sampler: Any = None
    direction: Any = "minimize"  # or a list of them, one per objective
    storage: Any = None  # null: sqlite:///<cwd>/studies/<study_name>.db
    study_name: str | None = None  # null: the app's job name (hydra.job.name) + study_suffix
    n_trials: int = 20  # the study's total, counted across reruns and workers
    n_jobs: int = 1  # trials at once; > 1 with the basic launcher: one process per trial, no batch barrier
    max_failure_rate: float = 0.0
    search_space: Any = None  # removed from the stock plugin; refused with a pointer to `params`
    params: dict[str, str] | None = None
    custom_search_space: str | None = None

    # --- sweeplab's own ---
    # a function (cfg) -> None that raises where the app's job would reject its config before training;
    # called on the configurations the space can produce, before the study is created or written to
    check: str | None = None
    pruner: Any = None
    # params only some trials get: {parent key: {value: {param: sweep or value}}}, e.g. ConvNeXt's layer
    # scale only when model=convnext_tiny (see conf/search/families.yaml)
    conditional: Any = None
    guard: GuardConf = field(default_factory=GuardConf)
    # staged search: {from: <earlier study>} searches the space narrowed around its top trials
    focus: dict[str, Any] = field(default_factory=dict)  # {} or {from: <study>}
    rescue: RescueConf = field(default_factory=RescueConf)
    pause: PauseConf = field(default_factory=PauseConf)
    study_suffix: str = ""
    timeout: float | None = None  # seconds for this invocation of the study
    stop: StopConf = field(default_factory=StopConf)
    quick_validation: QuickValidationConf = field(default_factory=QuickValidationConf)
    allow_space_change: bool = False
    # seconds between the heartbeats a sweep records for its running trials; a trial silent for 2 intervals
    # (its sweep or machine died) is failed and re-run by any sweep on the storage
    heartbeat_interval: int | None = 60
    # true: start the next n_jobs trials only when the whole batch has ended (the stock plugin's way)
    synchronous: bool = False
    share_gpus: bool = False  # allow n_jobs > visible GPUs (workers i and i+g share GPU i)
    # at the end: plots, report.md/html and the best trial as preset=optimized/<study> (result files always)
    report: bool = True

    def __post_init__(self) -> None:
        """Each key's range; the rules that tie keys to each other or to the job config are in the plan."""
        key = "hydra.sweeper"
        if self.search_space:
            raise config_error(
                f"{key}.search_space",
                "...",
                "was removed from the stock plugin (Hydra 1.2); write the space in hydra.sweeper.params "
                "in the sweep grammar, e.g. x: interval(-5.5, 5.5), y: choice(-5, 0, 5)",
            )
        for name in ("n_trials", "n_jobs"):
            if getattr(self, name) < 1:
                raise config_error(f"{key}.{name}", getattr(self, name), "must be an integer >= 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise config_error(f"{key}.max_failure_rate", self.max_failure_rate, "must lie in [0, 1]")
        if self.timeout is not None and self.timeout <= 0:
            raise config_error(f"{key}.timeout", self.timeout, "must be a number of seconds > 0, or null")
        if self.heartbeat_interval is not None and self.heartbeat_interval < MIN_HEARTBEAT_S:
            raise config_error(
                f"{key}.heartbeat_interval",
                self.heartbeat_interval,
                f"must be a whole number of seconds >= {MIN_HEARTBEAT_S} (the minimum: a shorter one could "
                "take a live trial for dead), or null (no heartbeats)",
            )
        if not self.directions:
            raise config_error(
                f"{key}.direction", self.direction, "give minimize or maximize, or a list of them"
            )
        for d in self.directions:
            if d not in DIRECTIONS:
                raise config_error(f"{key}.direction", d, "allowed: minimize, maximize (or a list of them)")
        unknown = sorted(set(self.focus) - {"from"})
        if unknown:
            raise config_error(f"{key}.focus.{unknown[0]}", self.focus[unknown[0]], "allowed keys: from")

    @property
    def paused_kept(self) -> int:
        """How many paused checkpoints the study keeps: pause.keep, else as many as rescue can resume."""
        return self.pause.keep if self.pause.keep is not None else self.rescue.top_k

    @property
    def directions(self) -> list[str]:
        """`direction` as a list, one lower-case name per objective."""
        items = list(self.direction) if isinstance(self.direction, list | tuple) else [self.direction]
        return [str(getattr(d, "name", d)).lower() for d in items]


ConfigStore.instance().store(
    group="hydra/sweeper", name="sweeplab", node=SweeplabSweeperConf, provider="sweeplab"
)


class SweeplabSearchPath(SearchPathPlugin):
    """Adds `hydra/sweeper/{sampler,pruner}/*` (YAML beside this file) and the configs studies generate.

    Exported presets and focused search spaces are written to `<cwd>/studies/conf/<group>/...`; with
    this path, `preset=optimized/<study>` works from the same directory without copying files.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="sweeplab", path="pkg://hydra_plugins.sweeplab_sweeper.conf")
        search_path.append(provider="sweeplab-studies", path=f"file://{generated_conf_dir(Path.cwd())}")


Translate = Callable[[dict[str, Any], Exception], str | None]


def _in_one_line(owner: Any, name: str, translate: Translate) -> None:
    """Wrap Hydra's `owner.name` so that an error `translate` recognises (given the call's arguments by
    name) becomes one SweeplabError line, where Hydra would print a traceback. Once only: Hydra's plugin
    scan imports this module again."""
    original = getattr(owner, name)
    if getattr(original, "_one_line", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            line = translate(signature.bind(*args, **kwargs).arguments, exc)
            if line is None:
                raise
            raise SweeplabError(line) from exc

    wrapped._one_line = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapped)


def _yaml_error(call: dict[str, Any], exc: Exception) -> str | None:
    """A YAML syntax error in any config file: the file, line and column."""
    import yaml

    if not isinstance(exc, yaml.MarkedYAMLError):
        return None
    mark, source = exc.problem_mark, call["self"]
    where = f"{source.path}/{source._normalize_file_name(call['config_path'])}".removeprefix(
        f"{os.getcwd()}/"
    )
    at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    return f"{where}{at}: YAML syntax error: {problem}"


def _null_group(call: dict[str, Any], exc: Exception) -> str | None:
    """`search=null` on the command line: Hydra's refusal names neither the group nor the way out."""
    nulls = [o for o in call["overrides_list"] if not o.is_delete() and o.value() is None]
    if (
        not isinstance(exc, ValueError)
        or not nulls
        or not str(exc).startswith("Config group override must be")
    ):
        return None
    group = nulls[0].key_or_group
    return (
        f"{nulls[0].input_line}: a config group cannot be set to null on the command line; "
        f"drop it with '~{group}' (quoted for the shell), e.g. to search only the params you pass"
    )


def _hydra_errors_in_one_line() -> None:
    """Plugin discovery imports this module before any config is loaded or override parsed."""
    from hydra._internal import defaults_list
    from hydra._internal.core_plugins.file_config_source import FileConfigSource
    from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource

    for source in (FileConfigSource, ImportlibResourcesConfigSource):
        _in_one_line(source, "load_config", _yaml_error)
    _in_one_line(defaults_list.Overrides, "__init__", _null_group)


_hydra_errors_in_one_line()


def study_name(configured: str | None, job_name: str | None, suffix: str) -> str:
    """The study a sweep runs: `hydra.sweeper.study_name`, else the app's job name plus `study_suffix`."""
    return str(configured or f"{job_name or 'sweeplab'}{suffix}")


def _study_dir(base: str, *, _root_: DictConfig) -> str:
    """`${sweeplab.study_dir:<base>}`: `<base>/<study>` while a sweeplab study runs, `<base>` for any other
    run or multirun; for `hydra.sweep.dir`, so that each study's sweeps share a folder of their own."""
    hydra = _root_.get("hydra")
    sweeper = hydra.get("sweeper") if hydra is not None else None
    if sweeper is None or sweeper.get("_target_") != TARGET:
        return base
    name = study_name(sweeper.get("study_name"), hydra.job.get("name"), sweeper.get("study_suffix") or "")
    return f"{base}/{path_safe(name)}"


def path_safe(name: str) -> str:
    """A study name as one file or folder name (Hydra reads `.` and `/` in option names as structure)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "study"


OmegaConf.register_new_resolver("sweeplab.study_dir", _study_dir, replace=True)


def generated_conf_dir(root_dir: str | os.PathLike) -> Path:
    """`<root_dir>/studies/conf`: the config groups a study writes (presets, focused spaces)."""
    return Path(root_dir).resolve() / STUDIES_DIR / GENERATED_CONF


__all__ = [
    "TARGET",
    "SweeplabSearchPath",
    "SweeplabSweeper",
    "SweeplabSweeperConf",
    "path_safe",
    "study_name",
]
