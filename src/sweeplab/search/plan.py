"""`hydra.sweeper` and the composed job config → a checked `SweepPlan`, before anything touches a storage.

Types, defaults and each key's range come from the schema (`SweeplabSweeperConf`); here are the rules
that tie keys to each other or to the job config: directions against the objectives the job returns,
the search space against the config's keys and groups, the sampler against the space, the storage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from sweeplab.config import typed
from sweeplab.errors import SweeplabError, config_error, one_line
from sweeplab.launching.interrupts import stop_signals_blocked
from sweeplab.search.naming import path_safe, study_name
from sweeplab.search.pruning import build_pruner, build_sampler
from sweeplab.search.records import ranked, searched_space
from sweeplab.search.schema import SweeplabSweeperConf
from sweeplab.search.space import SearchSpace, focused_space, format_value, override_key, qualified
from sweeplab.search.storage import load_study, masked_argument, resolve_storage
from sweeplab.search.trial import TrialAddress, address_in

Compose = Callable[[list[str]], DictConfig]  # overrides → the job config with its `hydra` node
_ABSENT = object()


@dataclass(frozen=True)
class Focus:
    """Staged search: the earlier study, the space narrowed around its top trials, and its best params."""

    study_name: str
    space: dict[str, str]
    best_params: dict[str, Any]


@dataclass
class SweepPlan:
    """Everything a study needs, checked: the sweeper's typed config and what was derived from it."""

    conf: SweeplabSweeperConf
    study_name: str
    storage_url: str
    space: SearchSpace
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    quick_overrides: list[str]  # quick_validation as overrides of every trial (never of single runs)
    custom_search_space: Callable[[optuna.Trial], None] | None  # the stock hook, given its config
    script: str  # the app's script, relative to where the sweep was started
    config_name: str
    metrics: list[str]  # what each objective is: optimized_metric, *extra_objectives
    command: list[str]  # the sweep's command-line arguments, any password in a URL masked
    focus: Focus | None  # staged search: the earlier study and its narrowed space
    # Hydra overrides every job gets (not stored with its trial): a quiet console, see `_quiet_console`
    hydra_overrides: list[str] = field(default_factory=list)
    # what every trial runs with beside its params (see `fixed_settings`): a stored study with others is
    # not continued by this sweep
    fixed: dict[str, str] = field(default_factory=dict)
    # this setup's own study, where the default one holds another: `<default name>-<setup_id>`
    setup_id: str = ""
    config_dir: str | None = None  # the app's primary config dir (`file://...`, `pkg://...`), for reports

    @property
    def derived_name(self) -> str:
        """The study this setup runs when the default study holds another setup (no `study_name` given)."""
        return f"{self.study_name}-{self.setup_id}"

    @property
    def directions(self) -> list[str]:
        return self.conf.directions

    @property
    def n_trials(self) -> int:
        return self.conf.n_trials

    @property
    def n_jobs(self) -> int:
        return self.conf.n_jobs

    def trial_address(self, number: int) -> TrialAddress:
        """Where trial `number`'s job finds its trial, as the sweep hands it to a job it launches."""
        sweeper = OmegaConf.structured(self.conf)
        return address_in(sweeper, self.study_name, number, self.storage_url)


