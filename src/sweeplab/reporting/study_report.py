"""Everything a finished (or running) study leaves behind, from its storage: files, plots, report, preset.

Called by the sweeper at the end of a study (into the sweep dir) and by `runners/report.py` at any time.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import FrozenTrial

from sweeplab.errors import SweeplabError, one_line
from sweeplab.reporting import analysis, sections
from sweeplab.reporting.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Links,
    Para,
    Table,
    cell,
    to_html,
    to_markdown,
)
from sweeplab.reporting.export import Export, Flattener, command_line, export_focused, export_preset
from sweeplab.reporting.files import write_files
from sweeplab.reporting.pick import Pick, pick_trial, round_budget
from sweeplab.reporting.plots import Plot, importances, write_plots
from sweeplab.reporting.submission import submission_steps
from sweeplab.reporting.view import StudyView, full_overrides
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_GUARD_SAVED,
    ATTR_RESCUE_OF,
    ATTR_RESUMED,
    STUDY_COMMAND,
    STUDY_SCRIPT,
    STUDY_SETTINGS,
    counts,
)
from sweeplab.search.space import focus_count, format_value, override_key
from sweeplab.search.storage import default_storage, masked

log = logging.getLogger("sweeplab.report")

SEEDS = "42,777,2024"  # the seeds a winner is validated over
CLOSE_FALLBACK = 0.1  # a fallback nearer the best than this (param distance) is said to differ little
REPORT_SCRIPT = "report.py"  # beside the training script (runners/)
# Recomposing a trial fails like this when configs changed since the study ran (a group or key removed).
EXPORT_ERRORS = (SweeplabError, HydraException, OmegaConfBaseException)


@dataclass
class StudyReport:
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
) -> StudyReport:
    """Write files, plots, report.md/html into `out_dir`; with `export`, the best trial as a preset and a focused space.

    `flattener` recomposes trials (for the export and for the commands in the report). `pick` is one more
    trial to export, as `optimized/<study>_trial<N>` (the only way to export a trial of a multi-objective
    study); it is exported first and, unlike the best trial, a failure to export it raises (nothing written).
    """
    out_dir = Path(out_dir)
    notes: list[str] = []
    preset = focused = None
    retrain: str | None = None
    space = analysis.focused_space(view)
    best = view.best
    picked = _export_pick(view, flattener, pick, root_dir) if pick else None
    if flattener is None:
        notes.append("no config loader: preset and commands not exported")
    elif export and best is not None:
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
        except EXPORT_ERRORS as exc:  # the report is still worth writing; it says why the export is missing
            notes.append(f"export failed: {one_line(exc, with_type=False)}")
            log.warning("export failed: %s", one_line(exc, with_type=False))
    if preset is None and retrain is None and flattener is not None and best is not None:
        retrain = _command_line(flattener, best, notes)  # export=false, or the export failed
    retrain = preset.command if preset else retrain
    stats = analysis.study_stats(view)
    files = write_files(view, out_dir, retrain, stats, _picked_record(view, pick, picked))
    weights = importances(view)
    plots = write_plots(view, out_dir / "plots", list(weights) or view.param_names)
    report = StudyReport(out_dir, files, plots, preset, focused, notes, pick, picked, retrain)
    blocks = _blocks(view, stats, report, flattener, space, weights, pruned_top_k, Path(root_dir))
    (out_dir / "report.md").write_text(to_markdown(blocks, out_dir))
    (out_dir / "report.html").write_text(to_html(blocks, f"Study {view.name}"))
    files["report_md"], files["report_html"] = out_dir / "report.md", out_dir / "report.html"
    return report


def _app_job(flattener: Flattener | None) -> dict[str, Any] | None:
    """The app's own config, or None where it cannot be composed here (the export says why)."""
    try:
        return flattener.root_job if flattener is not None else None
    except EXPORT_ERRORS:
        return None


def _has_seed(flattener: Flattener | None) -> bool:
    """Whether the app's config has a `seed` key (then the report offers a check across seeds)."""
    return "seed" in (_app_job(flattener) or {})


