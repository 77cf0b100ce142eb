"""Hydra's sweep grammar in both directions: parsed into Optuna distributions (the stock optuna sweeper's
mapping, checked up front), and written back as a narrower space around a study's top trials.

`choice(a, b)` → CategoricalDistribution; `range(a, b[, step])` → Int/FloatDistribution(a, b, step)
(as in the stock plugin, `b` is included; `shuffle(range(...))` → categorical); `interval(a, b)` →
Float/IntDistribution (int when both ends are ints, e.g. `int(interval(1, 8))`); `tag(log, ...)` → log scale.
A value that is not a sweep is a fixed override passed to every trial.

Conditional params (`hydra.sweeper.conditional`) exist only when another key takes a given value:
`{model: {convnext_tiny: {models.net.ls_init_value: tag(log, interval(1e-6, 1e-4))}}}` is suggested
(define-by-run, after the unconditional ones) only on trials whose `model` is convnext_tiny, under the
name `models.net.ls_init_value|model=convnext_tiny` ("given model=convnext_tiny"), so each family keeps
its own distribution and history. The same qualified names are accepted in `params` (a focused space
written from a conditional study uses them).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import FrozenTrial

from sweeplab.errors import SweeplabError, config_error, did_you_mean
from sweeplab.hydra_errors import replaced_section_line

_MISSING = object()
GIVEN = "|"  # a conditional param's name: "<key>|<parent>=<value>"
CONDITIONAL_KEY = "hydra.sweeper.conditional"


def qualified(key: str, parent: str, value: str) -> str:
    return f"{key}{GIVEN}{parent}={value}"


def key_of(name: str) -> str:
    """The override key a param name sets (a conditional name without its condition)."""
    return name.split(GIVEN, 1)[0]


def _replaced_section(job_cfg: DictConfig, key: str) -> str | None:
    """`models=resnet5` on the command line: a section that holds `key` is a plain value now. Said as the
    config group its name misspells, where it misspells one."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        value = OmegaConf.select(job_cfg, prefix, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            return None
        if not OmegaConf.is_config(value):
            return replaced_section_line(prefix, value)
    return None


def override_key(override: str) -> str:
    """The key an override sets, without its value and its +, ++ or ~ prefix: `+a.b=1` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class Branch:
    """What one value of a parent key adds to a trial: params to sample and fixed overrides, by key."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)


