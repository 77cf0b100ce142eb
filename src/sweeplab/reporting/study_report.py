"""Everything a finished (or running) study leaves behind, from its storage: files, plots, report, preset.

Called by the sweeper at the end of a study (into the sweep dir) and by `runners/report.py` at any time.
This module decides what is made and in which order; the report's sections are built in sections.py and
trial_sections.py, its next steps in next_steps.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from sweeplab.errors import SweeplabError, one_line
from sweeplab.reporting.analysis import (
    evidence,
    fallback,
    focused_space,
    key_params,
    pruned_too_early,
    study_stats,
)
from sweeplab.reporting.document import Block, Heading, to_html, to_markdown
from sweeplab.reporting.export import Export, Flattener, command_line, export_focused, export_preset
from sweeplab.reporting.files import write_files
from sweeplab.reporting.next_steps import EXPORT_ERRORS, next_action, next_steps, study_script
from sweeplab.reporting.pick import Pick
from sweeplab.reporting.plots import Plot, importances, write_plots
from sweeplab.reporting.pruner_review import pruner_cost, review_pruning, summary_lines
from sweeplab.reporting.sections import (
    best_trial,
    completion,
    param_importances,
    plot_gallery,
    search_space,
    setup,
    statistics,
    summary,
    trends,
)
from sweeplab.reporting.trial_sections import (
    all_trials,
    exported_pick,
    failed_trials,
    guard_and_rescue,
    pareto_front,
    pruned_early,
)
from sweeplab.search.records import STUDY_COMMAND
from sweeplab.search.space import focus_count
from sweeplab.search.view import StudyView, full_overrides

log = logging.getLogger("sweeplab.report")


@dataclass
class StudyReport:
    """What a report made (files, plots, presets, the retrain command) and the notes on what it could not."""

    out_dir: Path
    files: dict[str, Path]
    plots: list[Plot]
    preset: Export | None = None  # the best trial (single objective)
    focused: Export | None = None
    notes: list[str] = field(default_factory=list)  # what could not be produced, and why
    pick: Pick | None = None  # a trial the user chose to export (pick.trial / pick.budget)
    picked: Export | None = None  # its preset, optimized/<study>_trial<N>
    retrain: str | None = None  # trains the best trial in full: the preset's command, else its overrides


def write_study_report(
    view: StudyView,
    out_dir: Path,
    flattener: Flattener | None,
    root_dir: str | Path,
    pruned_top_k: int = 3,
    export: bool = True,
    pick: Pick | None = None,
    js_dir: Path | None = None,
) -> StudyReport:
    """Write files, plots, report.md/html into `out_dir`; with `export`, the best trial as a preset and a focused space.

    `js_dir`: where the plots' one `plotly.min.js` lives (a study's sweeps share the one in the study's dir);
    None: beside the plots.

    `flattener` recomposes trials (for the export and for the commands in the report). `pick` is one more
    trial to export, as `optimized/<study>_trial<N>` (the only way to export a trial of a multi-objective
    study); it is exported first and, unlike the best trial, a failure to export it raises (nothing written).
    """
    out_dir = Path(out_dir)
    notes: list[str] = []
    preset = focused = None
    space = focused_space(view)
    best = view.best
    picked = _export_pick(view, flattener, pick, root_dir) if pick else None
    if flattener is None:
        notes.append("no config loader: preset and commands not exported")
    elif export and best is not None:
        preset, focused = _export_best(view, flattener, best, space, root_dir, notes)
    retrain = _retrain_command(flattener, best, preset, notes)
    stats = study_stats(view)
    files = write_files(view, out_dir, retrain, stats, _picked_record(view, pick, picked))
    weights = importances(view)
    plots = write_plots(view, out_dir / "plots", list(weights) or view.param_names, js_dir)
    report = StudyReport(out_dir, files, plots, preset, focused, notes, pick, picked, retrain)
    blocks = _blocks(view, stats, report, flattener, space, weights, pruned_top_k, Path(root_dir))
    (out_dir / "report.md").write_text(to_markdown(blocks, out_dir))
    (out_dir / "report.html").write_text(to_html(blocks, f"Study {view.name}"))
    files["report_md"], files["report_html"] = out_dir / "report.md", out_dir / "report.html"
    return report


def _export_best(
    view: StudyView,
    flattener: Flattener,
    best: FrozenTrial,
    space: dict[str, str] | None,
    root_dir: str | Path,
    notes: list[str],
) -> tuple[Export | None, Export | None]:
    """The best trial as a preset and, where the top trials span a narrower space, a focused search config.
    A failure is a note, not an error: the report is still worth writing, and it says why the export is missing."""
    preset = focused = None
    stamp = f"{view.metric}={best.values[0]:.6g}, exported {datetime.now().isoformat(timespec='seconds')}"
    try:
        preset = export_preset(
            flattener,
            best,
            view.name,
            root_dir,
            f"Trial {best.number} of study {view.name} ({stamp}), trained in full (no quick validation).",
        )
        if space:
            focused = export_focused(
                flattener,
                best,
                space,
                view.name,
                root_dir,
                list(view.attr(STUDY_COMMAND) or []),
                f"Search space narrowed from study {view.name}: spans its top "
                f"{focus_count(len(view.complete))} complete trials ({stamp}).",
            )
    except EXPORT_ERRORS as exc:
        notes.append(f"export failed: {one_line(exc, with_type=False)}")
        log.warning("export failed: %s", one_line(exc, with_type=False))
    return preset, focused


def _retrain_command(
    flattener: Flattener | None, best: FrozenTrial | None, preset: Export | None, notes: list[str]
) -> str | None:
    """The command that trains the best trial in full: the preset's, else (export=false, or the export
    failed) the trial's own overrides as a command line; None without a best trial or a config loader."""
    if preset is not None:
        return preset.command
    if flattener is None or best is None:
        return None
    try:
        return flattener.trial_command(best)
    except EXPORT_ERRORS as exc:
        notes.append(f"retrain command: {one_line(exc, with_type=False)}")
        return None