def _command_line(flattener: Flattener, best: FrozenTrial, notes: list[str]) -> str | None:
    """The best trial's own overrides as a command line, where no preset could be written."""
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
    script = str(view.attr(STUDY_SCRIPT) or "runners/train.py")
    study_command = view.attr(STUDY_COMMAND)
    suspects = analysis.pruned_too_early(view, pruned_top_k)
    second = analysis.fallback(view) if view.single else None
    plot = next(
        (f"plots/{p.name}.html" for p in report.plots if p.name == "intermediate_values" and p.html), None
    )
    blocks: list[Block] = [
        Heading(f"Study {view.name}", 1),
        *sections.summary(
            view,
            stats,
            analysis.key_params(view, weights),
            analysis.evidence(view),
            suspects,
            _next_action(view, report, script),
        ),
        *sections.setup(view, command_line(script, *study_command) if study_command is not None else None),
        *sections.search_space(view, _best_job(view, flattener)),
        *sections.completion(view, stats),
        *_pruned(view, flattener, suspects, pruned_top_k),
        *_guard_and_rescue(view),
        *_failures(view),
        *_pareto(view),
        *sections.all_trials(view, second[0].number if second else None),
        *_exported_pick(view, report),
        *sections.best_trial(view, stats, plot),
    ]
    if weights:
        blocks += [
            Heading("Parameter importances"),
            Para(f"fANOVA importance of each param for {view.metric}, over the complete trials."),
            Table(["param", "importance"], [[p, w] for p, w in weights.items()]),
        ]
    blocks += _trends(view)
    blocks += _statistics(view, stats)
    blocks += _plots(report.plots)
    blocks += _next_steps(view, report, flattener, space, root_dir, _has_seed(flattener), second)
    return blocks


def _next_action(view: StudyView, report: StudyReport, script: str) -> tuple[str, str | None]:
    """The one thing to do next, for the summary: (what, its command or None)."""
    best = view.best
    if best is not None:
        if report.retrain:
            return f"retrain trial {best.number} in full", report.retrain
        return f"retrain trial {best.number} in full (no command could be built: see Next steps)", None
    if not view.single and view.front:
        return "export one trial of the Pareto front as a preset; the commands are under Next steps", None
    more = _continue_command(view, script)
    return ("run more trials of this study", more[0]) if more else ("run the study", None)


def _best_job(view: StudyView, flattener: Flattener | None) -> dict[str, Any] | None:
    """The best trial's composed job config (for the settings held fixed beside the searched ones)."""
    best = view.best or (view.ranked()[0] if view.ranked() else None)
    if flattener is None or best is None:
        return None
    try:
        return flattener.flatten(full_overrides(best)).job
    except EXPORT_ERRORS:  # configs changed since the study ran; the export says why
        return None


def _pareto(view: StudyView) -> list[Block]:
    if view.single or not view.front:
        return []
    params = view.param_names
    rows = [
        [t.number, *t.values, t.user_attrs.get(ATTR_EPOCHS), *(t.params.get(p) for p in params)]
        for t in view.front
    ]
    return [
        Heading("Pareto front"),
        Para(
            "The complete trials no other complete trial matches or beats in every objective: each is a "
            "different trade-off (no order among them). Next steps give the command that exports one as a preset."
        ),
        Table(["trial", *view.metrics, "epochs", *params], rows),
    ]


def _exported_pick(view: StudyView, report: StudyReport) -> list[Block]:
    """Which trial was exported on request, and why; a warning when it is off the Pareto front."""
    pick, picked = report.pick, report.picked
    if pick is None or picked is None:
        return []
    values = ", ".join(f"{m} {cell(v)}" for m, v in zip(view.metrics, pick.trial.values, strict=True))
    blocks: list[Block] = [
        Heading("Exported trial"),
        Para(
            f"Trial {pick.trial.number} ({values}) was exported as {picked.option} ({picked.path}): "
            f"{pick.reason}."
        ),
    ]
    if pick.dominated_by is not None:
        blocks.append(
            Para(
                f"Warning: trial {pick.trial.number} is not on the Pareto front: trial {pick.dominated_by} "
                "is at least as good in every objective and better in one."
            )
        )
    return blocks


def _trends(view: StudyView) -> list[Block]:
    trends = analysis.param_trends(view)
    if not trends:
        return []
    blocks: list[Block] = [
        Heading("Per-parameter trends"),
        Para(
            f"Complete trials grouped by each param (numbers: quartile buckets; others: per choice), with the "
            f"mean and best {view.metric} in each group."
        ),
    ]
    for trend in trends:
        title = trend.param
        if trend.spearman is not None:
            leaning = "larger" if trend.spearman * view.sign > 0 else "smaller"
            title += f" (Spearman rho {trend.spearman:+.2f} with {view.metric}: {leaning} values did better)"
        blocks += [
            Heading(title, 3),
            Table(
                ["range" if trend.kind == "quantiles" else "choice", "trials", "mean", "best"],
                [[b.label, b.n, b.mean, b.best] for b in trend.buckets],
            ),
        ]
    return blocks


