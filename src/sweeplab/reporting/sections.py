"""Report sections about the study as a whole (those listing trials one per row are in trial_sections.py).

In the order a reader needs them: what was found and what to do (summary), how the sweep was set up,
what was searched and what was held fixed, how the trials ended, the best trial up close, which params
mattered and how, the value's statistics, and the plots. Each builder reads the study alone (plus the
app's config loader where it can recompose a trial), so a report regenerated from the storage says the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import FrozenTrial, TrialState

from sweeplab.reporting.analysis import (
    IQR_FENCE,
    MIN_PER_BUCKET,
    EarlyPruned,
    Evidence,
    KeyParam,
    Trend,
    bucket_leaning,
    median_curve,
    param_trends,
    shared_overrides,
    space_rows,
    z_score,
)
from sweeplab.reporting.document import Block, Bullets, Code, Heading, Image, Links, Para, Table, cell
from sweeplab.reporting.plots import Plot
from sweeplab.search.checkpoints import kept, removed_reasons
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_FOCUS_BEST,
    ATTR_FOLD_VALUES,
    ATTR_TEST,
    STUDY_FOCUSED_FROM,
    STUDY_PRUNER,
    STUDY_SAMPLER,
    STUDY_SETTINGS,
)
from sweeplab.search.space import override_key
from sweeplab.search.view import StudyView, last_report

FIXED_ROWS = 40  # at most this many settings from the app's config beside the searched params


def summary(
    view: StudyView,
    stats: dict[str, Any],
    keys: list[KeyParam],
    evidence: Evidence,
    suspects: list[EarlyPruned],
    action: tuple[str, str | None],
    pruning: list[str] | None = None,
) -> list[Block]:
    """The findings in sentences (`pruning`: what the pruner cost), how strong the evidence is, and the
    one thing to do next."""
    blocks: list[Block] = [Heading("Summary")]
    running = view.counts.get("RUNNING", 0)
    if running:
        blocks.append(
            Para(
                f"The study is still running ({running} trial{'s' if running != 1 else ''} running): this "
                "report covers the trials finished so far."
            )
        )
    best = view.best
    if best is not None:
        blocks.append(Para(_best_sentence(view, stats, best)))
    elif not view.single:
        front = view.front
        blocks.append(
            Para(
                f"{len(front)} complete trial{'s' if len(front) != 1 else ''} form the Pareto front of "
                + " and ".join(f"{m} ({d})" for m, d in zip(view.metrics, view.directions, strict=True))
                + ": each is a trade-off no other complete trial beats in every objective."
            )
        )
    else:
        blocks.append(Para(f"No trial of the study has completed yet ({_counts(view)})."))
    if keys:
        blocks.append(Para(_params_sentence(view, keys, evidence)))
    elif view.complete:
        blocks.append(
            Para(
                "Which params mattered cannot be told yet: importances need at least 2 complete trials "
                "with different params."
            )
        )
    if suspects:
        s = suspects[0]
        more = f" ({len(suspects) - 1} more below)" if len(suspects) > 1 else ""
        blocks.append(
            Para(
                f"The pruner may have stopped a good configuration: trial {s.trial.number} ranked {s.rank} of "
                f"{s.peers} at epoch {s.step} when it was pruned{more}; see 'Possibly pruned too early'."
            )
        )
    blocks += [Para(line) for line in pruning or []]
    blocks.append(Para(_evidence_sentence(evidence)))
    what, command = action
    blocks.append(Para(f"Next: {what}" + (":" if command else ".")))
    if command:
        blocks.append(Code(command))
    return blocks


def _best_sentence(view: StudyView, stats: dict[str, Any], best: FrozenTrial) -> str:
    value = best.values[0]
    values = stats["values"]
    text = f"Trial {best.number} reached the best {view.metric}, {cell(value)}"
    if values["n"] > 1:
        text += (
            f", {_against(view, value, values['median'])} the median of the {values['n']} complete trials "
            f"({cell(values['median'])})"
        )
    text += _against_first(view, best)
    z = z_score(value, [t.values[0] for t in view.complete])
    if z is not None:
        text += f". It lies {z:+.2f} standard deviations from the mean"
    return text + "."


def _against_first(view: StudyView, best: FrozenTrial) -> str:
    """The best against the first configuration tried, the baseline a team quotes: the gain over it, or
    over the first complete trial where the first one did not complete."""
    first = view.trials[0]
    if first.number == best.number:
        return "; it was the first configuration tried"
    text = f"; the first configuration tried ({_first_label(first)}) {_outcome(view, first)}"
    baseline = first if first.state == TrialState.COMPLETE else view.complete[0]
    if baseline.number == best.number:
        return text + f", and trial {best.number} was the first to complete"
    gain = _against(view, best.values[0], baseline.values[0])
    relative = _relative_gain(view, best, baseline)
    if baseline is first:
        return text + f": the best is {gain} it{relative}"
    return text + (
        f"; the best is {gain} the first complete trial (trial {baseline.number}, "
        f"{cell(baseline.values[0])}){relative}"
    )


def _relative_gain(view: StudyView, best: FrozenTrial, baseline: FrozenTrial) -> str:
    """The gain as a percentage of the baseline's value (none where that value is 0)."""
    base = baseline.values[0]
    if math.isclose(base, 0.0, abs_tol=1e-12):
        return ""
    return f" ({view.sign * (best.values[0] - base) / abs(base):+.1%})"