@dataclass
class SearchSpace:
    """What each trial samples (`distributions`) and what it gets unchanged (`fixed`), both keyed by override key."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    # conditional[parent][value]: in declaration order, so a parent may be a key of an earlier branch
    conditional: dict[str, dict[str, Branch]] = field(default_factory=dict)
    # the value of each parent that is neither sampled nor fixed: the composed config's (see make_plan)
    defaults: dict[str, str] = field(default_factory=dict)
    # each unconditional param's points under the grid sampler (None: a continuous interval has none)
    points: dict[str, list[Any] | None] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        params: Mapping[str, Any] | None,
        arguments: Sequence[str] = (),
        conditional: Mapping[str, Any] | None = None,
    ) -> SearchSpace:
        """`hydra.sweeper.params` first, then the command line (a later key wins), as the stock plugin does;
        `conditional` ({parent: {value: {key: sweep or value}}}) adds params that only some trials get."""
        plain = {k: v for k, v in (params or {}).items() if GIVEN not in str(k)}
        lines = [f"{key}={value}" for key, value in plain.items()]
        space = cls()
        for override in OverridesParser.create().parse_overrides([*lines, *arguments]):
            space._set(space.distributions, space.fixed, override)
            space.points.pop(override.get_key_element(), None)
            if override.is_sweep_override():
                space.points[override.get_key_element()] = grid_points(override)
        nested: dict[str, dict[Any, dict[str, Any]]] = {}
        for name, value in (params or {}).items():
            if GIVEN in str(name):  # "<key>|<parent>=<value>", as a focused space writes them
                key, condition = str(name).split(GIVEN, 1)
                parent, _, when = condition.partition("=")
                nested.setdefault(parent, {}).setdefault(when, {})[key] = value
        for parent, branches in _branch_nodes(conditional):
            for when, body in branches.items():
                nested.setdefault(parent, {}).setdefault(when, {}).update(body)
        on_command_line = {override_key(o) for o in arguments}
        for parent, branches in nested.items():
            for when, body in branches.items():
                branch = space.conditional.setdefault(parent, {}).setdefault(format_value(when), Branch())
                for key, value in body.items():
                    where = f"{CONDITIONAL_KEY}.{parent}.{format_value(when)}.{key}"
                    if key in on_command_line:
                        continue  # the command line sets it for every trial
                    if key in plain:
                        raise config_error(
                            where, value, "is also searched for every trial in hydra.sweeper.params; keep one"
                        )
                    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
                    space._set(branch.distributions, branch.fixed, override)
        return space

    @staticmethod
    def _set(distributions: dict[str, BaseDistribution], fixed: dict[str, str], override: Override) -> None:
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = to_distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()

    @property
    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's points of each param, as the stock plugin makes them: a choice's choices, a
        range's values as Hydra's `range` yields them (its end excluded); a continuous interval has none."""
        for key, values in self.points.items():
            if values is None:
                raise config_error(
                    key,
                    "interval(...)",
                    "a continuous range has no grid points; the grid sampler needs choice(...) or range(...)",
                )
        return {k: v for k, v in self.points.items() if v is not None}

    def configurations(self, limit: int = 100_000) -> list[dict[str, Any]] | None:
        """Every configuration the space can take, when it is finite and has at most `limit` of them
        (None otherwise, and for conditional spaces)."""
        if self.conditional or not self.distributions:
            return None
        values: dict[str, list[Any]] = {}
        size = 1
        for name, dist in self.distributions.items():
            points = _finite_points(dist)
            if points is None:
                return None
            values[name] = points
            size *= len(points)
            if size > limit:
                return None
        return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]

    def keys(self) -> set[str]:
        """Every config key a trial's params or fixed values may set (conditional branches' included)."""
        keys = {override_key(k) for k in (*self.distributions, *self.fixed)}
        for branches in self.conditional.values():
            for branch in branches.values():
                keys |= {override_key(k) for k in (*branch.distributions, *branch.fixed)}
        return keys

    def all_distributions(self) -> dict[str, BaseDistribution]:
        """Every param a trial may have, by param name (conditional ones qualified)."""
        out = dict(self.distributions)
        for parent, branches in self.conditional.items():
            for when, branch in branches.items():
                out.update({qualified(k, parent, when): d for k, d in branch.distributions.items()})
        return out

    def taken(self, params: Mapping[str, Any]) -> Iterator[tuple[str, str, Branch]]:
        """(parent, value, branch) of each branch a trial with `params` takes, in declaration order.

        Lazy: a caller that adds a branch's params to `params` before the next step lets a later
        parent be a key of an earlier branch.
        """
        branch_fixed: dict[str, str] = {}
        for parent, branches in self.conditional.items():
            by_key = {key_of(n): format_value(v) for n, v in params.items()}
            value = by_key.get(
                parent, branch_fixed.get(parent, self.fixed.get(parent, self.defaults.get(parent)))
            )
            branch = branches.get(value) if value is not None else None
            if branch is not None:
                branch_fixed.update(branch.fixed)
                yield parent, value, branch

    def suggest(self, trial: optuna.Trial) -> None:
        """Suggest the conditional params of the branches the trial's values take (after `study.ask`)."""
        params = dict(trial.params)
        for parent, value, branch in self.taken(params):
            for key, dist in branch.distributions.items():
                name = qualified(key, parent, value)
                params[name] = _suggest(trial, name, dist)

    def check_keys(
        self,
        job_cfg: DictConfig,
        group_options: Callable[[str], list[str] | None],
        where: str = "hydra.sweeper.params",
    ) -> None:
        """Every key must exist in the composed config (or be a config group with that option)."""
        leaf_keys: list[str] | None = None
        for key, choices in [
            *((k, _choices(d)) for k, d in self.distributions.items()),
            *((k, _fixed_choices(k, v)) for k, v in self.fixed.items()),
        ]:
            bare = override_key(key).split("@")[0]
            if key.startswith(("+", "~")) or bare.startswith("hydra."):
                continue
            options = group_options(bare)
            if options is not None:
                for choice in choices or []:
                    if str(choice) not in options and choice not in ("null", None):
                        raise config_error(
                            bare,
                            choice,
                            f"no such option in config group {bare}; allowed: {', '.join(options)}",
                        )
                continue
            if OmegaConf.select(job_cfg, bare, default=_MISSING, throw_on_missing=False) is _MISSING:
                replaced = _replaced_section(job_cfg, bare)
                if replaced is not None:
                    raise SweeplabError(replaced)
                leaf_keys = leaf_keys if leaf_keys is not None else _leaf_keys(job_cfg)
                raise SweeplabError(
                    f"{where}: {bare!r} is not a key of the composed config"
                    f"{did_you_mean(bare, leaf_keys)}; prefix it with + to add a new key"
                )

    def check_branches(
        self,
        job_cfg: DictConfig,
        group_options: Callable[[str], list[str] | None],
        compose: Callable[[list[str]], DictConfig] | None,
    ) -> None:
        """Each branch's value must be one its parent can take, and its keys must exist in the config
        composed with that value (`compose`: the sweeper's config loader; without it, `job_cfg`)."""
        for parent, branches in self.conditional.items():
            sampled = self.distributions.get(parent)
            options = group_options(parent)
            if isinstance(sampled, CategoricalDistribution):
                allowed: list[str] | None = [format_value(c) for c in sampled.choices]
            elif parent in self.fixed:
                allowed = [self.fixed[parent]]
            else:
                allowed = options
            for when, branch in branches.items():
                if allowed is not None and when not in allowed:
                    raise config_error(
                        f"{CONDITIONAL_KEY}.{parent}",
                        when,
                        f"a branch for a value {parent} never takes here; it takes: {', '.join(allowed)}",
                    )
                cfg = job_cfg
                if options is not None and compose is not None:
                    cfg = compose([*self.job_overrides(), f"{parent}={when}"])
                where = f"{CONDITIONAL_KEY}.{parent}.{when}"
                SearchSpace(branch.distributions, branch.fixed).check_keys(cfg, group_options, where)

    def job_overrides(self) -> list[str]:
        """The fixed overrides that shape every trial's job config (not the sweeper's own `hydra.` keys)."""
        return [f"{k}={v}" for k, v in self.fixed.items() if not override_key(k).startswith("hydra.")]

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The command-line overrides that make a job use these fixed values and sampled `params`
        (the fixed values of the branches it takes included)."""
        fixed = dict(self.fixed)
        for _, _, branch in self.taken(params):
            fixed.update(branch.fixed)
        keys = {key_of(name) for name in params}
        out = [f"{key}={value}" for key, value in fixed.items() if key not in keys]
        return out + [f"{key_of(name)}={format_value(value)}" for name, value in params.items()]

    def to_json(self) -> dict[str, str]:
        return {name: distribution_to_json(dist) for name, dist in sorted(self.all_distributions().items())}

    def differences(self, stored: Mapping[str, str]) -> list[str]:
        """Human-readable differences between this space and one stored with a study."""
        mine = self.to_json()
        out = [f"+{k}" for k in sorted(mine.keys() - stored.keys())]
        out += [f"-{k}" for k in sorted(stored.keys() - mine.keys())]
        out += [
            f"{k}: {_short(stored[k])} -> {_short(mine[k])}"
            for k in sorted(mine.keys() & stored.keys())
            if json.loads(mine[k]) != json.loads(stored[k])
        ]
        return out


def to_distribution(override: Override) -> BaseDistribution:
    """One sweep override → its Optuna distribution, refusing empty, inverted and non-positive log ranges."""
    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep():
        assert isinstance(value, ChoiceSweep)
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise config_error(key, "choice()", "an empty choice; give at least one value")
        for choice in choices:
            if not isinstance(choice, str | int | float | bool | type(None)):
                raise config_error(key, choice, "choices must be plain values (str, int, float, bool, null)")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle:
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        start, stop, step = value.start, value.stop, value.step
        if step is None or step <= 0 or start is None or stop is None or start >= stop:
            raise config_error(
                key,
                f"range({start}, {stop}, {step})",
                "an empty or inverted range: need start < stop, step > 0",
            )
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(start, stop, step=step)
        return IntDistribution(int(start), int(stop), step=int(step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        low, high, log = value.start, value.end, "log" in value.tags
        if low is None or high is None or low >= high:
            raise config_error(key, f"interval({low}, {high})", "an empty or inverted range: need low < high")
        if log and low <= 0:
            raise config_error(key, f"tag(log, interval({low}, {high}))", "a log range needs low > 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise config_error(
        key, override.input_line, "not a sweep Optuna can sample: use choice, range or interval"
    )


def grid_points(override: Override) -> list[Any] | None:
    """A sweep's points under the grid sampler (checked by `to_distribution` first). As in the stock plugin, a
    range's points exclude its end, and so do an integer interval's (`int(interval(1, 4))`: 1, 2, 3); a
    range is iterated the way Hydra iterates it, so a range whose end is off its step keeps its last point
    (`range(0, 10, step=3)`: 0, 3, 6, 9, where the stock plugin drops the 9)."""
    value = override.value()
    if override.is_choice_sweep() or override.is_range_sweep():
        return list(override.sweep_iterator(transformer=Transformer.encode))
    if isinstance(value, IntervalSweep) and isinstance(value.start, int) and isinstance(value.end, int):
        return list(range(value.start, value.end)) if "log" not in value.tags else None
    return None


def focus_count(n_complete: int) -> int:
    """How many top trials a focused space spans: the best fifth, at least 3."""
    return min(n_complete, max(3, math.ceil(0.2 * n_complete)))


def focused_space(
    space: Mapping[str, BaseDistribution], ranked: Sequence[FrozenTrial]
) -> dict[str, str] | None:
    """A narrower search space, in the sweep grammar, spanning the top trials of `ranked` (complete trials,
    best first) inside the bounds of `space`; None below 2 complete trials."""
    if len(ranked) < 2:
        return None
    top = ranked[: focus_count(len(ranked))]
    narrowed = {}
    for name, dist in space.items():
        values = [t.params[name] for t in top if name in t.params]
        if values:
            narrowed[name] = _narrow(dist, values)
    return narrowed


def _narrow(dist: BaseDistribution, values: list[Any]) -> str:
    if isinstance(dist, CategoricalDistribution):
        kept = [c for c in dist.choices if c in values]
        return (
            format_value(kept[0]) if len(kept) == 1 else f"choice({', '.join(format_value(c) for c in kept)})"
        )
    assert isinstance(dist, FloatDistribution | IntDistribution)
    log = dist.log
    to = (lambda x: math.log10(x)) if log else float
    back = (lambda x: 10.0**x) if log else float
    low, high = to(min(values)), to(max(values))
    full = to(dist.high) - to(dist.low)
    pad = 0.1 * (high - low) if high > low else 0.05 * full
    low, high = max(back(low - pad), dist.low), min(back(high + pad), dist.high)
    if isinstance(dist, IntDistribution):
        step = dist.step
        lo = dist.low + math.floor((low - dist.low) / step) * step
        hi = dist.low + math.ceil((high - dist.low) / step) * step
        hi = min(hi, dist.high)
        if lo >= hi:
            return str(lo)
        if log:
            return f"tag(log, int(interval({lo}, {hi})))"
        return f"range({lo}, {hi}, {step})" if step != 1 else f"int(interval({lo}, {hi}))"
    if dist.step is not None:
        step = dist.step
        lo = dist.low + math.floor(round((low - dist.low) / step, 9)) * step
        hi = min(dist.low + math.ceil(round((high - dist.low) / step, 9)) * step, dist.high)
        return _float(lo) if lo >= hi else f"range({_float(lo)}, {_float(hi)}, {_float(step)})"
    lo = max(_round_sig(low, up=False), dist.low)
    hi = min(_round_sig(high, up=True), dist.high)
    if lo >= hi:
        return _float(lo)
    return (
        f"tag(log, interval({_float(lo)}, {_float(hi)}))" if log else f"interval({_float(lo)}, {_float(hi)})"
    )


def _round_sig(x: float, up: bool, digits: int = 3) -> float:
    """x rounded outward (down for a lower end, up for an upper end) to `digits` significant digits."""
    if x == 0:
        return 0.0
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(x))))
    rounded = (math.ceil if up else math.floor)(x * scale) / scale
    return float(f"{rounded:.{digits}g}")


def _float(x: float) -> str:
    """A float as the grammar reads a float (never as an int, which would make an int range)."""
    text = f"{x:.6g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def _finite_points(dist: BaseDistribution) -> list[Any] | None:
    """Every value a distribution can give, or None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step))
        return [dist.low + i * dist.step for i in range(n + 1)]
    return None


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _branch_nodes(node: Mapping[str, Any] | None) -> Iterator[tuple[str, dict[Any, dict[str, Any]]]]:
    """`hydra.sweeper.conditional` checked for shape: {parent: {value: {key: sweep or value}}}."""
    if not node:
        return
    if not isinstance(node, Mapping):
        raise config_error(CONDITIONAL_KEY, node, "must map a key to {value: {param: sweep}}")
    for parent, branches in node.items():
        if not isinstance(branches, Mapping) or not branches:
            raise config_error(
                f"{CONDITIONAL_KEY}.{parent}", branches, "must map values of it to {param: sweep}"
            )
        for when, body in branches.items():
            if not isinstance(body, Mapping) or not body:
                raise config_error(
                    f"{CONDITIONAL_KEY}.{parent}.{format_value(when)}",
                    body,
                    "must map params to sweeps or values",
                )
        yield str(parent), {w: dict(b) for w, b in branches.items()}


def format_value(value: Any) -> str:
    """A sampled value as Hydra override text (quoted when the grammar needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if text and all(ch.isalnum() or ch in "_-./:" for ch in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _choices(dist: BaseDistribution) -> list[Any] | None:
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else None


def _fixed_choices(key: str, text: str) -> list[Any]:
    """The options a fixed override picks: one, several (`logger=[csv,tensorboard]`), none (`logger=[]`)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={text}"])
    value = override.value()
    return list(value) if isinstance(value, list) else [value]


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key in cfg:
        path = f"{prefix}{key}"
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none():
            keys.extend(_leaf_keys(node, f"{path}."))
        else:
            keys.append(path)
    return keys


def _short(js: str) -> str:
    data = json.loads(js)
    name = data.get("name", "").replace("Distribution", "")
    attrs = data.get("attributes", {})
    return f"{name}({', '.join(f'{k}={v}' for k, v in attrs.items())})"