def _export_pick(view: StudyView, flattener: Flattener | None, pick: Pick, root_dir: str | Path) -> Export:
    """The picked trial as `preset=optimized/<study>_trial<N>`; a failure is the user's one error line."""
    if flattener is None:
        raise SweeplabError(f"trial {pick.trial.number} cannot be exported: no config loader")
    values = ", ".join(f"{m}={v:.6g}" for m, v in zip(view.metrics, pick.trial.values, strict=True))
    note = (
        f"Trial {pick.trial.number} of study {view.name} ({values}), {pick.reason}; "
        f"exported {datetime.now().isoformat(timespec='seconds')}, trained in full (no quick validation)."
    )
    try:
        return export_preset(flattener, pick.trial, view.name, root_dir, note, suffix=pick.preset_suffix)
    except EXPORT_ERRORS as exc:
        raise SweeplabError(
            f"trial {pick.trial.number} of study {view.name} cannot be exported: {one_line(exc, with_type=False)}"
        ) from exc


def _picked_record(view: StudyView, pick: Pick | None, picked: Export | None) -> dict[str, Any] | None:
    """What best_params.json and optimization_results.yaml say about the picked trial."""
    if pick is None or picked is None:
        return None
    return {
        "trial": pick.trial.number,
        "values": list(pick.trial.values),
        "reason": pick.reason,
        "on_pareto_front": pick.dominated_by is None if not view.single else None,
        "preset": picked.name,
        "retrain": picked.command,
    }


def _blocks(
    view: StudyView,
    stats: dict[str, Any],
    report: StudyReport,
    flattener: Flattener | None,
    space: dict[str, str] | None,
    weights: dict[str, float],
    pruned_top_k: int,
    root_dir: Path,
) -> list[Block]:
    """The report's arc: findings and the next action, setup, space, completion, every trial ranked, the
    best trial up close, trends and statistics, plots, then every next step with its command."""
    script = study_script(view)
    study_command = view.attr(STUDY_COMMAND)
    suspects = pruned_too_early(view, pruned_top_k)
    pruning = review_pruning(view)
    second = fallback(view) if view.single else None
    plot = next(
        (f"plots/{p.name}.html" for p in report.plots if p.name == "intermediate_values" and p.html), None
    )
    return [
        Heading(f"Study {view.name}", 1),
        *summary(
            view,
            stats,
            key_params(view, weights),
            evidence(view),
            suspects,
            next_action(view, report.retrain, script),
            summary_lines(view, pruning),
        ),
        *setup(view, command_line(script, *study_command) if study_command is not None else None),
        *search_space(view, _best_job(view, flattener)),
        *completion(view, stats),
        *pruned_early(view, flattener, suspects, pruned_top_k, len(pruning.ahead)),
        *pruner_cost(view, pruning),
        *guard_and_rescue(view),
        *failed_trials(view),
        *pareto_front(view),
        *all_trials(view, second[0].number if second else None),
        *exported_pick(view, report.pick, report.picked),
        *best_trial(view, stats, plot),
        *param_importances(view, weights),
        *trends(view),
        *statistics(view, stats),
        *plot_gallery(report.plots),
        *next_steps(view, report, flattener, space, root_dir, second),
    ]


def _best_job(view: StudyView, flattener: Flattener | None) -> dict[str, Any] | None:
    """The best trial's composed job config (for the settings held fixed beside the searched ones)."""
    best = view.best or (view.ranked()[0] if view.ranked() else None)
    if flattener is None or best is None:
        return None
    try:
        return flattener.flatten(full_overrides(best)).job
    except EXPORT_ERRORS:  # configs changed since the study ran; the export says why
        return None
