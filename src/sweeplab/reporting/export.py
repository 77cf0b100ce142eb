"""A trial as configs and commands: the preset that retrains it exactly, a focused search config, command lines.

A trial's config is recomposed from its stored overrides (without quick validation) and flattened into
the training groups' choices plus the values that differ from those groups' files. Written under
`<cwd>/studies/conf/`, which sweeplab's own root configs list in `hydra.searchpath`; for any other app
the printed commands (and the checks here) carry that search path as an override, so
`preset=optimized/<study>` and `search=focused/<study>` work without copying files.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from sweeplab.errors import SweeplabError
from sweeplab.search.naming import GENERATED_SEARCHPATH, generated_conf_dir, path_safe
from sweeplab.search.space import format_value, override_key
from sweeplab.search.view import full_overrides

log = logging.getLogger(__name__)

# Groups that shape a sweep, not a training run: never part of an exported config.
SWEEP_GROUPS = ("preset", "search", "hparams_search")
PRESET_GROUP = "optimized"
FOCUSED_GROUP = "focused"

# overrides → the composed config with its `hydra` node (Hydra's config loader, in the sweeper or a runner)
Composer = Callable[[list[str]], DictConfig]


def python() -> str:
    """The interpreter running now (the study's, or the report runner's), as printed commands call it:
    relative to the working dir when inside it (`.venv/bin/python`), never resolved through the venv's
    symlink (that would leave the venv)."""
    if not sys.executable:
        return "python"
    path = Path(os.path.abspath(sys.executable))
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def command_line(script: str, *args: str) -> str:
    """`<python> <script> <args>`, quoted for the shell: every command sweeplab prints."""
    return shlex.join([python(), script, *args])


@dataclass
class FlatConfig:
    """A composed training config as group choices plus the leaves that differ from those groups' files."""

    choices: dict[
        str, str
    ]  # the groups the config takes, each with its option (a null or deleted group: absent)
    values: dict[str, Any]
    added: set[str] = field(default_factory=set)  # keys no group file has (set with a leading +)
    # the group overrides that make the app's config take `choices`: `g=c`, `+g=c` (a group its defaults
    # list lacks), `~g` (a group the trial dropped); none for a group left as the app's defaults have it
    choice_overrides: list[str] = field(default_factory=list)
    job: dict[str, Any] = field(default_factory=dict)  # the whole job config, unresolved