def _first_label(trial: FrozenTrial) -> str:
    if ATTR_FOCUS_BEST in trial.user_attrs:
        return f"trial {trial.number}, the best params of study {trial.user_attrs[ATTR_FOCUS_BEST]}"
    return f"trial {trial.number}"


def _outcome(view: StudyView, trial: FrozenTrial) -> str:
    """How a trial ended, as the rest of a sentence."""
    if trial.state == TrialState.COMPLETE:
        return f"reached {cell(trial.values[0])}"
    if trial.state == TrialState.PRUNED:
        step, value = last_report(trial)
        return f"was pruned at epoch {step} with {cell(value)}" if step is not None else "was pruned"
    if trial.state == TrialState.FAIL:
        return f"failed ({trial.user_attrs.get(ATTR_FAIL_REASON) or 'no reason stored'})"
    return f"is {trial.state.name.lower()}"


def _against(view: StudyView, value: float, other: float) -> str:
    """'0.03 better than', 'equal to', for the study's direction."""
    gap = view.sign * (value - other)
    if math.isclose(gap, 0.0, abs_tol=1e-12):
        return "equal to"
    return f"{cell(abs(gap))} {'better' if gap > 0 else 'worse'} than"


def _params_sentence(view: StudyView, keys: list[KeyParam], evidence: Evidence) -> str:
    parts = []
    for k in keys:
        where = f"; best on average at {k.best_range} ({cell(k.best_mean)})" if k.best_range else ""
        parts.append(f"{k.name} (importance {k.importance:.2f}{where})")
    lead = "looked most important" if evidence.strength == "weak" else "mattered most"
    return f"The params that {lead} for {view.metric} (fANOVA): " + ", then ".join(parts) + "."


def _evidence_sentence(evidence: Evidence) -> str:
    if not evidence.reasons:
        return f"The evidence is {evidence.strength}: enough complete trials, trained as configured."
    text = f"The evidence is {evidence.strength}: " + "; ".join(evidence.reasons) + "."
    if evidence.strength != "strong":
        text += (
            " Read the trends and importances below as hints, not findings: what confirms the winner is "
            "retraining it in full and over seeds."
        )
    return text


def setup(view: StudyView, command: str | None) -> list[Block]:
    """How the sweep was run: objective, sampler and pruner with their settings, quick validation, budget."""
    settings = view.attr(STUDY_SETTINGS) or {}
    rows: list[list[Any]] = [
        ["objective", ", ".join(f"{m} ({d})" for m, d in zip(view.metrics, view.directions, strict=True))],
        ["sampler", _component(view.attr(STUDY_SAMPLER), settings.get("sampler"))],
        ["pruner", _component(view.attr(STUDY_PRUNER), settings.get("pruner"))],
    ]
    quick = settings.get("quick_validation")
    if quick is not None:
        rows.append(["quick validation", ", ".join(quick) if quick else "off: trials train as configured"])
    if "n_trials" in settings:
        budget = f"{settings['n_trials']} trials, {settings['n_jobs']} at a time"
        if settings.get("timeout"):
            budget += f", at most {cell(float(settings['timeout']))} s per sweep"
        rows.append(["budget", budget])
    if view.attr(STUDY_FOCUSED_FROM):
        rows.append(["narrowed from", f"study {view.attr(STUDY_FOCUSED_FROM)}"])
    rows.append(["storage", view.storage_url])
    blocks: list[Block] = [Heading("Sweep setup"), Table(["setting", "value"], rows)]
    if command:
        blocks += [Para("The command that ran it (run again, it continues the study):"), Code(command)]
    return blocks


