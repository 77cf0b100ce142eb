"""Hydra's sweep grammar → Optuna distributions, with the stock optuna sweeper's mapping, checked up front.

`choice(a, b)` → CategoricalDistribution; `range(a, b[, step])` → Int/FloatDistribution(a, b, step)
(as in the stock plugin, `b` is included; `shuffle(range(...))` → categorical); `interval(a, b)` →
Float/IntDistribution (int when both ends are ints, e.g. `int(interval(1, 8))`); `tag(log, ...)` → log scale.
A value that is not a sweep is a fixed override passed to every trial.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

from sweeplab.errors import SweeplabError, config_error, did_you_mean

_MISSING = object()


@dataclass
class SearchSpace:
    """What each trial samples (`distributions`) and what it gets unchanged (`fixed`), both keyed by override key."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None, arguments: Sequence[str] = ()) -> SearchSpace:
        """`hydra.sweeper.params` first, then the command line (a later key wins), as the stock plugin does."""
        lines = [f"{key}={value}" for key, value in (params or {}).items()]
        lines.extend(arguments)
        space = cls()
        for override in OverridesParser.create().parse_overrides(lines):
            key = override.get_key_element()
            space.distributions.pop(key, None)
            space.fixed.pop(key, None)
            if override.is_sweep_override():
                space.distributions[key] = to_distribution(override)
            else:
                space.fixed[key] = override.get_value_element_as_str()
        return space

    def check_keys(self, job_cfg: DictConfig, group_options: Callable[[str], list[str] | None]) -> None:
        """Every key must exist in the composed config (or be a config group with that option)."""
        leaf_keys: list[str] | None = None
        for key, choices in [*((k, _choices(d)) for k, d in self.distributions.items()), *self.fixed.items()]:
            bare = key.lstrip("+~").split("@")[0]
            if key.startswith(("+", "~")) or bare.startswith("hydra."):
                continue
            options = group_options(bare)
            if options is not None:
                wanted = choices if isinstance(choices, list) else [choices]
                for choice in wanted:
                    if str(choice) not in options and choice not in ("null", None):
                        raise config_error(
                            bare,
                            choice,
                            f"no such option in config group {bare}; allowed: {', '.join(options)}",
                        )
                continue
            if OmegaConf.select(job_cfg, bare, default=_MISSING, throw_on_missing=False) is _MISSING:
                leaf_keys = leaf_keys if leaf_keys is not None else _leaf_keys(job_cfg)
                raise SweeplabError(
                    f"hydra.sweeper.params: {bare!r} is not a key of the composed config"
                    f"{did_you_mean(bare, leaf_keys)}; prefix it with + to add a new key"
                )

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The command-line overrides that make a job use these fixed values and sampled `params`."""
        fixed = [f"{key}={value}" for key, value in self.fixed.items() if key not in params]
        return fixed + [f"{key}={format_value(value)}" for key, value in params.items()]

    def to_json(self) -> dict[str, str]:
        return {name: distribution_to_json(dist) for name, dist in sorted(self.distributions.items())}

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
