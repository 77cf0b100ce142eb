"""What a study says, as numbers: statistics, per-parameter trends, early-pruned suspects, failures, a focused space.

Everything is computed from the stored trials of the first objective (the optimized metric), so a report
regenerated from the storage alone says the same as the one written at the end of the sweep.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

from sweeplab.reporting.view import StudyView, last_report
from sweeplab.search.space import format_value
from sweeplab.search.study import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_MAX_EPOCHS,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_STOPPED,
)

# Tukey's fences: a value beyond 1.5 IQR outside the quartiles is an outlier.
IQR_FENCE = 1.5


def describe(values: list[float]) -> dict[str, float | int | None]:
    """n, mean, median, std (sample, n-1), min, max; None where there are no values."""
    if not values:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    arr = np.asarray(values, dtype=float)
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def without_outliers(values: list[float]) -> list[float]:
    """The values inside Tukey's fences (all of them when there are fewer than 4)."""
    if len(values) < 4:
        return list(values)
    q1, q3 = np.quantile(values, [0.25, 0.75])
    low, high = q1 - IQR_FENCE * (q3 - q1), q3 + IQR_FENCE * (q3 - q1)
    return [v for v in values if low <= v <= high]


def z_score(value: float, values: list[float]) -> float | None:
    stats = describe(values)
    if not stats["std"]:
        return None
    return (value - stats["mean"]) / stats["std"]


@dataclass
class Bucket:
    """One slice of a parameter's values: which trials fell in it and how they did."""

    label: str
    n: int
    mean: float
    best: float


@dataclass
class Trend:
    param: str
    kind: str  # "quantiles" or "choices"
    buckets: list[Bucket]
    spearman: float | None = None  # rank correlation of the param with the value (numeric params)


def param_trends(view: StudyView, n_buckets: int = 4) -> list[Trend]:
    """Per parameter, the complete trials' mean value in quantile buckets (numbers) or per choice."""
    complete = view.complete
    trends = []
    for name in view.param_names:
        rows = [(t.params[name], t.values[0]) for t in complete if name in t.params]
        if not rows:
            continue
        dist = view.space.get(name)
        numeric = not isinstance(dist, CategoricalDistribution) and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x, _ in rows
        )
        if numeric:
            trends.append(_quantile_trend(view, name, rows, n_buckets))
        else:
            groups: dict[str, list[float]] = defaultdict(list)
            for x, y in rows:
                groups[format_value(x)].append(y)
            order = (
                [format_value(c) for c in dist.choices] if isinstance(dist, CategoricalDistribution) else []
            )
            keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
            trends.append(Trend(name, "choices", [_bucket(view, k, groups[k]) for k in keys]))
    return trends


def _quantile_trend(view: StudyView, name: str, rows: list[tuple[Any, float]], n_buckets: int) -> Trend:
    xs = np.asarray([float(x) for x, _ in rows])
    ys = [y for _, y in rows]
    edges = np.unique(np.quantile(xs, np.linspace(0.0, 1.0, n_buckets + 1)))
    if edges.size < 2:
        return Trend(name, "quantiles", [_bucket(view, _num(edges[0]), ys)])
    index = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, edges.size - 2)
    buckets = []
    for i in range(edges.size - 1):
        in_bucket = [y for y, j in zip(ys, index, strict=True) if j == i]
        if in_bucket:
            closing = "]" if i == edges.size - 2 else ")"
            buckets.append(_bucket(view, f"[{_num(edges[i])}, {_num(edges[i + 1])}{closing}", in_bucket))
    rho = None
    if len(set(xs.tolist())) > 1 and len(set(ys)) > 1 and len(ys) >= 3:
        rho = float(spearmanr(xs, ys).statistic)
    return Trend(name, "quantiles", buckets, rho)


def _bucket(view: StudyView, label: str, values: list[float]) -> Bucket:
    pick = max if view.sign > 0 else min
    return Bucket(label, len(values), float(np.mean(values)), float(pick(values)))


@dataclass
class EarlyPruned:
    """A pruned trial whose last reported value was among the best k of all trials at that step."""

    trial: FrozenTrial
    step: int
    value: float
    rank: int
    peers: int  # trials with a report at that step