class Flattener:
    """Recomposes trials with one config loader; the root config's own choices are composed once."""

    def __init__(self, compose: Composer, script: str = "runners/train.py") -> None:
        self._compose = compose
        self.script = script
        self._flat: dict[
            tuple[str, ...], FlatConfig
        ] = {}  # the preset and the focused space flatten the best trial

    @cached_property
    def _root(self) -> DictConfig:
        """The app's config composed without overrides."""
        return self._compose([])

    @cached_property
    def searchpath(self) -> list[str]:
        """The override that makes the generated configs options of the app: none for an app whose search
        path lists them (sweeplab's own root configs do)."""
        listed = [str(p) for p in self._root.hydra.searchpath]
        if GENERATED_SEARCHPATH in listed:
            return []
        return [f"hydra.searchpath=[{','.join([*listed, GENERATED_SEARCHPATH])}]"]

    def compose(self, overrides: list[str]) -> DictConfig:
        """The app's config for `overrides`, with the generated configs on its search path."""
        return self._compose([*self.searchpath, *overrides])

    @cached_property
    def default_choices(self) -> dict[str, str]:
        return _training_choices(self._root)

    def reaching(self, choices: dict[str, str]) -> list[str]:
        """The group overrides that make the app's config take `choices`: each group that differs from the
        app's defaults (`~g` for one the trial dropped, never `g=null`, which Hydra refuses on the command
        line), then any group another choice moved (an experiment's `override /model: ...`), until composing
        gives `choices`. A group left at its default is not named: an optional group without a file
        (lightning-hydra-template's `optional local: default`) cannot be."""
        wanted: dict[str, str] = {}
        got = self.default_choices
        for _ in range(len(choices) + 2):
            for group in [*choices, *(g for g in got if g not in choices)]:
                if group not in wanted and got.get(group) != choices.get(group):
                    wanted[group] = self._choice_override(group, choices.get(group))
            got = _training_choices(self.compose(list(wanted.values())))
            if got == choices:
                break
        return list(wanted.values())

    def _choice_override(self, group: str, choice: str | None) -> str:
        if choice is None:
            return f"~{group}"
        listed = group in self._root.hydra.runtime.choices  # with an option or null
        return f"{'' if listed else '+'}{group}={choice}"

    def option(self, group: str, name: str) -> str:
        """`group=name`, or `+group=name` for an app whose defaults list lacks the group (any Hydra app can
        take a generated preset or search space: `searchpath` makes them options of every app)."""
        listed = group in self._root.hydra.runtime.choices
        return f"{'' if listed else '+'}{group}={name}"

    @cached_property
    def root_job(self) -> dict[str, Any]:
        """The app's own config, as composed without overrides (read, never changed, by its callers)."""
        return _job(self._root)

    def following(self, key: str) -> list[str]:
        """The app's settings whose value is `${key}` (`data.split_seed: ${seed}`): they change when it does."""
        return [k for k, v in _leaves(self.root_job).items() if v == f"${{{key}}}"]

    def flatten(self, overrides: list[str]) -> FlatConfig:
        key = tuple(overrides)
        if key not in self._flat:
            self._flat[key] = self._flatten(list(overrides))
        return self._flat[key]

    def _flatten(self, overrides: list[str]) -> FlatConfig:
        full = self.compose(overrides)
        choices = _training_choices(full)
        reaching = self.reaching(choices)
        base = _job(self.compose(reaching))
        job = _job(full)
        mine, theirs = _leaves(job), _leaves(base)
        # a group file's node set to null (callbacks.progress=null) replaces its leaves; that is not a deletion
        removed = sorted(k for k in theirs.keys() - mine.keys() if not any(p in mine for p in _prefixes(k)))
        if removed:
            raise SweeplabError(
                f"the trial's config deletes {', '.join(removed)}; a preset can only set keys, so it cannot be exported"
            )
        values = {k: v for k, v in mine.items() if k not in theirs or theirs[k] != v}
        existing = {p for k in theirs for p in [*_prefixes(k), k]}
        return FlatConfig(choices, values, set(mine.keys() - existing), reaching, job)

    def command(self, flat: FlatConfig, multirun: bool = False) -> str:
        """The single-run command line for a flattened config: changed group choices, then changed values."""
        args = list(flat.choice_overrides)
        args += [f"{'+' if k in flat.added else ''}{k}={_value_text(v)}" for k, v in flat.values.items()]
        return command_line(self.script, *(["-m"] if multirun else []), *args)

    def trial_command(self, trial: FrozenTrial) -> str:
        return self.command(self.flatten(full_overrides(trial)))


@dataclass
class Export:
    name: str  # the group's option: optimized/<study> or focused/<study>
    path: Path
    command: str
    option: str  # the override that selects it: preset=<name>, +preset=<name> for an app without the group


