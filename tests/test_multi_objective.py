"""Multi-objective studies: validation F1 against seconds per epoch or parameter count, the Pareto
front, and exporting one of its trials with runners/report.py (by number or by a budget)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweeplab.reporting.pick import pick_trial
from sweeplab.search.records import ATTR_OUTPUT_DIR, STUDY_METRICS
from sweeplab.search.view import StudyView
from tests.conftest import CONF, run_cli, sweep, sweep_dirs

pytestmark = pytest.mark.slow  # every test here runs CLI sweeps or report commands

EXP = "trade"
STUDY = f"{EXP}_multi"
# one short epoch per trial: the study's shape is under test, not its values
TINY = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
]
# one intra-op thread: tiny trials on shared cores run several times faster than with threads spinning
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# (val/f1, time/median_epoch_s) of the hand-made study: the front is 0, 2, 3; trial 3 dominates trial 1
HANDMADE = [(0.90, 3.0), (0.85, 2.0), (0.70, 0.5), (0.85, 1.5)]


def dominates(a: list[float], b: list[float]) -> bool:
    """a is at least as good as b in both objectives (F1 up, seconds down) and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'studies' / name}.db")


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _metrics_json(trial: FrozenTrial) -> dict:
    return json.loads((Path(trial.user_attrs[ATTR_OUTPUT_DIR]) / "metrics.json").read_text())


def _job(root: Path, overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The job config runners/train.py composes from `root` (where the generated presets are found)."""
    monkeypatch.chdir(root)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=False)


def _files(root: Path) -> dict[str, int]:
    """Every file under `root` and when it was written, but the study databases (reading one may touch it)."""
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and ".db" not in p.suffixes
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A real four-trial hparams_search=optuna_multi study, run as a user runs it (plots and report come
    from runners/report.py below)."""
    where = tmp_path_factory.mktemp("multi")
    args = ["-m", "hparams_search=optuna_multi", f"exp_name={EXP}", "hydra.sweeper.n_trials=4", *TINY]
    args.append("hydra.sweeper.report=false")
    sweep(args, where, env=ONE_THREAD)
    return where


@pytest.fixture(scope="module")
def handmade(root) -> Path:
    """Beside the real study: `handmade`, the real trials (their overrides, so they export) with known values
    and one pruned trial, and `single`, a single-objective study."""
    real = _complete(_study(root, STUDY))
    storage = f"sqlite:///{root / 'studies' / 'handmade'}.db"
    study = optuna.create_study(study_name="handmade", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr(STUDY_METRICS, ["val/f1", "time/median_epoch_s"])
    for source, values in zip(real, HANDMADE, strict=True):
        study.add_trial(
            create_trial(
                params=source.params,
                distributions=source.distributions,
                values=list(values),
                user_attrs=source.user_attrs,
            )
        )
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1}))
    single = optuna.create_study(study_name="single", storage=f"sqlite:///{root / 'studies' / 'single'}.db")
    single.add_trial(create_trial(value=0.5))
    return root


def test_the_multi_study_maximizes_f1_minimizes_seconds_per_epoch_and_its_front_is_non_dominated(root):
    study = _study(root, STUDY)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.user_attrs[STUDY_METRICS] == ["val/f1", "time/median_epoch_s"]
    complete = _complete(study)
    assert len(complete) == 4
    front = {t.number: t for t in study.best_trials}
    assert front

    sweep = sweep_dirs(root, EXP, STUDY)[-1]
    listed = json.loads((sweep / "best_params.json").read_text())["pareto_front"]
    assert {p["trial"]: p["values"] for p in listed} == {n: t.values for n, t in front.items()}
    for t in front.values():  # no complete trial dominates a trial of the front ...
        assert not [o.number for o in complete if dominates(o.values, t.values)], t.number
    for t in complete:  # ... and every trial off the front is dominated
        assert t.number in front or any(dominates(f.values, t.values) for f in front.values())
    for t in front.values():  # the second objective is what the trial measured (and wrote) at its best epoch
        metrics = _metrics_json(t)
        assert metrics["value"] == t.values[0] and t.values[1] > 0
        assert metrics["extra_objectives"] == {"time/median_epoch_s": t.values[1]}
    assert not (root / "studies" / "conf" / "preset" / "optimized" / f"{STUDY}.yaml").exists()  # no "best"


def test_with_model_params_as_second_objective_the_values_are_parameter_counts(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_multi",
        "exp_name=size",
        "extra_objectives=[model/params]",
        "model=choice(test_resnet,test_convnext)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.report=false",
        *TINY,
    ]
    sweep(args, tmp_path, env=ONE_THREAD)
    study = _study(tmp_path, "size_multi")
    assert study.user_attrs[STUDY_METRICS] == ["val/f1", "model/params"]
    counts: dict[str, set[float]] = {}
    for t in _complete(study):
        assert t.values[1] == int(t.values[1]) > 0
        assert _metrics_json(t)["extra_objectives"] == {"model/params": t.values[1]}
        counts.setdefault(t.params["model"], set()).add(t.values[1])
    assert all(len(c) == 1 for c in counts.values())  # a model's size does not depend on other params
    assert len(set().union(*counts.values())) == len(counts)