def make_plan(
    sweeper: SweeplabSweeperConf | DictConfig | Mapping[str, Any],
    config: DictConfig,
    arguments: Sequence[str],
    group_options: Callable[[str], list[str] | None],
    root_dir: str,
    compose: Compose | None = None,
) -> SweepPlan:
    """Check `hydra.sweeper` (its keys as Hydra passes them, the node as Hydra composed it, or the dataclass)
    and the search space against `config`, the app's composed config with its `hydra` node; raise one line
    on the first problem.

    Any Hydra app can be swept: the only keys of the app's config read here are Hydra's own
    (`hydra.job.name`, `hydra.job.config_name`), plus sweeplab's train keys where an app defines them
    (`optimized_metric`, `optimized_mode`, `extra_objectives`: then the directions must agree with them).
    `compose` (the sweeper's config loader) recomposes the job config for a conditional branch's group
    choice, so that its keys are checked where they exist (ConvNeXt's `ls_init_value` under model=convnext)."""
    conf = typed(SweeplabSweeperConf, sweeper, "hydra.sweeper")
    job_cfg = _job_config(config)
    metrics = _objectives(conf.directions, job_cfg)
    if conf.stop.target is not None and len(conf.directions) > 1:
        raise config_error("hydra.sweeper.stop.target", conf.stop.target, "needs a single-objective study")

    focus = _focus(conf, root_dir)
    space = _space(conf, focus, arguments, job_cfg, group_options, compose)
    quick_overrides = _quick_overrides(conf, job_cfg, space.keys())
    if conf.check:
        check_configurations(conf.check, space, quick_overrides, compose)

    hydra_job = config.hydra.job
    name = study_name(conf.study_name, hydra_job.get("name"), conf.study_suffix)
    fixed = fixed_settings(conf, space)
    return SweepPlan(
        conf=conf,
        study_name=name,
        storage_url=resolve_storage(conf.storage, name, root_dir),
        space=space,
        sampler=build_sampler(conf.sampler, space.grid if _is_grid(conf.sampler) else None),
        pruner=build_pruner(conf.pruner, conf.guard),
        quick_overrides=quick_overrides,
        custom_search_space=_custom_search_space(conf, config),
        script=_script(),
        config_name=str(hydra_job.get("config_name") or "config"),
        metrics=metrics,
        command=[masked_argument(a) for a in sys.argv[1:]],
        focus=focus,
        hydra_overrides=_quiet_console(config),
        fixed=fixed,
        setup_id=_setup_id(fixed, space, conf.directions, config),
        config_dir=_config_dir(config),
    )


# Command-line keys that choose how to search, not what a trial runs: `hparams_search` picks the sweeper's
# settings (its budget part, quick validation, is compared on its own; the space is compared as a space).
SEARCH_CHOICES = ("hparams_search",)


def fixed_settings(conf: SweeplabSweeperConf, space: SearchSpace) -> dict[str, str]:
    """What every trial runs with beside its searched params, by key: the fixed overrides of the command
    line and of `hydra.sweeper.params` (experiment choices, `trainer.max_epochs=5`, `~debug`), the fixed
    values of conditional branches, and quick validation. Two sweeps with other fixed settings measure
    other things, so their trials never share a study silently. Not compared: `hparams_search` and the
    run-control keys (n_trials, n_jobs, timeout, storage, sampler, pruner, ...), which a continued study
    may change."""
    out = {
        key.lstrip("+"): value
        for key, value in space.fixed.items()
        if override_key(key) not in SEARCH_CHOICES and not override_key(key).startswith("hydra.")
    }
    for parent, branches in space.conditional.items():
        for when, branch in branches.items():
            out.update({qualified(k.lstrip("+"), parent, when): v for k, v in branch.fixed.items()})
    quick = conf.quick_validation
    if quick.enabled:
        for name in QUICK_KEYS:
            if getattr(quick, name) is not None:
                out[f"hydra.sweeper.quick_validation.{name}"] = format_value(getattr(quick, name))
    return dict(sorted(out.items()))


def _setup_id(fixed: dict[str, str], space: SearchSpace, directions: list[str], config: DictConfig) -> str:
    """A short name for a sweep's setup, the same for every run of the same command (whatever its
    n_trials): the group options it picks on the command line (`experiment=wide` → `wide`), then a hash
    of its fixed settings, space and directions."""
    groups = config.hydra.runtime.get("choices") or {}
    picked = [v for k, v in fixed.items() if k in groups and not k.startswith("~") and v != "null"]
    digest = json.dumps({"fixed": fixed, "space": space.to_json(), "directions": directions}, sort_keys=True)
    label = path_safe("_".join(picked))[:40] if picked else ""
    return f"{label}-{hashlib.sha1(digest.encode()).hexdigest()[:6]}".lstrip("-")


def _config_dir(config: DictConfig) -> str | None:
    """The app's primary config dir as Hydra found it (`file:///...`, `pkg://...`): a report composes the
    app's own config from it, whichever app it is."""
    for source in OmegaConf.select(config, "hydra.runtime.config_sources", default=None) or []:
        if source.get("provider") == "main" and source.get("path"):
            return f"{source.schema}://{source.path}"
    return None