def pruned_too_early(view: StudyView, top_k: int = 3) -> list[EarlyPruned]:
    """Pruned trials that ranked in the top `top_k` at the step they were stopped (out of more than top_k)."""
    finished = view.state(TrialState.COMPLETE, TrialState.PRUNED)
    suspects = []
    for trial in view.pruned:
        step, value = last_report(trial)
        if step is None or value is None or math.isnan(value):
            continue
        peers = [t.intermediate_values[step] for t in finished if step in t.intermediate_values]
        peers = [p for p in peers if not math.isnan(p)]
        rank = 1 + sum(1 for p in peers if view.sign * p > view.sign * value)
        if len(peers) > top_k and rank <= top_k:
            suspects.append(EarlyPruned(trial, step, value, rank, len(peers)))
    return sorted(suspects, key=lambda s: (s.rank, s.trial.number))


def failures(view: StudyView) -> dict[str, list[int]]:
    """Failed trial numbers grouped by their stored reason, most frequent first."""
    groups: dict[str, list[int]] = defaultdict(list)
    for t in view.failed:
        groups[str(t.user_attrs.get(ATTR_FAIL_REASON) or "unknown (no reason stored)")].append(t.number)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def focus_count(n_complete: int) -> int:
    """How many top trials a focused space spans: the best fifth, at least 3."""
    return min(n_complete, max(3, math.ceil(0.2 * n_complete)))


def focused_space(view: StudyView) -> dict[str, str] | None:
    """A narrower search space in Hydra's sweep grammar spanning the top trials; None below 2 complete trials."""
    if len(view.complete) < 2:
        return None
    top = view.ranked()[: focus_count(len(view.complete))]
    space = {}
    for name, dist in view.space.items():
        values = [t.params[name] for t in top if name in t.params]
        if values:
            space[name] = _narrow(dist, values)
    return space


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


def _num(x: float) -> str:
    return f"{x:.4g}"


def epochs_used(view: StudyView) -> dict[str, Any]:
    """Epochs the finished trials ran, against the epochs they would have run unpruned."""
    finished = view.state(TrialState.COMPLETE, TrialState.PRUNED)
    run = sum(int(t.user_attrs.get(ATTR_EPOCHS, len(t.intermediate_values))) for t in finished)
    full = [int(t.user_attrs[ATTR_MAX_EPOCHS]) for t in finished if ATTR_MAX_EPOCHS in t.user_attrs]
    if len(full) != len(finished) or not finished:
        return {"run": run, "unpruned": None, "saved_fraction": None}
    budget = sum(full)
    return {
        "run": run,
        "unpruned": budget,
        "saved_fraction": round(1.0 - run / budget, 4) if budget else None,
    }


def study_stats(view: StudyView) -> dict[str, Any]:
    """The study_stats.json payload."""
    counts = {s.name: 0 for s in TrialState}
    for t in view.trials:
        counts[t.state.name] += 1
    values = [t.values[0] for t in view.complete]
    clean = without_outliers(values)
    starts = [t.datetime_start for t in view.trials if t.datetime_start]
    ends = [t.datetime_complete for t in view.trials if t.datetime_complete]
    durations = [t.duration.total_seconds() for t in view.trials if t.duration is not None]
    stats: dict[str, Any] = {
        "study_name": view.name,
        "storage": view.storage_url,
        "directions": view.directions,
        "metrics": view.metrics,
        "trials": counts,
        "sampler": view.attr(STUDY_SAMPLER),
        "pruner": view.attr(STUDY_PRUNER),
        "stopped": view.attr(STUDY_STOPPED),
        "first_start": _iso(min(starts)) if starts else None,
        "last_complete": _iso(max(ends)) if ends else None,
        "wall_time_s": round((max(ends) - min(starts)).total_seconds(), 3) if starts and ends else None,
        "trial_time_s": round(sum(durations), 3),
        "epochs": epochs_used(view),
        "values": describe(values),
        "values_without_outliers": describe(clean),
        "outliers": len(values) - len(clean),
    }
    best = view.best
    if best is not None:
        stats["best"] = {
            "trial": best.number,
            "value": best.values[0],
            "params": dict(best.params),
            "z_score": z_score(best.values[0], values),
        }
    elif not view.single:
        stats["pareto_front"] = [
            {"trial": t.number, "values": list(t.values), "params": dict(t.params)}
            for t in view.study.best_trials
        ]
    return stats


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
