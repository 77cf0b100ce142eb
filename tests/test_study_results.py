"""What a real study leaves behind, checked against its storage: files, plots, report, the exported preset."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeplab.reporting.export import SWEEP_GROUPS, Flattener
from sweeplab.search.space import SearchSpace
from sweeplab.search.view import full_overrides
from tests.browser import measure, needs_browser
from tests.conftest import CONF, PLOTS, QUICK, run_cli, sweep, sweep_dirs

pytestmark = pytest.mark.slow  # every test here runs CLI sweeps or report commands

STUDY = "rep_fast"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One quick study (2-epoch quick validation, full training is 8 epochs) run as a user runs it."""
    where = tmp_path_factory.mktemp("study")
    result = sweep(
        [
            "-m",
            "hparams_search=optuna_fast",
            "exp_name=rep",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.quick_validation.epochs=2",
            "hydra.sweeper.pruner.n_startup_trials=2",
            *QUICK,
        ],
        where,
    ).result
    (where / "console.txt").write_text(result.stdout + result.stderr)
    return where


def _sweep_dir(root: Path) -> Path:
    """The fixture study's sweep dir: the first under multirun/rep (a focused study run by a test comes later)."""
    return sweep_dirs(root, "rep", STUDY)[0]


def _study(root: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root / 'studies' / STUDY}.db")


def test_only_the_three_best_trials_keep_a_weights_only_checkpoint_and_best_params_lists_them(root):
    import torch

    study, out = _study(root), _sweep_dir(root)
    on_disk = {int(p.parent.parent.name) for p in out.glob("*/checkpoints/*.ckpt")}
    ranked = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    best3 = {t.number for t in ranked[:3]}
    assert on_disk == best3  # pruned trials and the other complete ones keep none
    listed = json.loads((out / "best_params.json").read_text())["checkpoints"]
    assert [int(n) for n in listed] == [t.number for t in ranked[:3]]
    for paths in listed.values():
        state = torch.load(paths[0], map_location="cpu", weights_only=True)
        assert "state_dict" in state and "optimizer_states" not in state
    assert "Checkpoints kept: 3 trial(s)" in (out / "report.md").read_text()


def test_study_files_say_what_the_storage_holds(root):
    study, out = _study(root), _sweep_dir(root)
    best = study.best_trial
    best_params = json.loads((out / "best_params.json").read_text())
    assert (best_params["trial"], best_params["value"], best_params["params"]) == (
        best.number,
        best.value,
        best.params,
    )
    assert best_params["retrain"].endswith(f"preset=optimized/{STUDY}")

    rows = list(csv.DictReader((out / "all_trials.csv").open()))
    assert len(rows) == len(study.trials) == 6
    for row, t in zip(rows, study.trials, strict=True):
        assert (int(row["number"]), row["state"]) == (t.number, t.state.name)
        assert float(row["value"]) == pytest.approx(t.value)
        assert float(row["params_models.optimizer.lr"]) == pytest.approx(t.params["models.optimizer.lr"])
        assert int(row["epochs_run"]) == t.user_attrs["epochs_run"] and int(row["max_epochs"]) == 2
        assert int(row["last_step"]) == max(t.intermediate_values)
        assert float(row["last_value"]) == pytest.approx(t.intermediate_values[max(t.intermediate_values)])

    stats = json.loads((out / "study_stats.json").read_text())
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        assert stats["trials"][state.name] == len(study.get_trials(states=(state,)))
    assert stats["epochs"]["run"] == sum(t.user_attrs["epochs_run"] for t in study.trials)
    assert stats["epochs"]["unpruned"] == 2 * 6
    complete = [t.value for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert stats["values"]["mean"] == pytest.approx(np.mean(complete))
    assert (stats["sampler"], stats["pruner"]) == ("TPESampler", "PercentilePruner")
    assert stats["stopped"] == "the study has its 6 trials"

    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert results == {"name": "optuna", "best_params": best.params, "best_value": pytest.approx(best.value)}

    for name in PLOTS:  # one plotly.min.js for the study's sweeps, in its dir (multirun/<exp>/<study>/)
        assert 'src="../../plotly.min.js"' in (out / "plots" / f"{name}.html").read_text()
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out.parent / "plotly.min.js").stat().st_size > 1_000_000 and not list(out.rglob("*.js"))
    # everything but the trials' checkpoints (kept for predict and rescue) fits in 8 MB
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and f.suffix != ".ckpt") < 8_000_000
    report = (out / "report.md").read_text()
    assert f"| 1 | {best.number} | {best.value:.4g} | complete |" in report
    assert f"preset=optimized/{STUDY}" in report and "seed=42,777,2024" in report
    assert "<img alt=" in (out / "report.html").read_text()