def _space(
    conf: SweeplabSweeperConf,
    focus: Focus | None,
    arguments: Sequence[str],
    job_cfg: DictConfig,
    group_options: Callable[[str], list[str] | None],
    compose: Compose | None,
) -> SearchSpace:
    """The search space, its keys checked against the job config (and a conditional one's branches)."""
    # a focused study searches the narrowed space of the earlier one (plus the command line's params)
    space = SearchSpace.parse(
        focus.space if focus else conf.params, arguments, None if focus else conf.conditional
    )
    space.check_keys(job_cfg, group_options)
    if space.conditional:
        space.check_branches(job_cfg, group_options, compose)
        space.defaults = _parent_defaults(space, job_cfg, compose)
        if _is_grid(conf.sampler):
            raise config_error(
                "hydra.sweeper.sampler",
                "grid",
                "runs one fixed grid and cannot sample hydra.sweeper.conditional; use tpe, random, qmc, ...",
            )
    return space


QUIET_CONSOLE = "++hydra.job_logging.handlers.console.level=WARNING"


def _quiet_console(config: DictConfig) -> list[str]:
    """A study's console shows one status line per trial: whatever a job writes to its console goes to its
    worker.log (`executors.output_to`, any app). Where its job logging has Hydra's `console` handler, that
    handler is set to warnings, so that sweeplab's own train app also leaves out its progress bar
    (`training.build.quiet_console`). `hydra.verbose=true` keeps the jobs' consoles as they are."""
    if config.hydra.get("verbose") or OmegaConf.select(config, "hydra.job_logging.handlers.console") is None:
        return []
    return [QUIET_CONSOLE]


def _objectives(directions: list[str], job_cfg: DictConfig) -> list[str]:
    """What each objective is called. An app that names its objectives the way sweeplab's train config does
    (`optimized_metric`, `extra_objectives`, `optimized_mode`) has them checked against the directions;
    any other app's objectives are `value` (`value_0`, `value_1`, ... for several), and the number of
    values its task returns is checked when each trial ends, as the stock plugin does."""
    names = [f"value_{i}" for i in range(len(directions))] if len(directions) > 1 else ["value"]
    if "extra_objectives" in job_cfg:
        extra = [str(x) for x in job_cfg.extra_objectives or []]
        metric = str(job_cfg.get("optimized_metric", "value"))
        if len(directions) != 1 + len(extra):
            raise config_error(
                "hydra.sweeper.direction",
                directions,
                f"gives {len(directions)} direction(s) but each trial returns {1 + len(extra)} value(s) "
                f"(optimized_metric plus extra_objectives={extra})",
            )
        names = [metric, *extra]
    if "optimized_mode" in job_cfg:
        mode = str(job_cfg.optimized_mode)
        if directions[0] != f"{mode}imize":
            raise config_error(
                "hydra.sweeper.direction",
                directions[0],
                f"contradicts optimized_mode={mode} (checkpoints keep the {mode} of "
                f"{job_cfg.get('optimized_metric')}); set both the same way",
            )
    if "optimized_metric" in job_cfg and len(directions) == 1:
        names = [str(job_cfg.optimized_metric)]
    return names


def _job_config(config: DictConfig) -> DictConfig:
    """The app's config without its `hydra` node: what the app's task receives."""
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def _is_grid(sampler: Any) -> bool:
    return str((sampler or {}).get("_target_", "")).endswith("GridSampler")


def _focus(conf: SweeplabSweeperConf, root_dir: str) -> Focus | None:
    """`hydra.sweeper.focus.from=<study>`: read the earlier study (same storage) before anything is written."""
    source = conf.focus.get("from")
    if not source:
        return None
    url = resolve_storage(conf.storage, str(source), root_dir)
    study = load_study(str(source), url, key="hydra.sweeper.focus.from")
    trials = study.get_trials(deepcopy=False)
    best_first = ranked(trials, study.directions[0])
    space = focused_space(searched_space(study, trials), best_first) if len(study.directions) == 1 else None
    if space is None:
        raise config_error(
            "hydra.sweeper.focus.from",
            source,
            f"needs a single-objective study with at least 2 complete trials; it has {len(best_first)}",
        )
    return Focus(str(source), space, dict(best_first[0].params))


