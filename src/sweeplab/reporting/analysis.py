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
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_MAX_EPOCHS,
    ATTR_OVERRIDES,
    ATTR_QUICK,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_STOPPED,
)
from sweeplab.search.space import focus_count as focus_count  # how many top trials a focused space spans
from sweeplab.search.space import focused_space as narrowed_space
from sweeplab.search.space import format_value, override_key
from sweeplab.search.view import StudyView, last_report

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


MIN_PER_BUCKET = 3  # the fewest trials a range of a numeric param's trend holds


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
    """Up to `n_buckets` ranges of equal counts, each of at least MIN_PER_BUCKET trials: with fewer trials,
    one range (a bucket of one trial is that trial, not a trend)."""
    xs = np.asarray([float(x) for x, _ in rows])
    ys = [y for _, y in rows]
    n_buckets = min(n_buckets, len(rows) // MIN_PER_BUCKET)
    edges = np.unique(np.quantile(xs, np.linspace(0.0, 1.0, max(n_buckets, 1) + 1)))
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
        from scipy.stats import spearmanr  # 1 s to import: only where a trend is computed

        rho = float(spearmanr(xs, ys).statistic)
    return Trend(name, "quantiles", buckets, rho)


def bucket_leaning(trend: Trend, sign: float) -> str | None:
    """Which end of a numeric param's range did better, by the buckets' means: "larger" where the last
    bucket has the best mean, "smaller" where the first has; None where the best lies inside the range."""
    means = [sign * b.mean for b in trend.buckets]
    if trend.kind != "quantiles" or len(means) < 2:
        return None
    best = max(range(len(means)), key=means.__getitem__)
    if best == len(means) - 1 and means[-1] > means[0]:
        return "larger"
    if best == 0 and means[0] > means[-1]:
        return "smaller"
    return None


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


def focused_space(view: StudyView) -> dict[str, str] | None:
    """A narrower search space in Hydra's sweep grammar spanning the study's top trials; None below 2 complete trials."""
    return narrowed_space(view.space, view.ranked())


def _num(x: float) -> str:
    return f"{x:.4g}"


def epochs_used(view: StudyView) -> dict[str, Any]:
    """Epochs the finished trials ran, against the epochs they would have run unpruned; `run` is None where
    no trial reported per epoch (an app without `sweeplab.report` or the pruning callback)."""
    finished = view.state(TrialState.COMPLETE, TrialState.PRUNED)
    if not any(ATTR_EPOCHS in t.user_attrs or t.intermediate_values for t in finished):
        return {"run": None, "unpruned": None, "saved_fraction": None}
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
        "trials": view.counts,
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
        stats["pareto_front"] = view.front_rows()
    return stats


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def space_rows(view: StudyView) -> list[list[str]]:
    """The searched space as a table: param, range or choices, distribution."""
    rows = []
    for name, dist in view.space.items():
        if isinstance(dist, CategoricalDistribution):
            rows.append([name, ", ".join(format_value(c) for c in dist.choices), "categorical"])
            continue
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        scale = "log-uniform" if getattr(dist, "log", False) else "uniform"
        step = getattr(dist, "step", None)
        steps = (
            f", step {format_value(step)}" if step is not None and not (kind == "int" and step == 1) else ""
        )
        rows.append([name, f"{_num(dist.low)} .. {_num(dist.high)}", f"{scale} {kind}{steps}"])
    return rows


def shared_overrides(view: StudyView) -> list[str]:
    """The overrides every trial that ran got besides its searched params: the study's fixed settings."""
    lists = [t.user_attrs.get(ATTR_OVERRIDES) for t in view.trials]
    lists = [o for o in lists if o]
    if not lists:
        return []
    searched = set(view.param_names)
    shared = [o for o in lists[0] if all(o in rest for rest in lists[1:])]
    return [o for o in shared if override_key(o) not in searched]


@dataclass
class Evidence:
    """How far the study's numbers can be trusted, and why: "weak", "moderate" or "strong"."""

    strength: str
    reasons: list[str]
    quick: list[str]  # the quick-validation overrides the values were measured under


FEW_TRIALS = 10  # fewer complete trials than this: trends and importances are hints
ENOUGH_TRIALS = 30  # from here, with full-length trials, the evidence is strong
FEW_EPOCHS = 5  # trials this short rank configurations by their start, not their end


def evidence(view: StudyView) -> Evidence:
    complete = view.complete
    quick = sorted({o for t in view.trials for o in t.user_attrs.get(ATTR_QUICK) or []})
    reasons = []
    if len(complete) < FEW_TRIALS:
        reasons.append(f"only {len(complete)} complete trial{'s' if len(complete) != 1 else ''}")
    epochs = [int(t.user_attrs[ATTR_EPOCHS]) for t in complete if ATTR_EPOCHS in t.user_attrs]
    if epochs and max(epochs) <= FEW_EPOCHS:
        reasons.append(f"at most {max(epochs)} epoch{'s' if max(epochs) != 1 else ''} per trial")
    if quick:
        reasons.append(f"values from quick validation ({', '.join(quick)}), not from full training")
    if len(complete) < FEW_TRIALS:
        strength = "weak"
    elif reasons or len(complete) < ENOUGH_TRIALS:
        strength = "moderate"
    else:
        strength = "strong"
    return Evidence(strength, reasons, quick)


@dataclass
class KeyParam:
    name: str
    importance: float
    best_range: str | None  # the trend's bucket (quartile range or choice) with the best mean
    best_mean: float | None


def key_params(view: StudyView, weights: dict[str, float], limit: int = 3) -> list[KeyParam]:
    """The params that mattered: the most important ones (fANOVA) down to a tenth of the total, each with
    the range or choice where the complete trials did best on average."""
    trends = {t.param: t for t in param_trends(view)}
    keys = []
    for name, weight in list(weights.items())[:limit]:
        if weight < 0.1 and keys:
            break
        trend = trends.get(name)
        buckets = trend.buckets if trend and len(trend.buckets) > 1 else []
        top = max(buckets, key=lambda b: view.sign * b.mean) if buckets else None
        keys.append(KeyParam(name, weight, top.label if top else None, top.mean if top else None))
    return keys


def param_distance(view: StudyView, a: dict[str, Any], b: dict[str, Any]) -> float:
    """How different two trials' params are, from 0 (same) to 1: the mean over the searched params of
    |a - b| on the distribution's scale (log where it is log), and 0 or 1 for choices."""
    parts = []
    for name, dist in view.space.items():
        if name not in a or name not in b:
            parts.append(0.0 if (name in a) == (name in b) else 1.0)
        elif isinstance(dist, CategoricalDistribution):
            parts.append(0.0 if a[name] == b[name] else 1.0)
        else:
            scale = math.log if getattr(dist, "log", False) else float
            low, high = scale(dist.low), scale(dist.high)
            parts.append(abs(scale(a[name]) - scale(b[name])) / (high - low) if high > low else 0.0)
    return float(np.mean(parts)) if parts else 0.0


def fallback(view: StudyView) -> tuple[FrozenTrial, float] | None:
    """A second configuration to fall back on: among the top complete trials after the best (the same
    top a focused space spans), the one whose params differ most from the best's; None below 2 trials."""
    ranked = view.ranked()
    if len(ranked) < 2:
        return None
    best = ranked[0]
    candidates = ranked[1 : max(2, focus_count(len(ranked)))]
    scored = [(t, param_distance(view, best.params, t.params)) for t in candidates]
    return max(scored, key=lambda ts: ts[1])  # the first of equals: the better ranked


def median_curve(view: StudyView) -> dict[int, float]:
    """Per step, the median value the finished trials reported (what a typical trial looked like then)."""
    steps: dict[int, list[float]] = defaultdict(list)
    for t in view.state(TrialState.COMPLETE, TrialState.PRUNED):
        for step, value in t.intermediate_values.items():
            if not math.isnan(value):
                steps[step].append(value)
    return {step: float(np.median(values)) for step, values in sorted(steps.items())}