# the sections every single-objective study's report has, in this order (others appear between them)
ARC = [
    "Summary",
    "Sweep setup",
    "Search space and fixed settings",
    "Completion status",
    "All trials, ranked",
    "Per-parameter trends",
    "Statistics",
    "Plots",
    "Next steps",
]


@needs_browser
def test_the_studys_report_shows_its_sections_in_a_browser_with_nothing_overflowing_or_cut_at_1280_or_800_px(
    root, tmp_path
):
    for width in (1280, 800):
        shown = measure(_sweep_dir(root) / "report.html", tmp_path, width)
        assert [s for s in shown["sections"] if s in ARC] == ARC
        assert f"Best trial: trial {_study(root).best_trial.number}" in shown["sections"]
        assert shown["page_width"] <= shown["window_width"] and shown["overflowing"] == [], width
        assert shown["cut_tables"] == [], width  # every column in view without scrolling sideways


def _job_config(overrides: list[str]) -> tuple[dict, dict]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    job = OmegaConf.to_container(cfg, resolve=False)
    job.pop("hydra")
    return job, choices


def _training(choices: dict) -> dict:
    return {g: c for g, c in choices.items() if not g.startswith("hydra") and g not in SWEEP_GROUPS}


def test_the_exported_preset_reproduces_the_best_trials_config_trained_in_full(root, monkeypatch):
    monkeypatch.chdir(root)  # generated configs are found under the directory the command runs from
    best = _study(root).best_trial
    trial_dir = _sweep_dir(root) / str(best.number)
    ran = OmegaConf.to_container(OmegaConf.load(trial_dir / ".hydra" / "config.yaml"), resolve=False)
    ran_choices = OmegaConf.load(trial_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    assert ran["trainer"]["max_epochs"] == 2  # quick validation ...

    job, choices = _job_config([f"preset=optimized/{STUDY}"])
    defaults, _ = _job_config([])
    # ... reverts to full training
    assert job["trainer"]["max_epochs"] == defaults["trainer"]["max_epochs"] == 8
    ran["trainer"]["max_epochs"] = defaults["trainer"]["max_epochs"]
    assert job == ran  # everything else as the trial ran it, searched values, fixed overrides and all
    assert _training(choices) == _training(OmegaConf.to_container(ran_choices))
    assert job["models"]["optimizer"]["lr"] == best.params["models.optimizer.lr"]
    assert job["trainer"]["limit_train_batches"] == 5  # a fixed +key from the sweep's command line


def test_the_focused_search_config_narrows_the_space_and_composes(root, monkeypatch):
    monkeypatch.chdir(root)
    path = root / "studies" / "conf" / "search" / "focused" / f"{STUDY}.yaml"
    assert path.read_text().startswith("# @package _global_")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna_fast", f"search=focused/{STUDY}"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    focused = SearchSpace.parse(cfg.hydra.sweeper.params).distributions
    stored = _study(root).trials[0].distributions
    lr, old = focused["models.optimizer.lr"], stored["models.optimizer.lr"]
    assert lr.log and old.low <= lr.low < lr.high <= old.high and (lr.low, lr.high) != (old.low, old.high)


def test_the_report_runner_writes_the_same_files_from_the_storage_alone(root):
    result = run_cli([f"study_name={STUDY}", "out_dir=again"], cwd=root, script="runners/report.py")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, again = _sweep_dir(root), root / "again"
    for name in (
        "best_params.json",
        "all_trials.csv",
        "study_stats.json",
        "optimization_results.yaml",
        "report.md",
    ):
        assert (again / name).read_text() == (sweep / name).read_text(), name
    assert {p.stem for p in (again / "plots").glob("*.png")} == PLOTS


def test_the_report_runner_reports_a_study_that_is_still_running(root, tmp_path):
    (tmp_path / "studies").mkdir()
    shutil.copy(root / "studies" / f"{STUDY}.db", tmp_path / "studies" / f"{STUDY}.db")
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'studies' / STUDY}.db")
    running = study.ask()  # a trial some worker is training right now
    result = run_cli([f"study_name={STUDY}"], cwd=tmp_path, script="runners/report.py")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "reports" / STUDY
    assert json.loads((out / "study_stats.json").read_text())["trials"]["RUNNING"] == 1
    rows = {int(r["number"]): r for r in csv.DictReader((out / "all_trials.csv").open())}
    assert rows[running.number]["state"] == "RUNNING"
    md = (out / "report.md").read_text()
    assert "| running | 1 |" in md and "The study is still running (1 trial running)" in md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "study_name=None: give the study to report"),
        (["study_name=nope"], "study_name='nope': no study file studies/nope.db"),
        (["study_name=x", "storage=sqlite:////no/such/dir/x.db"], "no such SQLite file"),
        (["study_name=x", "pruned_top_k=0"], "pruned_top_k=0: must be an integer >= 1"),
        (
            ["study_name=x", "storage=postgresql://me:s3cret@127.0.0.1:9/db"],
            "storage='postgresql://me:***@127.0.0.1:9/db'",
        ),
    ],
)
def test_report_runner_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = run_cli(args, cwd=tmp_path, script="runners/report.py")
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    ours = next(line for line in result.stderr.splitlines() if message in line)
    assert "s3cret" not in ours  # (Hydra itself echoes the overrides as typed, above our line)
    assert list(tmp_path.iterdir()) == []


