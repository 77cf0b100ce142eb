"""Reports of studies built trial by trial in a real storage: statistics, trends, pruned suspects, escaping, browser."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from sweeplab.reporting import analysis, write_study_report
from sweeplab.reporting.plots import write_plots
from sweeplab.search.records import (
    ATTR_EPOCHS,
    ATTR_FAIL_REASON,
    ATTR_MAX_EPOCHS,
    ATTR_QUICK,
    ATTR_TEST,
    STUDY_METRICS,
)
from sweeplab.search.space import SearchSpace
from sweeplab.search.view import StudyView, dumps
from tests.browser import dump_dom, measure, needs_browser, screenshot
from tests.conftest import PLOTS, QUICK, run_cli

EVIL = "<script>document.title='pwned'</script>&\"'"
SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "wd": FloatDistribution(0.0, 0.1),
    "depth": IntDistribution(1, 8),
    "opt": CategoricalDistribution(["adamw", "sgd", EVIL]),
}


def _study(tmp_path: Path, directions: list[str] | None = None) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'studies' / 'synthetic.db'}"
    (tmp_path / "studies").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="synthetic", storage=storage, directions=directions or ["maximize"]
    )
    study.set_user_attr(
        STUDY_METRICS, ["val/f1"] if not directions else ["val/f1", "time/epoch_s"][: len(directions)]
    )
    return study


def _add(study, state, params, value=None, curve=(), **attrs):
    values = None if value is None else (value if isinstance(value, list) else [value])
    study.add_trial(
        create_trial(
            state=state,
            params=params,
            distributions={k: SPACE[k] for k in params},
            values=values,
            intermediate_values=dict(enumerate(curve, start=1)),
            user_attrs={ATTR_EPOCHS: len(curve), ATTR_MAX_EPOCHS: 4, **attrs},
        )
    )


def _filled(tmp_path: Path) -> optuna.Study:
    """Eight complete trials whose value rises with lr, one outlier, two pruned, two failed."""
    study = _study(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(8):
        lr = 10 ** (-4 + 3 * i / 7)
        value = 0.5 + 0.05 * i
        _add(
            study,
            TrialState.COMPLETE,
            {
                "lr": lr,
                "wd": float(rng.uniform(0, 0.1)),
                "depth": i + 1,
                "opt": ["adamw", "sgd", EVIL][i % 3],
            },
            value,
            [value - 0.3, value - 0.2, value - 0.1, value],
            **({ATTR_TEST: {"test/f1": 0.83, "test/acc": 0.84}} if i == 7 else {}),
        )
    _add(study, TrialState.COMPLETE, {"lr": 1e-4, "wd": 0.05, "depth": 2, "opt": "sgd"}, 0.01, [0.01] * 4)
    # at epoch 1 this one ranks first of all trials: a suspect
    _add(study, TrialState.PRUNED, {"lr": 0.05, "wd": 0.01, "depth": 3, "opt": "adamw"}, 0.95, [0.95])
    # at epoch 2 this one ranks last: pruned fairly
    _add(study, TrialState.PRUNED, {"lr": 2e-4, "wd": 0.02, "depth": 4, "opt": "sgd"}, 0.02, [0.01, 0.02])
    _add(
        study,
        TrialState.FAIL,
        {"lr": 0.09, "wd": 0.0, "depth": 8, "opt": "sgd"},
        **{ATTR_FAIL_REASON: "ValueError: NaN"},
    )
    _add(
        study,
        TrialState.FAIL,
        {"lr": 0.08, "wd": 0.0, "depth": 7, "opt": "sgd"},
        **{ATTR_FAIL_REASON: "ValueError: NaN"},
    )
    return study


def _view(study: optuna.Study) -> StudyView:
    return StudyView(
        optuna.load_study(study_name=study.study_name, storage=study._storage), "sqlite:///synthetic"
    )


def test_statistics_drop_the_outlier_and_place_the_best_trial(tmp_path):
    view = _view(_filled(tmp_path))
    stats = analysis.study_stats(view)
    values = [t.value for t in view.complete]
    assert stats["values"]["n"] == 9 and stats["values"]["mean"] == pytest.approx(np.mean(values))
    assert stats["values"]["std"] == pytest.approx(np.std(values, ddof=1))
    assert stats["outliers"] == 1 and stats["values_without_outliers"]["min"] == pytest.approx(0.5)
    assert stats["best"]["trial"] == 7 and stats["best"]["value"] == pytest.approx(0.85)
    assert stats["best"]["z_score"] == pytest.approx((0.85 - np.mean(values)) / np.std(values, ddof=1))
    assert (
        stats["trials"]["COMPLETE"] == 9 and stats["trials"]["PRUNED"] == 2 and stats["trials"]["FAIL"] == 2
    )
    # 9 complete × 4 epochs + 1 + 2 pruned epochs, out of 11 finished × 4
    assert stats["epochs"] == {
        "run": 39,
        "unpruned": 44,
        "saved_fraction": pytest.approx(1 - 39 / 44, abs=1e-4),
    }


def test_trends_bucket_every_complete_trial_and_see_that_larger_lr_did_better(tmp_path):
    view = _view(_filled(tmp_path))
    trends = {t.param: t for t in analysis.param_trends(view)}
    lr = trends["lr"]
    assert lr.kind == "quantiles" and sum(b.n for b in lr.buckets) == 9
    assert lr.spearman > 0.5  # value rises with lr apart from the outlier
    assert lr.buckets[-1].mean > lr.buckets[0].mean
    opt = trends["opt"]
    assert opt.kind == "choices" and sum(b.n for b in opt.buckets) == 9
    sgd = next(b for b in opt.buckets if b.label == "sgd")
    sgd_values = [t.value for t in view.complete if t.params["opt"] == "sgd"]
    assert sgd.n == len(sgd_values) and sgd.mean == pytest.approx(np.mean(sgd_values))


def test_a_pruned_trial_that_led_at_its_epoch_is_flagged_and_a_fair_one_is_not(tmp_path):
    view = _view(_filled(tmp_path))
    suspects = analysis.pruned_too_early(view, top_k=3)
    assert [s.trial.number for s in suspects] == [9]
    assert suspects[0].step == 1 and suspects[0].rank == 1 and suspects[0].peers == 11


def test_failures_are_grouped_by_reason(tmp_path):
    assert analysis.failures(_view(_filled(tmp_path))) == {"ValueError: NaN": [11, 12]}


def test_the_focused_space_parses_and_spans_the_top_trials_inside_the_old_bounds(tmp_path):
    view = _view(_filled(tmp_path))
    space = analysis.focused_space(view)
    parsed = SearchSpace.parse(space)
    top = view.ranked()[: analysis.focus_count(len(view.complete))]
    assert len(top) == 3
    for name, dist in parsed.distributions.items():
        old = SPACE[name]
        if isinstance(dist, CategoricalDistribution):
            assert set(dist.choices) == {t.params[name] for t in top}
            continue
        assert type(dist) is type(old) and dist.log == old.log
        assert old.low <= dist.low and dist.high <= old.high
        assert all(dist.low <= t.params[name] <= dist.high for t in top)
        assert dist.high - dist.low < old.high - old.low
    assert space["lr"].startswith("tag(log, interval(")


def test_report_files_say_what_the_study_holds_and_escape_user_strings(tmp_path):
    study = _filled(tmp_path)
    view = _view(study)
    report = write_study_report(view, tmp_path / "out", flattener=None, root_dir=tmp_path)
    best = json.loads(report.files["best_params"].read_text())
    assert best["trial"] == study.best_trial.number and best["params"] == study.best_trial.params
    rows = list(csv.DictReader(report.files["all_trials"].open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    for row, t in zip(rows, study.trials, strict=True):
        assert row["state"] == t.state.name and row["params_opt"] == t.params["opt"]
        assert (float(row["value"]) if row["value"] else None) == (t.value if t.values else None)
        if t.intermediate_values:
            assert int(row["last_step"]) == max(t.intermediate_values)
    assert rows[11]["fail_reason"] == "ValueError: NaN"

    page = report.files["report_html"].read_text()
    assert "<script" not in page and "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert 'src="http' not in page and "data:image/png;base64," in page  # self-contained
    md = report.files["report_md"].read_text()
    prose = "".join(md.split("```")[::2])  # fenced code (the focused space) shows text literally
    assert not re.search(r"(?<!\\)<script", prose) and "\\<script>" in prose  # text, not a tag
    assert "\n## Possibly pruned too early\n" in md and "| 9 | 1 | 0.95 | 1 of 11 |" in md
    assert "| ValueError: NaN | 2 | 11, 12 |" in md
    assert {p.name for p in report.plots if p.png} == PLOTS
    for plot in report.plots:
        assert plot.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = plot.html.read_text()
        # offline: the only script loaded is the one plotly.min.js beside the plots, none inline
        assert "Plotly.newPlot" in html and re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html) == [
            "plotly.min.js"
        ]
        assert len(html) < 100_000 and f'<a href="plots/{plot.name}.html">' in page
    (js,) = plot.html.parent.glob("*.js")
    assert js.name == "plotly.min.js" and js.stat().st_size > 1_000_000


def test_a_two_objective_study_gets_a_pareto_front_in_files_and_plots(tmp_path):
    study = _study(tmp_path, ["maximize", "minimize"])
    for i in range(6):
        _add(study, TrialState.COMPLETE, {"lr": 10 ** (-3 + i / 3), "depth": i + 1}, [0.5 + 0.1 * i, 1.0 + i])
    report = write_study_report(_view(study), tmp_path / "out", flattener=None, root_dir=tmp_path)
    best = json.loads(report.files["best_params"].read_text())
    assert {p["trial"] for p in best["pareto_front"]} == {t.number for t in study.best_trials}
    assert "pareto_front" in {p.name for p in report.plots if p.png}
    assert "## Pareto front" in report.files["report_md"].read_text()


def _sections(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def test_the_report_reads_as_an_analysis_from_findings_to_next_steps(tmp_path):
    report = write_study_report(_view(_filled(tmp_path)), tmp_path / "out", flattener=None, root_dir=tmp_path)
    md = report.files["report_md"].read_text()
    assert _sections(md) == SECTIONS
    summary = md.split("## Summary\n\n", 1)[1].split("\n## ", 1)[0]
    # best against the median and the first configuration, in sentences; then what mattered and the caveats
    assert (
        "Trial 7 reached the best val/f1, 0.85, 0.2 better than the median of the 9 complete trials (0.65)"
        in summary
    )
    assert (
        "the first configuration tried (trial 0) reached 0.5: the best is 0.35 better than it (+70.0%)"
        in summary
    )
    assert "The params that looked most important for val/f1 (fANOVA): " in summary
    assert "lr (importance 0.2" in summary and "best on average at [0.008085, 0.1] (0.8)" in summary
    assert "The evidence is weak: only 9 complete trials; at most 4 epochs per trial." in summary
    assert "trial 9 ranked 1 of 11 at epoch 1 when it was pruned" in summary
    assert "Next: retrain trial 7 in full" in summary

    # the search space with its distributions; escaped choices
    assert "| lr | 0.0001 .. 0.1 | log-uniform float |" in md and "| depth | 1 .. 8 | uniform int |" in md
    assert "| opt | adamw, sgd, '\\<script>" in md

    # every trial ranked: complete by value, pruned by their value at the pruned epoch, failed with reason
    ranked = md.split("## All trials, ranked\n", 1)[1].split("\n## ", 1)[0]
    rows = [r.split(" | ") for r in ranked.splitlines() if r.startswith("| ") and not r.startswith("| rank")]
    assert [(r[0].lstrip("| "), r[1]) for r in rows] == [
        *[(str(i + 1), str(n)) for i, n in enumerate([7, 6, 5, 4, 3, 2, 1, 0, 8])],
        ("10", "9"),
        ("11", "10"),
        ("-", "11"),
        ("-", "12"),
    ]
    assert rows[9][2:4] == ["0.95", "pruned at epoch 1"] and rows[10][2:4] == ["0.02", "pruned at epoch 2"]
    assert rows[11][3] == "fail" and rows[11][5] == "ValueError: NaN" and rows[0][5] == "best"

    # the best trial up close: its curve beside the median trial's, its test metrics, its z-score
    deep = md.split("## Best trial: trial 7\n", 1)[1].split("\n## ", 1)[0]
    assert "val/f1 0.85, best at epoch 4 of the 4 it ran; +1.00 standard deviations from the mean" in deep
    assert "| 4 | 0.85 | 0.65 |" in deep  # the median of the 9 trials that reached epoch 4
    assert "| test/f1 | 0.83 |" in deep and "| test/acc | 0.84 |" in deep


def _ranked_study(tmp_path: Path, n: int, epochs: int, **attrs) -> StudyView:
    study = _study(tmp_path)
    for i in range(n):
        value = 0.5 + 0.01 * i
        _add(study, TrialState.COMPLETE, {"lr": 10 ** (-4 + 3 * i / n)}, value, [value] * epochs, **attrs)
    return _view(study)


def test_evidence_is_weak_with_few_trials_and_strong_only_with_many_full_length_ones(tmp_path):
    assert analysis.evidence(_ranked_study(tmp_path / "a", 4, 10)).strength == "weak"
    many = analysis.evidence(_ranked_study(tmp_path / "b", 30, 10))
    assert many.strength == "strong" and many.reasons == []
    quick = analysis.evidence(_ranked_study(tmp_path / "c", 30, 3, **{ATTR_QUICK: ["trainer.max_epochs=3"]}))
    assert quick.strength == "moderate" and quick.quick == ["trainer.max_epochs=3"]
    assert quick.reasons == [
        "at most 3 epochs per trial",
        "values from quick validation (trainer.max_epochs=3), not from full training",
    ]


def test_the_fallback_is_the_top_trial_whose_params_differ_most_from_the_best(tmp_path):
    study = _study(tmp_path)
    best = {"lr": 0.01, "wd": 0.05, "depth": 4, "opt": "adamw"}
    _add(study, TrialState.COMPLETE, best, 0.9, [0.9])
    _add(study, TrialState.COMPLETE, {**best, "lr": 0.011}, 0.89, [0.89])  # second, but nearly the best
    _add(study, TrialState.COMPLETE, {"lr": 1e-4, "wd": 0.0, "depth": 1, "opt": "sgd"}, 0.88, [0.88])
    _add(study, TrialState.COMPLETE, {"lr": 0.1, "wd": 0.1, "depth": 8, "opt": "sgd"}, 0.1, [0.1])  # not top
    view = _view(study)
    trial, distance = analysis.fallback(view)
    assert trial.number == 2 and 0.5 < distance <= 1.0
    assert analysis.param_distance(view, best, best) == 0.0


def test_json_files_never_carry_nan(tmp_path):
    assert json.loads(dumps({"a": math.nan, "b": [math.inf, 1.0]})) == {"a": None, "b": [None, 1.0]}


SECTIONS = [
    "Summary",
    "Sweep setup",
    "Search space and fixed settings",
    "Completion status",
    "Possibly pruned too early",
    "What the pruner cost",  # trial 9 had 0.95 at epoch 1, the winner 0.55
    "Failures",
    "All trials, ranked",
    "Best trial: trial 7",
    "Parameter importances",
    "Per-parameter trends",
    "Statistics",
    "Plots",
    "Next steps",
]


@needs_browser
@pytest.mark.slow  # a browser of its own: the whole suite runs it, `-m "not slow"` leaves it out
def test_report_html_renders_in_a_headless_browser_with_every_section_and_no_table_cut_at_1280_or_800_px(
    tmp_path,
):
    report = write_study_report(_view(_filled(tmp_path)), tmp_path / "out", flattener=None, root_dir=tmp_path)
    page = report.files["report_html"]
    dom = dump_dom(page, tmp_path / "chromium")
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert title == "Study synthetic"  # the injected script never ran
    assert "&lt;script&gt;document.title='pwned'" in dom  # shown as text
    for width in (1280, 800):
        shown = measure(page, tmp_path, width)
        assert shown["sections"] == SECTIONS
        assert shown["page_width"] <= shown["window_width"] and shown["overflowing"] == [], width
        assert shown["cut_tables"] == [], width  # every column in view without scrolling sideways
    shot = screenshot(page, tmp_path / "shot.png", tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_study_without_a_complete_trial_still_gets_files_and_a_report_saying_so(tmp_path):
    study = _study(tmp_path)
    _add(study, TrialState.PRUNED, {"lr": 0.01}, 0.2, [0.2])
    _add(study, TrialState.FAIL, {"lr": 0.02}, **{ATTR_FAIL_REASON: "RuntimeError: CUDA out of memory"})
    report = write_study_report(_view(study), tmp_path / "out", flattener=None, root_dir=tmp_path)
    assert json.loads(report.files["best_params"].read_text())["trial"] is None
    assert len(list(csv.DictReader(report.files["all_trials"].open()))) == 2
    md = report.files["report_md"].read_text()
    assert "no complete trial yet" in md and "| RuntimeError: CUDA out of memory | 1 | 1 |" in md
    assert {p.name: p.skipped for p in report.plots}["optimization_history"] == "no complete trial yet"
    assert report.preset is None


def _overlapping(texts) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text()]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1 :] if box.overlaps(other)]


@pytest.mark.parametrize("plot", ["slice", "parallel_coordinate"])
def test_the_png_plots_axis_labels_do_not_overlap_with_long_dotted_param_names(tmp_path, plot):
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as mpl_backend

    from sweeplab.reporting.plots import _legible

    names = [
        "data.batch_size",
        "models.net.drop_rate",
        "models.optimizer.lr",
        "models.optimizer.weight_decay",
    ]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: sum(t.suggest_float(n, 1e-4, 1e-1, log=n.endswith("lr")) for n in names), n_trials=12
    )
    axes = getattr(mpl_backend, f"plot_{plot}")(study)
    figure = np.asarray(axes).ravel()[0].figure
    _legible(figure, plot, names)
    figure.canvas.draw()
    plotted = [a for a in figure.axes if not hasattr(a, "_colorbar")]
    if plot == "slice":
        labels = [a.xaxis.label for a in plotted]
        assert [t.get_text() for t in labels][-1] == "models.optimizer.\nweight_decay"
    else:
        labels = plotted[0].get_xticklabels()
        assert "models.optimizer.\nweight_decay" in [t.get_text() for t in labels]  # Optuna cut it at 17
    assert len(labels) >= 4 and _overlapping(labels) == []


@pytest.mark.slow
def test_a_two_trial_study_draws_its_plots_without_matplotlib_warnings(tmp_path):
    result = run_cli(["-m", "hparams_search=optuna_fast", "hydra.sweeper.n_trials=2", *QUICK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical low and high" not in result.stdout + result.stderr


def test_two_sweeps_of_a_study_share_one_plotly_js_in_the_studys_dir(tmp_path):
    study = _study(tmp_path)
    for i in range(4):
        _add(
            study, TrialState.COMPLETE, {"lr": 10 ** (-3 + i / 3), "depth": i + 1}, 0.5 + 0.1 * i, curve=[0.4]
        )
    study_dir = tmp_path / "multirun" / "exp" / "synthetic"
    for sweep in ("10-00-00", "11-00-00"):
        plots = write_plots(_view(study), study_dir / sweep / "plots", ["lr", "depth"], js_dir=study_dir)
        drawn = [p for p in plots if p.html]
        assert drawn and all('src="../../plotly.min.js"' in p.html.read_text() for p in drawn)
    assert [p.relative_to(study_dir) for p in study_dir.rglob("*.js")] == [Path("plotly.min.js")]


def test_markdown_reads_a_placeholder_as_typed_and_renders_no_tag(tmp_path):
    from sweeplab.reporting.document import Para, Table, to_markdown

    md = to_markdown(
        [Para("add input=submission input.root=<folder> & run"), Table(["a|b"], [["<b>x</b>"]])], tmp_path
    )
    assert "add input=submission input.root=\\<folder> & run" in md  # no &lt;folder&gt; in a terminal
    assert "| \\<b>x\\</b> |" in md and "&lt;" not in md


def test_the_intermediate_values_plot_of_many_trials_keeps_its_size_without_a_legend_of_each_trial(tmp_path):
    from PIL import Image

    heights = {}
    for trials in (5, 60):
        study = _study(tmp_path / str(trials))
        for i in range(trials):
            params = {"lr": 10 ** (-3 + i / trials), "depth": 1 + i % 4}
            _add(study, TrialState.COMPLETE, params, 0.5, curve=[0.3 + i / 1000, 0.4])
        plots = write_plots(_view(study), tmp_path / str(trials) / "plots", ["lr", "depth"], js_dir=tmp_path)
        (png,) = [p.png for p in plots if p.png is not None and p.png.name == "intermediate_values.png"]
        heights[trials] = Image.open(png).size[1]
    # a legend of 60 trials made the plot 1,300 px tall, one of 1,000 trials 21,000; 5 trials keep theirs
    assert heights[60] == heights[5] < 1000