def export_preset(
    flattener: Flattener,
    trial: FrozenTrial,
    study_name: str,
    root_dir: str | Path,
    note: str,
    suffix: str = "",
) -> Export:
    """Write the trial as `preset/optimized/<study><suffix>.yaml` and check that composing it gives the trial's config.

    `suffix` keeps presets of other trials than the best (`_trial<N>`) from overwriting the best one's.
    """
    flat = flattener.flatten(full_overrides(trial))
    stem = path_safe(study_name) + suffix
    name = f"{PRESET_GROUP}/{stem}"
    path = generated_conf_dir(root_dir) / "preset" / PRESET_GROUP / f"{stem}.yaml"
    defaults: list[Any] = [_defaults_entry(o) for o in flat.choice_overrides]
    body = {"defaults": [*defaults, "_self_"], **_nest(flat.values)}
    _write_config(path, note, body)
    option = flattener.option("preset", name)
    rebuilt = _job(flattener.compose([option]))
    if rebuilt != flat.job:
        path.unlink()
        lost = _leaves(flat.job).keys() - _leaves(rebuilt).keys()
        differing = sorted(k for k in _leaves(rebuilt).keys() ^ _leaves(flat.job).keys()) or sorted(
            k for k, v in _leaves(flat.job).items() if _leaves(rebuilt).get(k) != v
        )
        why = (
            ": Hydra drops the keys of a primary config whose defaults list lacks _self_ when a group is "
            "appended; add `- _self_` to its defaults list"
            if lost and option.startswith("+")
            else ""
        )
        raise SweeplabError(
            f"{option} would not reproduce trial {trial.number} (keys {', '.join(differing[:5])} differ{why}); "
            "not written"
        )
    return Export(name, path, command_line(flattener.script, *flattener.searchpath, option), option)


def export_focused(
    flattener: Flattener,
    best: FrozenTrial,
    space: dict[str, str],
    study_name: str,
    root_dir: str | Path,
    sweep_argv: list[str],
    note: str,
) -> Export:
    """Write `search/focused/<study>.yaml` (the narrowed space, plus the best trial's non-default group choices)."""
    flat = flattener.flatten(full_overrides(best))
    stem = path_safe(study_name)
    name = f"{FOCUSED_GROUP}/{stem}"
    path = generated_conf_dir(root_dir) / "search" / FOCUSED_GROUP / f"{stem}.yaml"
    searched = {override_key(k) for k in space}
    defaults = [
        _defaults_entry(o)
        for o in flat.choice_overrides
        if override_key(o) not in searched and not o.startswith("+")
    ]
    body: dict[str, Any] = {"defaults": defaults} if defaults else {}
    body["hydra"] = {"sweeper": {"params": dict(space)}}
    _write_config(path, note, body)
    drop = {*searched, "search", "hydra.sweeper.study_name", "hydra.sweeper.allow_space_change"}
    if flattener.searchpath:
        drop.add("hydra.searchpath")
    kept = [a for a in sweep_argv if a not in ("-m", "--multirun") and override_key(a) not in drop]
    command = command_line(
        flattener.script,
        "-m",
        *kept,
        *flattener.searchpath,
        flattener.option("search", name),
        f"hydra.sweeper.study_name={study_name}_focused",
    )
    return Export(name, path, command, flattener.option("search", name))


def _write_config(path: Path, note: str, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    comments = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(f"# @package _global_\n{comments}" + OmegaConf.to_yaml(OmegaConf.create(body)))


def _training_choices(cfg: DictConfig) -> dict[str, str]:
    """The groups a config takes and their options; a group left null (`debug: null`) takes none."""
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    return {
        str(g): str(c)
        for g, c in choices.items()
        if c is not None and not str(g).startswith("hydra") and str(g) not in SWEEP_GROUPS
    }


def _defaults_entry(choice_override: str) -> dict[str, str | None]:
    """A group override as a generated config's defaults entry: `g=c` → `override /g: c`, `+g=c` → `/g: c`
    (a group the app's defaults lack), `~g` → `override /g: null`."""
    group, _, choice = choice_override.lstrip("+~").partition("=")
    if choice_override.startswith("~"):
        return {f"override /{group}": None}
    return {f"{'' if choice_override.startswith('+') else 'override '}/{group}": choice}


def _job(cfg: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{path}."))
        else:
            out[path] = value
    return out


def _prefixes(dotted: str) -> list[str]:
    """'a.b.c' → ['a', 'a.b']."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = root
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return root


def _value_text(value: Any) -> str:
    """A config value as override text (lists and dicts in Hydra's grammar)."""
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value_text(v)}" for k, v in value.items()) + "}"
    return format_value(value)