def _statistics(view: StudyView, stats: dict[str, Any]) -> list[Block]:
    every, clean = stats["values"], stats["values_without_outliers"]
    if not every["n"]:
        return []
    rows = [[k, every[k], clean[k]] for k in ("n", "mean", "median", "std", "min", "max")]
    blocks: list[Block] = [
        Heading("Statistics"),
        Para(
            f"{view.metric} over the complete trials, and again without the {stats['outliers']} outlier(s) "
            f"beyond {analysis.IQR_FENCE} IQR of the quartiles."
        ),
        Table(["statistic", "all complete", "without outliers"], rows),
    ]
    best = stats.get("best")
    if best and best["z_score"] is not None:
        blocks.append(Para(f"The best trial lies {best['z_score']:+.2f} standard deviations from the mean."))
    return blocks


def _pruned(
    view: StudyView, flattener: Flattener | None, suspects: list[analysis.EarlyPruned], top_k: int
) -> list[Block]:
    """The pruned trials that ranked near the top when they were stopped, each with the command that trains
    it in full: where the pruner may have killed the best configuration."""
    if not view.pruned:
        return []
    if not suspects:
        return [
            Heading("Possibly pruned too early"),
            Para(
                f"None: no pruned trial ranked in the top {top_k} of the trials at the epoch it was pruned."
            ),
        ]
    blocks: list[Block] = [
        Heading("Possibly pruned too early"),
        Para(
            f"These ranked in the top {top_k} of all trials at the epoch they were pruned: the pruner compared "
            "them with trials that were further along or luckier at that epoch. Each command trains one in full."
        ),
        Table(
            ["trial", "pruned at epoch", view.metric, "rank at that epoch", "params"],
            [
                [s.trial.number, s.step, s.value, f"{s.rank} of {s.peers}", _params(s.trial.params)]
                for s in suspects
            ],
        ),
    ]
    commands = []
    for s in suspects:
        try:
            line = flattener.trial_command(s.trial) if flattener else None
        except EXPORT_ERRORS as exc:
            line = None
            log.warning("no command for trial %d: %s", s.trial.number, one_line(exc, with_type=False))
        commands.append(
            f"# trial {s.trial.number}\n{line}" if line else f"# trial {s.trial.number}: no command (see log)"
        )
    blocks.append(Code("\n".join(commands)))
    return blocks


def _guard_and_rescue(view: StudyView) -> list[Block]:
    """The prunes the guard vetoed (rule, epoch) and the pruned trials run again in full."""
    by_number = {t.number: t for t in view.trials}
    saved = [t for t in view.trials if t.user_attrs.get(ATTR_GUARD_SAVED)]
    rescues = [t for t in view.trials if ATTR_RESCUE_OF in t.user_attrs]
    blocks: list[Block] = []
    if saved:
        blocks += [
            Heading("Saved by the guard"),
            Para(
                "The pruner would have stopped these trials; a guard rule (hydra.sweeper.guard) kept them running."
            ),
            Table(
                ["trial", "state", view.metric, "saved at epoch (rule)"],
                [
                    [
                        t.number,
                        t.state.name,
                        t.values[0] if t.values else None,
                        ", ".join(f"{step} ({rule})" for step, rule in t.user_attrs[ATTR_GUARD_SAVED]),
                    ]
                    for t in saved
                ],
            ),
        ]
    if rescues:
        rows = []
        for t in rescues:
            original = by_number.get(int(t.user_attrs[ATTR_RESCUE_OF]))
            step = original.last_step if original else None
            at_prune = original.intermediate_values.get(step) if original and step is not None else None
            rows.append(
                [
                    t.number,
                    t.user_attrs[ATTR_RESCUE_OF],
                    step,
                    at_prune,
                    _resumed(t),
                    t.user_attrs.get(ATTR_EPOCHS),
                    t.state.name,
                    t.values[0] if t.values else None,
                ]
            )
        blocks += [
            Heading("Rescued"),
            Para(
                "Pruned trials that ranked best at their prune step, run again unpruned with the same params "
                "(hydra.sweeper.rescue.top_k); their results count like any trial's. A rescue resumes its "
                "trial from the checkpoint of the epoch it was paused at (hydra.sweeper.pause.keep) and trains "
                "only the remaining epochs: its curve continues the paused one (in the learning-curves plot, "
                "one curve per configuration, the pause marked x)."
            ),
            Table(
                [
                    "trial",
                    "rescue of",
                    "paused at epoch",
                    f"{view.metric} then",
                    "resumed",
                    "epochs run",
                    "state",
                    view.metric,
                ],
                rows,
            ),
        ]
    return blocks


