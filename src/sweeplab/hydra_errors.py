"""Config mistakes Hydra meets while composing, as one line, for sweeplab's own entry points and sweeper.

Hydra prints a traceback for a YAML syntax error or a config group set to null on the command line. Its
own functions stay as they are: sweeplab's runners start their app through `run_app`, which receives the
errors of composition and says them in one line, and the sweeper composes its jobs through `composing`.
Any other Hydra app, sweeplab installed or not, reports them as Hydra does.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, ConfigCompositionException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from sweeplab.config import GENERATED_CONF, STUDIES_DIR
from sweeplab.errors import SweeplabError, closest

# Hydra's documented switch: set, it lets an error rise to the caller instead of printing it.
FULL_ERROR = "HYDRA_FULL_ERROR"
_NULL_GROUP = "Config group override must be"
_HINT = "\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"

_lent: list[str | None] = []  # run_app set FULL_ERROR for the composition: the user's value, to hand back


def full_error() -> bool:
    """Whether the user asked for full tracebacks: HYDRA_FULL_ERROR=1, as Hydra reads it (0, or any other
    value, is not set)."""
    return not _lent and os.environ.get(FULL_ERROR) == "1"


def say_and_exit(exc: SweeplabError) -> None:
    """A user-fixable error found after composition (the sweeper's): its one line and exit status 1, as Hydra
    ends a run, without Hydra's hint to set HYDRA_FULL_ERROR under a line that is already whole."""
    sys.stderr.write(str(exc) + os.linesep)
    raise SystemExit(1) from None


def yaml_error_line(exc: BaseException) -> str | None:
    """A YAML syntax error in a config file: the file (relative to the working dir), line and column."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return None
    mark = exc.problem_mark
    where = str(getattr(mark, "name", "") or "<config>").removeprefix(f"{os.getcwd()}/")
    at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
    return f"{where}{at}: YAML syntax error: {problem}"


def null_group_line(exc: BaseException, overrides: Sequence[str]) -> str | None:
    """`search=null` on the command line: Hydra's refusal names neither the group nor the way out."""
    if not isinstance(exc, ValueError) or not str(exc).startswith(_NULL_GROUP):
        return None
    nulls = [o for o in _parsed(overrides) if not o.is_delete() and o.value() is None]
    if not nulls:
        return None
    group = nulls[0].key_or_group
    return (
        f"{nulls[0].input_line}: a config group cannot be set to null on the command line; "
        f"drop it with '~{group}' (quoted for the shell), e.g. to search only the params you pass"
    )


def unknown_key_line(
    exc: BaseException, overrides: Sequence[str], groups: Callable[[], dict[str, list[str]]] = dict
) -> str | None:
    """`trainer.max_epoch=2`: Hydra advises `+`, which adds a key nothing reads; name the closest key, or
    the config group a top-level name misspells (`optimiser=adamw`)."""
    cause = exc.__cause__
    if not isinstance(exc, ConfigCompositionException) or not isinstance(
        cause, ConfigAttributeError | ConfigKeyError
    ):
        return None
    full_key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if not full_key or not isinstance(parent, DictConfig):
        return None
    given = next((o.input_line for o in _parsed(overrides) if o.key_or_group == full_key), full_key)
    prefix, _, name = full_key.rpartition(".")
    near = closest(name, [str(k) for k in parent], n=1)
    if not prefix and not _misspells(name, near):
        group = group_line(given, name, groups())
        if group is not None:
            return group
    hint = f" (did you mean {prefix + '.' if prefix else ''}{near[0]}?)" if near else ""
    return f"{given}: no key {full_key} in the config{hint}; a new key (one the app reads) is added with a leading +"


def _misspells(name: str, near: Sequence[str]) -> bool:
    """Whether `near` (closest's answer) holds a key that `name` misspells, not one it only resembles."""
    return bool(near) and difflib.SequenceMatcher(None, name, near[0]).ratio() >= 0.8


_SCHEMA_MERGE = re.compile(r"Error merging '(hydra/sweeper/[^']+)' with schema")


def schema_clash_line(exc: BaseException) -> str | None:
    """sweeplab's sampler or pruner option refused because another installed plugin registers a schema of the
    same name (hydra-optuna-sweeper's `hydra/sweeper/sampler/tpe`, ...), which Hydra checks every config file
    of that name against; without this line the refusal names a key of sweeplab's option as unknown."""
    found = _SCHEMA_MERGE.match(str(exc)) if isinstance(exc, ConfigCompositionException) else None
    if found is None:
        return None
    path = found.group(1)
    from hydra.core.config_store import ConfigStore

    try:
        provider = ConfigStore.instance().load(f"{path}.yaml").provider or "another plugin"
    except Exception:  # nothing stored under that name after all: Hydra's own words stand
        return None
    cause = str(exc.__cause__).splitlines()[0] if exc.__cause__ is not None else "it does not fit"
    stock = provider == "optuna_sweeper"
    return (
        f"{path}: the plugin '{provider}'{' (hydra-optuna-sweeper)' if stock else ''} is installed beside "
        f"sweeplab and registers a schema of the same name, which Hydra checks sweeplab's option against "
        f"({cause}); uninstall it{' (pip uninstall hydra-optuna-sweeper)' if stock else ''}: sweeplab's "
        "sweeper takes its keys and grammar"
    )


def config_groups() -> dict[str, list[str]]:
    """The app's config groups (Hydra's own aside) and their options, from the config loader of the run
    being composed; empty where none is set up."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return {}
    loader = GlobalHydra.instance().config_loader()
    return {g: loader.get_group_options(g) for g in loader.list_groups("") if g != "hydra"}


def group_line(override: str, key: str, groups: dict[str, list[str]]) -> str | None:
    """`optimiser=adamw`, `models=resnet5`: a top-level name that misspells a config group, in one line
    naming the group and its options; None where `key` is a group or near none."""
    if "." in key or key in groups:
        return None
    near = closest(key, groups, n=1)
    if not near:
        return None
    options = ", ".join(groups[near[0]]) or "none"
    return f"{override}: {key} is not a config group (did you mean {near[0]}=...? its options: {options})"


def replaced_section_line(key: str, value: Any) -> str:
    """`models=resnet5`: a section of the config (a mapping) replaced by a plain value on the command line,
    said as the config group its name misspells where it misspells one."""
    given = f"{key}={value}"
    return group_line(given, key, config_groups()) or (
        f"{given}: {key} is a section of the config, not a value; set its keys ({key}.<key>=...)"
    )


def missing_generated_line(exc: BaseException, overrides: Sequence[str]) -> str | None:
    """`preset=optimized/<study>` run from another directory than the study's: the configs a study generates
    are read from studies/conf/ of the directory a command runs in; say where, and how to point at them."""
    found = re.search(r"Could not find '([^']+)/([^'/]+/[^']+)'", str(exc))
    if not isinstance(exc, MissingConfigException) or found is None:
        return None
    group, option = found.groups()
    given = next((o.input_line for o in _parsed(overrides) if o.key_or_group.lstrip("+") == group), None)
    here = Path.cwd() / STUDIES_DIR / GENERATED_CONF
    return (
        f"{given or f'{group}={option}'}: no {group}/{option}.yaml in {here}; a study writes the configs it "
        f"generates under {STUDIES_DIR}/{GENERATED_CONF}/ of the directory it ran from: run this command there, "
        f"or add hydra.searchpath=[file://<that directory>/{STUDIES_DIR}/{GENERATED_CONF}]"
    )


def _parsed(arguments: Sequence[str]) -> list[Any]:
    """The command line's overrides, parsed by Hydra's grammar (flags and their values are not overrides)."""
    parser = OverridesParser.create()
    found = []
    for arg in arguments:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            found += parser.parse_overrides([arg])
        except Exception:  # not an override (a flag's value): Hydra's own parse has said so or will
            continue
    return found


def error_line(
    exc: BaseException, overrides: Sequence[str] = (), groups: Callable[[], dict[str, list[str]]] = dict
) -> str | None:
    """The one line for a composition error sweeplab recognises, else None; `groups`: the app's config groups
    and their options, asked for only where a misspelt key may name a group."""
    return (
        yaml_error_line(exc)
        or schema_clash_line(exc)
        or null_group_line(exc, overrides)
        or unknown_key_line(exc, overrides, groups)
        or missing_generated_line(exc, overrides)
    )


def runner_groups(main: Callable[[], Any]) -> dict[str, list[str]]:
    """The config groups of a runner's `@hydra.main` function, listed afresh from its config path (Hydra has
    put its own away by the time a composition error reaches run_app); empty where they cannot be listed."""
    from hydra import initialize_config_dir, initialize_config_module

    try:
        found = inspect.getclosurevars(main).nonlocals
        path, task = str(found["config_path"]), found["task_function"]
        if path.startswith("pkg://"):
            context = initialize_config_module(path.removeprefix("pkg://"), version_base="1.3")
        else:
            folder = (Path(inspect.getfile(task)).parent / path).resolve()
            context = initialize_config_dir(str(folder), version_base="1.3")
        with context:
            return config_groups()
    except Exception:  # a function that is no @hydra.main of a config dir: no groups to offer
        return {}


@contextmanager
def composing() -> Iterator[None]:
    """Around a composition in sweeplab's own code (the sweeper's jobs): a YAML error is one SweeplabError."""
    try:
        yield
    except Exception as exc:
        line = yaml_error_line(exc) or yaml_error_line(exc.__cause__ or exc)
        if line is None:
            raise
        raise SweeplabError(line) from exc


def run_app(main: Callable[[], Any]) -> None:
    """Start a runner's `@hydra.main` function; a config mistake found while composing is one line, exit 1.

    Hydra lets the composition's errors rise here (FULL_ERROR, unless the user set it for a traceback);
    once the config is composed, `HydraReportsErrors` hands error reporting back to Hydra."""
    if full_error():
        main()
        return
    _lent.append(os.environ.get(FULL_ERROR))
    os.environ[FULL_ERROR] = "1"
    try:
        main()
    except Exception as exc:
        line = error_line(exc, sys.argv[1:], lambda: runner_groups(main))
        if line is not None:
            sys.stderr.write(line + os.linesep)
        elif isinstance(exc, CompactHydraException):  # as Hydra prints it
            sys.stderr.write(str(exc) + os.linesep)
            if isinstance(exc.__cause__, OmegaConfBaseException):
                sys.stderr.write(str(exc.__cause__) + os.linesep)
            sys.stderr.write(_HINT)
        else:
            raise
        sys.exit(1)
    finally:
        hand_back()


def hand_back() -> None:
    """Hydra reports errors itself again (a job's, the sweeper's), as it does for any app."""
    if _lent:
        users = _lent.pop()
        if users is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = users


class HydraReportsErrors(Callback):
    """In sweeplab's root configs: the config is composed, so errors from here on are Hydra's to print."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        hand_back()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hand_back()
