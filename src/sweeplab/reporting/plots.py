"""Optuna's own plots of a study, each as a self-contained HTML file (plotly) and a PNG (Optuna's matplotlib backend)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sweeplab.errors import one_line
from sweeplab.search.records import ATTR_RESUMED
from sweeplab.search.view import StudyView

log = logging.getLogger(__name__)


@dataclass
class Plot:
    name: str
    title: str
    html: Path | None = None
    png: Path | None = None
    skipped: str | None = None  # why it was not drawn


def importances(view: StudyView) -> dict[str, float]:
    """fANOVA importances of the params for the first objective (seeded, so reruns agree); {} below 2 trials."""
    if len(view.complete) < 2 or not view.param_names:
        return {}
    from optuna.importance import get_param_importances

    try:
        return get_param_importances(view.study, evaluator=_evaluator(), target=_target(view))
    except (ValueError, RuntimeError) as exc:  # e.g. every complete trial has the same params
        log.warning("parameter importances not computed: %s", exc)
        return {}


def write_plots(
    view: StudyView, out_dir: Path, ranked_params: list[str], js_dir: Path | None = None
) -> list[Plot]:
    """Draw every plot that applies to the study into `out_dir`; a plot that cannot be drawn says why.
    The HTML plots load one `plotly.min.js` (offline) from `js_dir`, written there once (default: `out_dir`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    import optuna.visualization as plotly_backend

    plots = []
    pauses = _pauses(view)
    script = _plotly_js(js_dir or out_dir, out_dir)
    for name, title, why_not, draw in _specs(view, ranked_params):
        plot = Plot(name, title)
        plots.append(plot)
        if why_not:
            plot.skipped = why_not
            continue
        try:
            fig = draw(plotly_backend)
            fig.update_layout(title=f"{view.name}: {title}")
            if name == "intermediate_values":
                _mark_pauses_plotly(fig, pauses)
            html = out_dir / f"{name}.html"
            fig.write_html(html, include_plotlyjs=script, full_html=True)
            plot.html = html
            png = out_dir / f"{name}.png"
            _save_png(draw, png, name, view.param_names, pauses)
            plot.png = png  # only once written: the report inlines it
        except (
            Exception
        ) as exc:  # Optuna refuses some studies (one trial, one distinct value): a note says why
            plot.skipped = one_line(exc)
            log.warning("plot %s not drawn: %s", name, plot.skipped)
    return plots


Draw = Callable[[Any], Any]
PLOTLY_JS = "plotly.min.js"


def _plotly_js(js_dir: Path, out_dir: Path) -> str:
    """`js_dir/plotly.min.js`, written unless there (to a temporary name, then renamed: sweeps of one study
    may write it at once), as a path relative to `out_dir` for the plots' script tag."""
    from plotly.offline import get_plotlyjs

    js_dir.mkdir(parents=True, exist_ok=True)
    target = js_dir / PLOTLY_JS
    if not target.is_file():
        part = js_dir / f".{PLOTLY_JS}.{os.getpid()}"
        part.write_text(get_plotlyjs(), encoding="utf-8")
        part.replace(target)
    return Path(os.path.relpath(target, out_dir)).as_posix()


def _specs(view: StudyView, ranked: list[str]) -> list[tuple[str, str, str | None, Draw]]:
    study, target, label = view.study, _target(view), view.metric
    no_complete = None if view.complete else "no complete trial yet"
    reported = any(t.intermediate_values for t in view.trials)
    specs: list[tuple[str, str, str | None, Draw]] = [
        (
            "optimization_history",
            "optimization history",
            no_complete,
            lambda b: b.plot_optimization_history(study, target=target, target_name=label),
        ),
        (
            "param_importances",
            "parameter importances (fANOVA)",
            None if len(view.complete) >= 2 else "needs 2 complete trials",
            lambda b: b.plot_param_importances(
                study, evaluator=_evaluator(), target=target, target_name=label
            ),
        ),
        (
            "parallel_coordinate",
            "parallel coordinates",
            no_complete,
            lambda b: b.plot_parallel_coordinate(study, target=target, target_name=label),
        ),
        ("slice", "slices", no_complete, lambda b: b.plot_slice(study, target=target, target_name=label)),
        (
            "contour",
            f"contour of {' and '.join(ranked[:2])}",
            no_complete or (None if len(ranked) >= 2 else "needs 2 searched params"),
            lambda b: b.plot_contour(study, params=ranked[:2], target=target, target_name=label),
        ),
    ]
    if view.single:
        specs.append(
            (
                "intermediate_values",
                f"learning curves ({label} per epoch; pruned trials stop early)",
                None if reported else "no trial reported a value yet",
                lambda b: b.plot_intermediate_values(study),
            )
        )
    else:
        specs.append(
            (
                "pareto_front",
                "Pareto front",
                no_complete,
                lambda b: b.plot_pareto_front(study, target_names=view.metrics),
            )
        )
    return specs


def _pauses(view: StudyView) -> list[tuple[int, float]]:
    """(step, value) where each resumed rescue's configuration was paused: its curve goes on from there."""
    points = []
    for t in view.trials:
        resumed = t.user_attrs.get(ATTR_RESUMED) or {}
        step = resumed.get("step")
        if resumed.get("checkpoint") and step in t.intermediate_values:
            points.append((int(step), float(t.intermediate_values[step])))
    return points


def _mark_pauses_plotly(fig: Any, points: Sequence[tuple[int, float]]) -> None:
    if points:
        fig.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            marker={"symbol": "x", "size": 12, "color": "black"},
            name=PAUSE_LABEL,
        )