def _resumed(rescue: FrozenTrial) -> str:
    """How a rescue started: from the paused checkpoint, or from the first epoch and why."""
    resumed = rescue.user_attrs.get(ATTR_RESUMED)
    if not resumed:
        return "-"
    if resumed.get("checkpoint"):
        return f"from its checkpoint at step {resumed['step']}"
    return f"from the first epoch: {resumed.get('reason')}"


def _failures(view: StudyView) -> list[Block]:
    groups = analysis.failures(view)
    if not groups:
        return []
    return [
        Heading("Failures"),
        Para('"interrupted" trials were stopped by a killed or interrupted sweep; their params ran again.'),
        Table(
            ["reason", "trials", "trial numbers"],
            [[r, len(n), ", ".join(map(str, n))] for r, n in groups.items()],
        ),
    ]


def _plots(plots: list[Plot]) -> list[Block]:
    blocks: list[Block] = [Heading("Plots")]
    drawn = [p for p in plots if p.png]
    for plot in drawn:
        blocks += [Heading(plot.title, 3), Image(plot.png, plot.title)]
    blocks += [
        Para("Interactive versions (plotly, offline: they load plots/plotly.min.js):"),
        Links([(p.title, f"plots/{p.name}.html") for p in drawn if p.html]),
    ]
    skipped = [f"{p.title}: not drawn ({p.skipped})" for p in plots if p.skipped]
    return blocks + ([Bullets(skipped)] if skipped else [])


def _next_steps(
    view: StudyView,
    report: StudyReport,
    flattener: Flattener | None,
    space: dict[str, str] | None,
    root_dir: Path,
    seeded: bool,
    second: tuple[FrozenTrial, float] | None,
) -> list[Block]:
    """What to run next, each with its command: retrain, check over seeds (only for an app whose config has a
    `seed` key), a fallback configuration, a focused study, more trials."""
    blocks: list[Block] = [Heading("Next steps")]
    script = str(view.attr(STUDY_SCRIPT) or "runners/train.py")
    if report.pick and report.picked:
        blocks += [
            Para(
                f"Retrain trial {report.pick.trial.number} in full ({report.pick.reason}). The preset is "
                f"{report.picked.path}:"
            ),
            Code(report.picked.command),
        ]
        if seeded:
            blocks += _seed_check(report.picked.command, flattener)
    if not view.single:
        blocks += _pareto_exports(view, root_dir)
    if report.retrain:
        where = f" (preset written to {report.preset.path})" if report.preset else ""
        blocks += [Para(f"Retrain the best trial in full{where}:"), Code(report.retrain)]
        if seeded:
            blocks += _seed_check(report.retrain, flattener)
    if report.preset is not None:
        blocks += submission_steps(view, report.retrain, _app_job(flattener), script, root_dir)
    if second is not None and flattener is not None:
        blocks += _fallback(view, flattener, *second)
    if space:
        yaml_text = OmegaConf.to_yaml(OmegaConf.create({"hydra": {"sweeper": {"params": space}}}))
        where = f" (written to {report.focused.path})" if report.focused else ""
        blocks += [
            Para(
                f"A narrower search space spanning the top {focus_count(len(view.complete))} complete "
                f"trials{where}:"
            ),
            Code(f"# @package _global_\n{yaml_text}".rstrip()),
        ]
        if report.focused:
            blocks += [Para("Run a focused study on it:"), Code(report.focused.command)]
    more = _continue_command(view, script)
    if more:
        command, added = more
        blocks += [
            Para(
                f"Or continue this study with {added} more trials, as many again as it was run with "
                "(the stored trials count toward n_trials):"
            ),
            Code(command),
        ]
    blocks += [Bullets([f"not produced: {note}" for note in report.notes])] if report.notes else []
    return blocks