def _component(name: Any, config: Mapping[str, Any] | None) -> str:
    """`TPESampler (seed=42, n_startup_trials=5)`: the class the sweep used and the settings it was given."""
    args = ", ".join(f"{k}={cell(v)}" for k, v in (config or {}).items() if k != "_target_" and v is not None)
    label = str(name) if name else str((config or {}).get("_target_", "-")).rsplit(".", 1)[-1]
    return f"{label} ({args})" if args else label


def search_space(view: StudyView, job: Mapping[str, Any] | None) -> list[Block]:
    """The searched params' distributions, then what was held fixed: the overrides every trial shared, and
    the app's settings beside the searched keys (from the best trial's composed config, where it composes)."""
    blocks: list[Block] = [Heading("Search space and fixed settings")]
    rows = space_rows(view)
    if rows:
        blocks.append(Table(["param", "range or choices", "distribution"], rows))
    else:
        blocks.append(Para("No searched distributions are stored with this study."))
    quick = set(view.attr(STUDY_SETTINGS, {}).get("quick_validation") or [])
    fixed = [
        [override_key(o), o.split("=", 1)[1] if "=" in o else "", _override_note(o, quick)]
        for o in shared_overrides(view)
    ]
    fixed += _beside_searched(view, job, {row[0] for row in fixed})
    if fixed:
        blocks += [
            Para(
                "Held fixed in every trial: the overrides all trials shared, then the settings of the app's "
                "config beside the searched ones (as the best trial composed them)."
            ),
            Table(["setting", "value", "from"], fixed),
        ]
    return blocks


def _override_note(override: str, quick: set[str]) -> str:
    return "quick validation (dropped when retrained)" if override in quick else "command line"


def _beside_searched(view: StudyView, job: Mapping[str, Any] | None, skip: set[str]) -> list[list[Any]]:
    """The scalar settings that share a parent node with a searched param (models.optimizer.* beside
    models.optimizer.lr); none for params at the top level, where the parent is the whole config."""
    if not job:
        return []
    config = OmegaConf.create(dict(job))
    searched = set(view.param_names)
    rows: list[list[Any]] = []
    for parent in dict.fromkeys(p.rsplit(".", 1)[0] for p in view.param_names if "." in p):
        node: Any = job
        for part in parent.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            name = f"{parent}.{key}"
            if name in searched or name in skip or isinstance(value, Mapping | list):
                continue
            rows += _fixed_row(config, parent, str(key), value)
    return rows[:FIXED_ROWS]


def _fixed_row(config: DictConfig, parent: str, key: str, value: Any) -> list[list[Any]]:
    """One setting as the reader needs it: a `_target_` as the class's short name on its parent's row,
    other `_..._` keys (Hydra's instantiation flags) left out, and an interpolation (`${seed}`) as the
    value it resolves to in the trial's config, or left out where it does not resolve there."""
    if key == "_target_":
        return [[parent, str(value).rsplit(".", 1)[-1], "config (class)"]]
    if key.startswith("_"):
        return []
    if isinstance(value, str) and "${" in value:
        try:
            value = OmegaConf.select(config, f"{parent}.{key}", throw_on_resolution_failure=True)
        except OmegaConfBaseException:
            return []
        if isinstance(value, DictConfig | ListConfig):
            return []
    return [[f"{parent}.{key}", value, "config"]]