def test_a_seed_multirun_writes_a_summary_whose_numbers_are_the_jobs_metrics(tmp_path):
    result = run_cli(
        ["-m", "seed=1,2", "models.optimizer.lr=0.003,-1", "exp_name=seeds", "trainer.max_epochs=1", *QUICK],
        cwd=tmp_path,
    )
    assert result.returncode != 0  # the lr=-1 jobs fail, and Hydra's basic sweeper reports it ...
    sweep = sweep_dirs(tmp_path, "seeds")[-1]
    summary = json.loads((sweep / "multirun_summary.json").read_text())  # ... after the summary was written
    assert (summary["jobs"], summary["completed"]) == (4, 2)
    assert [f["overrides"] for f in summary["failed"]] == [
        ["seed=1", "models.optimizer.lr=-1"],
        ["seed=2", "models.optimizer.lr=-1"],
    ]
    assert all("must be a number > 0" in f["error"] for f in summary["failed"])
    metrics = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 2)]
    for name, values in {
        "val/f1": [m["best_val"]["val/f1"] for m in metrics],
        "test/f1": [m["test"]["test/f1"] for m in metrics],
    }.items():
        stats = summary["metrics"][name]
        assert stats["n"] == 2
        assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(
            np.std(values, ddof=1)
        )
        assert (stats["min"], stats["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))
    table = (sweep / "multirun_summary.md").read_text()
    assert "| 0 | seed=1 models.optimizer.lr=0.003 | COMPLETED |" in table and "## Failed jobs" in table


def test_the_command_given_for_a_trial_trains_exactly_its_config_in_full(root, monkeypatch):
    monkeypatch.chdir(root)
    trial = next(t for t in _study(root).trials if t.number != _study(root).best_trial.number)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        flattener = Flattener(lambda o: loader.load_configuration("train", o, run_mode=RunMode.RUN))
        command = shlex.split(flattener.trial_command(trial))
        cfg = compose("train", overrides=command[2:])
        expected = flattener.flatten(full_overrides(trial)).job
    GlobalHydra.instance().clear()
    job = OmegaConf.to_container(cfg, resolve=False)
    assert os.path.samefile(command[0], sys.executable)  # the interpreter that ran the study
    assert command[1] == "runners/train.py" or command[1].endswith("runners/train.py")
    assert job == expected
    assert (
        job["trainer"]["max_epochs"] == 8
        and job["models"]["optimizer"]["lr"] == trial.params["models.optimizer.lr"]
    )


def test_a_studys_console_has_one_status_line_per_trial_and_each_trials_lines_go_to_its_log(root):
    console = (root / "console.txt").read_text()
    status = re.findall(r"\[(\d)/6\] trial (\d) (COMPLETE|PRUNED|FAIL).* elapsed=", console)
    assert sorted(int(n) for n, _, _ in status) == [1, 2, 3, 4, 5, 6]
    assert all("left~" in line for line in console.splitlines() if "] trial " in line and "[6/6]" not in line)
    # per-trial chatter (data sizes, trainer, the launcher's job lines) is not on the console ...
    assert "data: " not in console and "Launching" not in console and "trainer: accelerator" not in console
    # ... but in each trial's own log
    for n in range(6):
        log = (_sweep_dir(root) / str(n) / "rep.log").read_text()
        assert f"trial {n}: data: " in log and "trainer: accelerator" in log


def _printed_commands(root: Path) -> list[list[list[str]]]:
    """Every command the study printed: the report's code blocks whose lines all start with an interpreter
    (a block of several lines runs them in turn), and the console's "retrain it:" line; each once."""
    blocks = (_sweep_dir(root) / "report.md").read_text().split("```\n")[1::2]
    console = (root / "console.txt").read_text()
    texts = [
        *blocks,
        *(line.split("retrain it: ", 1)[1] for line in console.splitlines() if "retrain it: " in line),
    ]
    sequences = []
    for text in texts:
        commands = [shlex.split(line) for line in text.strip().splitlines()]
        if all(c and os.path.isfile(c[0]) and os.path.samefile(c[0], sys.executable) for c in commands):
            sequences.append(commands)
    return list({repr(s): s for s in sequences}.values())


def _runs(where: Path) -> list[Path]:
    """The single runs made under `where` (the latest links left out)."""
    return [p.parent for p in where.glob("outputs/*/*/metrics.json") if not p.parent.is_symlink()]


def test_every_command_the_report_and_the_console_print_runs_as_printed(root, tmp_path):
    sequences = _printed_commands(root)
    commands = [c for s in sequences if len(s) == 1 for c in s]
    by_role = {
        "study": [c for c in commands if "hydra.sweeper.n_trials=6" in c],
        "more": [c for c in commands if "hydra.sweeper.n_trials=12" in c],
        "focused": [c for c in commands if f"search=focused/{STUDY}" in c],
        "retrain": [c for c in commands if c[2:] == [f"preset=optimized/{STUDY}"]],
        "seeds": [c for c in commands if "seed=42,777,2024" in c and "data.split_seed=42" not in c],
        "held": [c for c in commands if "seed=42,777,2024" in c and "data.split_seed=42" in c],
        "fallback": [c for c in commands if "-m" not in c and "models.optimizer.lr" in " ".join(c)],
        "top_k": [c for c in commands if c[1].endswith("predict.py") and f"study_name={STUDY}" in c],
    }
    assert all(len(found) >= 1 for found in by_role.values()), {k: len(v) for k, v in by_role.items()}
    (ensemble,) = [s for s in sequences if len(s) == 2]  # retrain on 5 folds, then predict with them
    folds_dir = ensemble[0][-1].removeprefix("hydra.run.dir=")
    assert ensemble[0][2:] == [f"preset=optimized/{STUDY}", "data.folds=5", f"hydra.run.dir={folds_dir}"]
    assert folds_dir.startswith("outputs/") and folds_dir.endswith(f"/{STUDY}_5folds")
    assert ensemble[1][1].endswith("predict.py") and f"runs=[{folds_dir}]" in ensemble[1]
    for n, sequence in enumerate(sequences):  # each in a fresh directory holding a copy of the study
        where = tmp_path / f"run{n}"
        shutil.copytree(root / "studies", where / "studies")
        for command in _with_runs_between(sequence, ensemble):
            result = subprocess.run(command, cwd=where, capture_output=True, text=True, timeout=600)
            if "models.optimizer.lr=-1" in command:  # the refused run between the steps
                assert result.returncode == 1 and "lr" in result.stderr, result.stderr[-2000:]
                continue
            assert result.returncode == 0, (shlex.join(command), result.stderr[-3000:])
            output = result.stdout + result.stderr
            assert "Traceback" not in output, shlex.join(command)
        if command in by_role["study"]:  # the study has its trials: the same command only reports again
            assert "the study has its 6 trials" in output and len(_trials(where, STUDY)) == 6
        if command in by_role["more"]:
            assert len([t for t in _trials(where, STUDY) if t.state.is_finished()]) == 12
        if command in by_role["focused"]:
            assert len([t for t in _trials(where, f"{STUDY}_focused") if t.state.is_finished()]) == 6
        if command in by_role["seeds"] + by_role["held"]:
            summary = json.loads(next(where.glob("multirun/*/latest/multirun_summary.json")).read_text())
            assert summary["completed"] == 3
            assert summary["split"]["moved"] == (command in by_role["seeds"])
        if command in by_role["retrain"] + by_role["fallback"]:
            assert len(_runs(where)) == 1
        if command in by_role["top_k"]:
            predicted = json.loads((where / "outputs" / "predict" / "latest" / "metrics.json").read_text())
            top = [f"trial_{t.number}" for t in _study(root).best_trials[:1]]
            assert [m["name"] for m in predicted["members"]][:1] == top and predicted["labelled"]
        if sequence is ensemble:
            predicted = json.loads((where / "outputs" / "predict" / "latest" / "metrics.json").read_text())
            assert len(predicted["members"]) == 5 and predicted["ensemble"]["min_agree"] == 3
            assert (where / "outputs" / "predict" / "latest" / "submission.csv").is_file()


def _with_runs_between(sequence: list[list[str]], ensemble: list[list[str]]) -> list[list[str]]:
    """The ensemble's two steps with a refused run and a later one-model run between them, as a user's
    session has them: the predict step must still find the k-fold run."""
    if sequence is not ensemble:
        return sequence
    retrain, predict = ensemble
    refused = [*retrain[:3], "models.optimizer.lr=-1"]
    later = [*retrain[:3], "trainer.max_epochs=1"]
    return [retrain, refused, later, predict]


def _trials(where: Path, study: str) -> list:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{where / 'studies' / study}.db").trials