def _continue_command(view: StudyView, script: str) -> tuple[str, int] | None:
    """The study's own command with n_trials raised by as many trials as it was configured for (by those
    that count so far, for a study that stored no settings), and that number."""
    command = view.attr(STUDY_COMMAND)
    if command is None:
        return None
    counted = sum(1 for t in view.trials if counts(t))
    added = int((view.attr(STUDY_SETTINGS) or {}).get("n_trials") or max(counted, 1))
    kept = [a for a in command if override_key(a) != "hydra.sweeper.n_trials"]
    return command_line(script, *kept, f"hydra.sweeper.n_trials={counted + added}"), added


def _fallback(view: StudyView, flattener: Flattener, trial: FrozenTrial, distance: float) -> list[Block]:
    """The second configuration to try: a good trial unlike the best one, with the command that trains it."""
    try:
        command = flattener.trial_command(trial)
    except EXPORT_ERRORS as exc:
        log.warning("no command for the fallback trial %d: %s", trial.number, one_line(exc, with_type=False))
        return []
    rank = [t.number for t in view.ranked()].index(trial.number) + 1
    close = (
        " The top trials agree closely, so this fallback differs little from the best."
        if distance < CLOSE_FALLBACK
        else ""
    )
    return [
        Para(
            f"Fallback, if the best does not hold up: trial {trial.number} ({view.metric} {cell(trial.values[0])}, "
            f"rank {rank}) is the trial among the top {max(2, focus_count(len(view.complete)))} whose params "
            f"differ most from the best's (distance {distance:.2f}; 0: the same params, 1: as far apart as the "
            f"space allows).{close} Train it in full:"
        ),
        Code(command),
    ]


def _seed_check(retrain: str, flattener: Flattener | None) -> list[Block]:
    """The retrain command over SEEDS; where settings follow the seed (the data split), the same with them
    held at the seed the study ran with, so that the spread is the training seed's alone."""
    blocks: list[Block] = [
        Para("Check that it holds across seeds (a summary with mean and std is written to the sweep dir):"),
        Code(_multirun(retrain, f"seed={SEEDS}")),
    ]
    followers = flattener.following("seed") if flattener is not None else []
    if followers:
        seed = format_value(flattener.root_job["seed"]) if flattener is not None else ""
        held = [f"{k}={seed}" for k in followers]
        blocks += [
            Para(
                f"{', '.join(followers)} follow{'s' if len(followers) == 1 else ''} the seed, so each seed above "
                "also trains and measures on another data split, and the spread includes the split's. "
                f"To vary only the training seed, hold {'it' if len(followers) == 1 else 'them'} fixed:"
            ),
            Code(_multirun(retrain, f"seed={SEEDS}", *held)),
        ]
    return blocks


def _multirun(command: str, *sweep: str) -> str:
    """`python <script> <args>` as `python <script> -m <args> <sweep>` (the sweep's keys replace the args')."""
    interpreter, script, *args = shlex.split(command)
    keys = {override_key(a) for a in sweep}
    args = [a for a in args if override_key(a) not in keys]
    return shlex.join([interpreter, script, "-m", *args, *sweep])


def _pareto_exports(view: StudyView, root_dir: Path) -> list[Block]:
    """The commands that export one trial of the front as a preset: by number, or by a budget on the second objective."""
    front = sorted(view.front, key=lambda t: t.values[1])
    if not front:
        return []
    script = Path(str(view.attr(STUDY_SCRIPT) or "runners/train.py")).with_name(REPORT_SCRIPT)
    if not (root_dir / script).is_file():
        return []  # an app without sweeplab's report runner beside it
    base = [f"study_name={view.name}"]
    if view.storage_url != masked(default_storage(view.name, root_dir)):  # report.py runs from root_dir
        base.append(f"storage={view.storage_url}")
    lines = []
    for t in front:
        values = ", ".join(f"{m}={cell(v)}" for m, v in zip(view.metrics, t.values, strict=True))
        lines.append(
            f"# trial {t.number}: {values}\n{command_line(str(script), *base, f'pick.trial={t.number}')}"
        )
    budget = round_budget(front[len(front) // 2].values[1], view.directions[1])
    example = pick_trial(view, budget=budget).trial.number
    bound = "at most" if view.directions[1] == "minimize" else "at least"
    return [
        Para(
            "Export a trial of the Pareto front as a preset (optimized/<study>_trial<N>), with the command that "
            "retrains it, by its number:"
        ),
        Code("\n".join(lines)),
        Para(
            f"or as the best {view.metric} among the trials whose {view.metrics[1]} is {bound} a budget "
            f"(here: trial {example}):"
        ),
        Code(command_line(str(script), *base, f"pick.budget={budget}")),
    ]


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={cell(v)}" for k, v in params.items())