def completion(view: StudyView, stats: dict[str, Any]) -> list[Block]:
    """How the trials ended, what the pruner saved, and how long it took."""
    counts = stats["trials"]
    states = [(s, counts[s]) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING") if counts.get(s)]
    items = []
    epochs = stats["epochs"]
    if epochs["run"] is None:  # an app that reports no per-epoch value: nothing to count
        items.append("epochs run: not reported (the trials reported no per-epoch values)")
    elif epochs["unpruned"]:
        items.append(
            f"epochs run: {epochs['run']} of the {epochs['unpruned']} an unpruned study would have run "
            f"({100 * epochs['saved_fraction']:.0f}% saved by pruning)"
        )
    else:
        items.append(f"epochs run: {epochs['run']}")
    if stats["wall_time_s"] is not None:
        items.append(
            f"time: {stats['wall_time_s']:.0f} s from the first start to the last finish, "
            f"{stats['trial_time_s']:.0f} s in trials"
        )
    items.append(f"stopped: {stats['stopped'] or '-'}")
    blocks: list[Block] = [
        Heading("Completion status"),
        Table(["state", "trials"], [[s.lower(), n] for s, n in states] + [["all", len(view.trials)]]),
        Bullets(items),
    ]
    at: dict[int, int] = {}
    for t in view.pruned:
        step, _ = last_report(t)
        epoch = int(t.user_attrs.get("pruned_at_epoch") or step or 0)
        at[epoch] = at.get(epoch, 0) + 1
    if at:
        blocks += [
            Para("The epoch pruned trials stopped at, and how many stopped there:"),
            Table(["epoch", "trials pruned"], sorted(at.items())),
        ]
    return blocks + checkpoints_kept(view)


def checkpoints_kept(view: StudyView) -> list[Block]:
    """The checkpoint files the study keeps (hydra.sweeper.checkpoints.keep), best trial first."""
    holding = kept(view.study, view.trials)
    removed = len(removed_reasons(view.study))
    if not holding and not removed:
        return []
    by_number = {t.number: t for t in view.trials}
    rows = [
        [n, by_number[n].state.name.lower(), by_number[n].values[0] if by_number[n].values else None, path]
        for n, paths in holding.items()
        for path in paths
    ]
    said = f"Checkpoints kept: {len(holding)} trial(s)" + (
        f"; {removed} trial(s) had theirs removed (hydra.sweeper.checkpoints.keep)" if removed else ""
    )
    return [
        Para(said + ("." if not rows else ":")),
        *([Table(["trial", "state", view.metrics[0], "file"], rows)] if rows else []),
    ]


def best_trial(view: StudyView, stats: dict[str, Any], plot: str | None) -> list[Block]:
    """The best trial up close: where it stands, its params within their ranges, its curve against the
    typical trial's, and what it scored on the test split."""
    best = view.best
    if best is None:
        return []
    value = best.values[0]
    curve = {s: v for s, v in best.intermediate_values.items() if not math.isnan(v)}
    typical = median_curve(view)
    values = stats["values"]
    text = f"{view.metric} {cell(value)}"
    if curve:
        peak = max(curve, key=lambda s: (view.sign * curve[s], -s))
        text += f", best at epoch {peak} of the {best.user_attrs.get(ATTR_EPOCHS, max(curve))} it ran"
    z = z_score(value, [t.values[0] for t in view.complete])
    if z is not None:
        text += (
            f"; {z:+.2f} standard deviations from the mean of the complete trials and "
            f"{_against(view, value, values['median'])} their median"
        )
    ranges = {row[0]: f"{row[1]} ({row[2]})" for row in space_rows(view)}
    blocks: list[Block] = [
        Heading(f"Best trial: trial {best.number}"),
        Para(text + "."),
        Table(["param", "value", "searched"], [[p, v, ranges.get(p, "-")] for p, v in best.params.items()]),
    ]
    if curve:
        blocks += [
            Para(
                f"Its {view.metric} per epoch, beside the median of all finished trials at that epoch"
                + (f" (every trial's curve: {plot})" if plot else "")
                + ":"
            ),
            Table(
                ["epoch", f"trial {best.number}", "median trial"],
                [[s, v, typical.get(s)] for s, v in sorted(curve.items())],
            ),
        ]
    folds = best.user_attrs.get(ATTR_FOLD_VALUES)
    if folds:
        blocks.append(
            Para(f"Its value is the mean of {len(folds)} folds: {', '.join(cell(v) for v in folds)}.")
        )
    test = best.user_attrs.get(ATTR_TEST)
    if test:
        blocks += [
            Para("On the held-out test split (its best checkpoint):"),
            Table(["metric", "value"], [[k, v] for k, v in test.items()]),
        ]
    else:
        blocks.append(Para("No test metrics are stored with this trial."))
    return blocks


def param_importances(view: StudyView, weights: dict[str, float]) -> list[Block]:
    """How much each param mattered for the metric (fANOVA), where it could be told."""
    if not weights:
        return []
    return [
        Heading("Parameter importances"),
        Para(f"fANOVA importance of each param for {view.metric}, over the complete trials."),
        Table(["param", "importance"], [[p, w] for p, w in weights.items()]),
    ]


def trends(view: StudyView) -> list[Block]:
    """The metric across each param's range: which values did better, and how consistently."""
    param_groups = param_trends(view)
    if not param_groups:
        return []
    blocks: list[Block] = [
        Heading("Per-parameter trends"),
        Para(
            f"Complete trials grouped by each param (numbers: up to four ranges of equal counts, of at least "
            f"{MIN_PER_BUCKET} trials each; others: per choice), with the mean and best {view.metric} in each "
            "group."
        ),
    ]
    for trend in param_groups:
        blocks += [
            Heading(_trend_title(view, trend), 3),
            Table(
                ["range" if trend.kind == "quantiles" else "choice", "trials", "mean", "best"],
                [[b.label, b.n, b.mean, b.best] for b in trend.buckets],
            ),
        ]
    return blocks


def _trend_title(view: StudyView, trend: Trend) -> str:
    """A numeric param's heading, read off the buckets shown below it: which end did better, only where the
    buckets and Spearman's rho agree; else where the best mean lies (never a claim the buckets contradict)."""
    if trend.kind == "quantiles" and len(trend.buckets) < 2:
        n = trend.buckets[0].n if trend.buckets else 0
        return f"{trend.param} ({n} complete trials: too few to split into ranges, no trend read)"
    if trend.spearman is None:
        return trend.param
    rho = f"Spearman rho {trend.spearman:+.2f} with {view.metric}"
    leaning = bucket_leaning(trend, view.sign)
    towards = trend.spearman * view.sign
    if (leaning == "larger" and towards > 0) or (leaning == "smaller" and towards < 0):
        return f"{trend.param} ({rho}: {leaning} values did better)"
    top = max(trend.buckets, key=lambda b: view.sign * b.mean)
    return f"{trend.param} ({rho}; no clear direction: the best mean is at {top.label})"


def statistics(view: StudyView, stats: dict[str, Any]) -> list[Block]:
    """The metric's spread over the complete trials, with and without outliers, and where the best lies."""
    every, clean = stats["values"], stats["values_without_outliers"]
    if not every["n"]:
        return []
    rows = [[k, every[k], clean[k]] for k in ("n", "mean", "median", "std", "min", "max")]
    blocks: list[Block] = [
        Heading("Statistics"),
        Para(
            f"{view.metric} over the complete trials, and again without the {stats['outliers']} outlier(s) "
            f"beyond {IQR_FENCE} IQR of the quartiles."
        ),
        Table(["statistic", "all complete", "without outliers"], rows),
    ]
    best = stats.get("best")
    if best and best["z_score"] is not None:
        blocks.append(Para(f"The best trial lies {best['z_score']:+.2f} standard deviations from the mean."))
    return blocks


def plot_gallery(plots: list[Plot]) -> list[Block]:
    """The drawn plots inline, links to their interactive versions, and why any was not drawn."""
    blocks: list[Block] = [Heading("Plots")]
    drawn = [p for p in plots if p.png]
    for plot in drawn:
        blocks += [Heading(plot.title, 3), Image(plot.png, plot.title)]
    blocks += [
        Para("Interactive versions (plotly, offline: they load one plotly.min.js from disk):"),
        Links([(p.title, f"plots/{p.name}.html") for p in plots if p.html]),
    ]
    skipped = [f"{p.title}: not drawn ({p.skipped})" for p in plots if p.skipped]
    return blocks + ([Bullets(skipped)] if skipped else [])


def _counts(view: StudyView) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in view.counts.items() if n) or "no trials"