PAUSE_LABEL = "paused, then resumed by a rescue"


def _save_png(
    draw: Draw, path: Path, name: str, params: list[str], pauses: Sequence[tuple[int, float]] = ()
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # "categorical units" notes on choices
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as mpl_backend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # trials that all reached one value (digits: val/f1 1.0), or a study of two trials with one param
        # value, draw a flat axis; matplotlib widens it itself
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high [xy]lims")
        axes = draw(mpl_backend)
        figure = np.asarray(axes).ravel()[0].figure
        _legible(figure, name, params)
        if name == "intermediate_values" and pauses:
            ax = figure.axes[0]
            ax.scatter(*zip(*pauses, strict=True), marker="x", s=80, c="black", zorder=5, label=PAUSE_LABEL)
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        try:
            figure.savefig(path, dpi=100, bbox_inches="tight")
        finally:
            plt.close(figure)


# Inches per param axis: Optuna's matplotlib figures keep one width whatever the number of params, so past
# three params their axis labels and tick labels run into each other.
INCHES_PER_AXIS = {"slice": 2.8, "parallel_coordinate": 1.6}
LABEL_CHARS = 18  # longer param names are wrapped at their dots


LEGEND_TRIALS = 30  # the intermediate values plot names its trials in a legend up to this many


def _legible(figure: Any, name: str, params: list[str]) -> None:
    """Widen a figure by its number of param axes and wrap long dotted names (whole again where Optuna cut
    them to 17 characters and one param has that start), so no label overlaps another; whole steps only."""
    if name == "intermediate_values":  # steps are whole (epochs): no 1.25 between them
        from matplotlib.ticker import MaxNLocator

        ax = figure.axes[0]
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        legend = ax.get_legend()
        if legend is not None and len(legend.get_texts()) > LEGEND_TRIALS:
            legend.remove()  # one entry per trial: past a few dozen, taller than the plot and read by nobody
    per_axis = INCHES_PER_AXIS.get(name)
    if per_axis is None:
        return
    plotted = [a for a in figure.axes if not hasattr(a, "_colorbar")]
    if name == "slice":
        panels = [a for a in plotted if a.get_xlabel()]
        for a in panels:
            a.set_xlabel(_wrap(a.get_xlabel()))
        count = len(panels)
    else:  # the first axes carries one x tick per dimension (objective, then params)
        ticks = plotted[0].get_xticks()
        names = [_whole(t.get_text(), params) for t in plotted[0].get_xticklabels()]
        plotted[0].set_xticks(ticks, [_wrap(n) for n in names])
        count = len(ticks)
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, per_axis * count + 1.5), height)


def _whole(label: str, params: list[str]) -> str:
    if not label.endswith("..."):
        return label
    matches = [p for p in params if len(p) >= len(label) and p.startswith(label[:-3])]
    return matches[0] if len(matches) == 1 else label


def _wrap(label: str) -> str:
    """`models.optimizer.weight_decay` → `models.optimizer.` / `weight_decay` (at dots, lines of LABEL_CHARS)."""
    lines: list[str] = []
    for part in label.replace(".", ".\0").split("\0"):
        if lines and len(lines[-1]) + len(part) <= LABEL_CHARS:
            lines[-1] += part
        else:
            lines.append(part)
    return "\n".join(line for line in lines if line)


def _target(view: StudyView) -> Callable[[optuna.trial.FrozenTrial], float] | None:
    return None if view.single else (lambda t: t.values[0])


def _evaluator() -> Any:
    """fANOVA, seeded so reruns agree. Imported here, not at the top: optuna.importance loads
    scikit-learn's ensembles (0.1 s), which every run would pay through the Hydra callbacks."""
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=0)