def test_report_exports_a_picked_pareto_trial_as_a_preset_that_reproduces_it(root, monkeypatch):
    study = _study(root, STUDY)
    trial = max(study.best_trials, key=lambda t: t.number)
    result = run_cli(
        [f"study_name={STUDY}", f"pick.trial={trial.number}"],
        cwd=root,
        script="runners/report.py",
        env=ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name = f"optimized/{STUDY}_trial{trial.number}"
    assert f"preset={name}" in result.stdout + result.stderr
    assert (root / "studies" / "conf" / "preset" / f"{name}.yaml").is_file()

    job = _job(root, [f"preset={name}"], monkeypatch)
    for key, value in trial.params.items():
        assert OmegaConf.select(OmegaConf.create(job), key) == value, key
    ran = OmegaConf.load(Path(trial.user_attrs[ATTR_OUTPUT_DIR]) / ".hydra" / "config.yaml")
    assert job == OmegaConf.to_container(ran, resolve=False)  # the whole config, fixed overrides and all

    out = root / "reports" / STUDY
    picked = json.loads((out / "best_params.json").read_text())["picked"]
    assert (picked["trial"], picked["on_pareto_front"], picked["preset"]) == (trial.number, True, name)
    report = (out / "report.md").read_text()
    assert "## Exported trial" in report and f"picked by number, pick.trial={trial.number}" in report
    assert f"train.py preset={name}\n" in report and "is not on the Pareto front" not in report
    assert "## Pareto front" in report and "(no order among them)" in report
    for t in study.best_trials:  # the command that exports each trial of the front
        assert f"runners/report.py study_name={STUDY} pick.trial={t.number}\n" in report
    assert f"runners/report.py study_name={STUDY} pick.budget=" in report
    assert (out / "plots" / "pareto_front.png").is_file()


def test_a_budget_picks_the_best_f1_within_it_with_ties_going_to_the_faster_trial(handmade, monkeypatch):
    view = StudyView.load("handmade", f"sqlite:///{handmade / 'studies' / 'handmade'}.db")
    front = {t.number for t in view.study.best_trials}
    assert front == {0, 2, 3}
    expected = {99.0: 0, 3.0: 0, 2.2: 3, 2.0: 3, 1.5: 3, 1.2: 2, 0.5: 2}  # 1 and 3 tie on F1: 3 is faster
    for budget, number in expected.items():
        pick = pick_trial(view, budget=budget)
        assert pick.trial.number == number and number in front, budget
    assert pick_trial(view, trial=1).dominated_by == 3 and pick_trial(view, trial=3).dominated_by is None

    result = run_cli(
        ["study_name=handmade", "pick.budget=2.2"], cwd=handmade, script="runners/report.py", env=ONE_THREAD
    )
    assert result.returncode == 0, result.stderr[-3000:]
    job = _job(handmade, ["preset=optimized/handmade_trial3"], monkeypatch)
    chosen = view.study.trials[3]
    for key, value in chosen.params.items():
        assert OmegaConf.select(OmegaConf.create(job), key) == value, key
    picked = json.loads((handmade / "reports" / "handmade" / "best_params.json").read_text())["picked"]
    assert picked["trial"] == 3 and picked["on_pareto_front"] is True
    assert picked["reason"] == (
        "picked by budget, pick.budget=2.2: the best val/f1 among the trials with time/median_epoch_s <= 2.2"
    )
    assert (
        "picked by budget, pick.budget=2.2" in (handmade / "reports" / "handmade" / "report.md").read_text()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["study_name=handmade", "pick.trial=99"],
            "pick.trial=99: no trial 99 in study handmade; complete trials: 0, 1, 2, 3; Pareto front: 0, 2, 3",
        ),
        (
            ["study_name=handmade", "pick.trial=4"],
            "pick.trial=4: trial 4 is PRUNED in study handmade; complete trials: 0, 1, 2, 3; Pareto front: 0, 2, 3",
        ),
        (
            ["study_name=handmade", "pick.budget=0.4"],
            "pick.budget=0.4: no complete trial has time/median_epoch_s <= 0.4; the smallest achieved is 0.5 (trial 2)",
        ),
        (
            ["study_name=single", "pick.budget=1"],
            "pick.budget=1: needs a study with several objectives; single optimizes only value "
            "(pick.trial=<n> exports any trial)",
        ),
        (
            ["study_name=handmade", "pick.trial=1", "pick.budget=2"],
            "pick={'trial': 1, 'budget': 2}: set pick.trial or pick.budget, not both",
        ),
    ],
)
def test_a_bad_pick_is_one_line_and_writes_nothing(handmade, args, message):
    before = _files(handmade)
    result = run_cli(args, cwd=handmade, script="runners/report.py", env=ONE_THREAD)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("pick")]
    assert ours == [message]
    assert _files(handmade) == before