# quick_validation's keys and the keys of sweeplab's train config each one sets (`++`: added if absent)
QUICK_KEYS = {
    "epochs": "trainer.max_epochs",
    "batch_size": "data.batch_size",
    "folds": "data.folds",
    "train_fraction": "++trainer.limit_train_batches",
}


def _quick_overrides(conf: SweeplabSweeperConf, job_cfg: DictConfig, searched: set[str]) -> list[str]:
    """`quick_validation` as overrides of every trial's training (never of single runs); each must name a
    key (or, for `++`, a node) of the app's config: they are sweeplab's train config's. A key the space
    samples or fixes (`searched`) is the space's: quick validation leaves it, and does not claim it."""
    quick = conf.quick_validation
    if not quick.enabled:
        return []
    out = []
    for name, target in QUICK_KEYS.items():
        value = getattr(quick, name)
        if value is None:
            continue
        key = override_key(target)
        if key in searched:
            continue
        where = key.rsplit(".", 1)[0] if target.startswith("++") else key
        if OmegaConf.select(job_cfg, where, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise config_error(
                f"hydra.sweeper.quick_validation.{name}",
                value,
                f"sets {key}, which this app's config does not have (quick validation is for "
                "sweeplab's train config); set the app's own keys in hydra.sweeper.params instead",
            )
        out.append(f"{target}={value}")
    return out


def check_configurations(
    hook_path: str, space: SearchSpace, quick: list[str], compose: Compose | None
) -> None:
    """Run the app's check (`hydra.sweeper.check`) on the configurations the study can produce, before
    anything is written: every choice of each categorical param and both ends of each numeric one, the
    others at their first choice or lower end, with the fixed values and quick validation. A config error
    would otherwise surface in a trial, after the study was created."""
    try:
        hook = get_method(hook_path)
    except Exception as exc:
        raise config_error("hydra.sweeper.check", hook_path, f"cannot import it: {exc}") from None
    if compose is None:
        return
    ends = {name: _ends(dist) for name, dist in space.distributions.items()}
    first = {name: values[0] for name, values in ends.items()}
    variants: list[dict[str, Any]] = [first]
    for name, values in ends.items():
        variants += [{**first, name: v} for v in values[1:]]
    for params in variants:
        overrides = [*quick, *space.overrides(params)]
        cfg = compose(overrides)
        job_cfg = _job_config(cfg)
        try:
            with stop_signals_blocked():  # Ctrl-C reaches the main thread, not torch's pool
                hook(job_cfg)
        except SweeplabError as exc:
            raise SweeplabError(
                f"{exc} (found before the study started, in a trial with {_as_applied(overrides)})"
            ) from None
        except Exception as exc:
            raise SweeplabError(
                f"hydra.sweeper.check={hook_path}: {one_line(exc)} (in a trial with {_as_applied(overrides)})"
            ) from None


def _as_applied(overrides: list[str]) -> str:
    """A trial's overrides as Hydra applies them: each key once, with its last value (quick validation's
    `data.batch_size=32` and the space's own, say, are one)."""
    last = {override_key(o): o for o in overrides}
    return " ".join(last.values())


def _ends(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    low, high = dist.low, dist.high  # type: ignore[attr-defined]
    return [low, high] if high != low else [low]


def _parent_defaults(space: SearchSpace, job_cfg: DictConfig, compose: Compose | None) -> dict[str, str]:
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


def _custom_search_space(
    conf: SweeplabSweeperConf, config: DictConfig
) -> Callable[[optuna.Trial], None] | None:
    """The stock hook `custom_search_space(cfg, trial)`, given the app's whole config (its `hydra` node
    included), as the stock plugin gives it."""
    if not conf.custom_search_space:
        return None
    try:
        hook = get_method(conf.custom_search_space)
    except Exception as exc:
        raise config_error(
            "hydra.sweeper.custom_search_space", conf.custom_search_space, f"cannot import it: {exc}"
        ) from None
    return functools.partial(hook, config)


def _script() -> str:
    argv0 = Path(sys.argv[0])
    try:
        return str(argv0.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(argv0)
