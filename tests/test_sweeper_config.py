"""The sweeper's config is typed end to end: what the schema refuses is one line naming the key, before
anything is written; the engine's parts keep to their side (no Lightning in the sweeper, one storage)."""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from sweeplab.config import typed
from sweeplab.errors import SweeplabError
from sweeplab.launching.executors import LauncherBatches
from sweeplab.launching.jobs import _TaskRef, pack_task
from sweeplab.search.liveness import link_latest
from sweeplab.search.plan import make_plan
from sweeplab.search.schema import GuardConf, SweeplabSweeperConf
from sweeplab.search.storage import open_storage, sqlite_path
from tests.conftest import CONF, QUICK, ROOT, run_cli


def _group_options(name: str) -> list[str] | None:
    folder = CONF / name.replace(".", "/")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None


def _plan(compose_cfg, tmp_path, overrides):
    cfg = compose_cfg(overrides, keep_hydra=True)
    return make_plan(cfg.hydra.sweeper, cfg, [], _group_options, root_dir=str(tmp_path))


def test_the_plan_carries_the_schemas_defaults_and_the_configs_values(compose_cfg, tmp_path):
    plan = _plan(compose_cfg, tmp_path, ["hparams_search=optuna_fast"])
    assert isinstance(plan.conf, SweeplabSweeperConf)
    assert plan.conf.heartbeat_interval == SweeplabSweeperConf.heartbeat_interval  # untouched: the default
    assert plan.conf.n_trials == 15 and plan.conf.quick_validation.epochs == 3  # from optuna_fast.yaml
    assert plan.conf.sampler["seed"] == 42  # ${seed}, resolved against the job config
    assert isinstance(plan.conf.guard, GuardConf)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+hydra.sweeper.n_trails=5",
            r"^hydra\.sweeper\.n_trails=5: not a key of hydra\.sweeper \(did you mean n_trials\?\)$",
        ),
        (
            "+hydra.sweeper.guard.lead=true",
            r"^hydra\.sweeper\.guard\.lead=True: not a key of hydra\.sweeper\.guard \(did you mean leader\?\)$",
        ),
        (
            "hydra.sweeper.quick_validation.folds=1",
            r"^hydra\.sweeper\.quick_validation\.folds=1: must be an integer >= 2",
        ),
        (
            "hydra.sweeper.heartbeat_interval=1",
            r"^hydra\.sweeper\.heartbeat_interval=1: must be a whole number of seconds >= 5 \(the minimum",
        ),
        ("hydra.sweeper.rescue.top_k=-1", r"^hydra\.sweeper\.rescue\.top_k=-1: must be an integer >= 0$"),
        (
            "hydra.sweeper.checkpoints.keep=-2",
            r"^hydra\.sweeper\.checkpoints\.keep=-2: must be an integer >= 0, or null$",
        ),
        ("+hydra.sweeper.focus.into=x", r"^hydra\.sweeper\.focus\.into='x': allowed keys: from$"),
        (
            "hydra.sweeper.n_trials=???",
            r"^hydra\.sweeper\.n_trials='\?\?\?': needs a value; give one on the command line",
        ),
    ],
)
def test_a_key_the_schema_refuses_is_one_line_and_writes_nothing(compose_cfg, tmp_path, override, message):
    with pytest.raises(SweeplabError, match=message):
        _plan(compose_cfg, tmp_path, ["hparams_search=optuna_fast", override])
    assert not (tmp_path / "studies").exists()


@dataclass
class _Schema:
    flag: bool = False
    rate: float | None = None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"flag": "yes"}, r"^k\.flag='yes': must be a bool$"),  # YAML's words for true are for YAML
        ({"rate": "fast"}, r"^k\.rate='fast': Value 'fast' of type 'str' could not be converted to Float$"),
        ({"rat": 1.0}, r"^k\.rat=1\.0: not a key of k \(did you mean rate\?\)$"),
    ],
)
def test_typed_refuses_what_the_schema_does_not_take_in_one_line(given, message):
    with pytest.raises(SweeplabError, match=message):
        typed(_Schema, given, "k")


def test_typed_takes_a_config_node_a_mapping_or_a_dataclass():
    node = OmegaConf.create({"x": {"flag": True, "rate": "${y}"}, "y": 0.5})
    assert typed(_Schema, node.x, "k") == _Schema(True, 0.5)  # interpolations read the node's own root
    assert typed(_Schema, {"rate": 1}, "k") == _Schema(False, 1.0)  # an int is a float
    assert typed(_Schema, _Schema(True), "k") == _Schema(True)


@pytest.mark.slow
def test_a_key_the_sweeper_does_not_know_stops_the_cli_with_one_line(tmp_path):
    result = run_cli(["-m", "hparams_search=optuna_fast", "+hydra.sweeper.n_trails=5", *QUICK], cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "hydra.sweeper.n_trails=5: not a key of hydra.sweeper (did you mean n_trials?)"
        in result.stderr.splitlines()
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists() and not (tmp_path / "multirun").exists()


def test_the_sweeper_side_imports_no_lightning_no_training_and_no_reporting():
    code = (
        "import sys\n"
        "import hydra_plugins.sweeplab_sweeper.sweeplab_sweeper\n"
        "from sweeplab.search import loop, plan, pruning, records, space, storage, trial\n"
        "from sweeplab.launching import executors, interrupts, ranks\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'timm')\n"
        "       or m.startswith(('sweeplab.training', 'sweeplab.reporting', 'sweeplab.data', 'sweeplab.models'))]\n"
        "print(sorted(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_one_storage_per_url_and_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    assert sqlite_path(url) == tmp_path / "one.db"
    sweep = open_storage(url, heartbeat_interval=30)
    assert open_storage(url) is sweep  # a job in the sweep's process shares its engine
    assert open_storage(url, heartbeat_interval=30) is sweep
    fork = mp.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=_child_storage, args=(url, id(sweep), send))
    child.start()
    child.join(60)
    assert receive.recv() is True  # a forked worker opens its own


def _child_storage(url: str, parents: int, send) -> None:
    send.send(id(open_storage(url)) != parents)


def test_launcher_batches_run_trial_n_as_job_n_consecutive_numbers_together():
    calls = []

    def launch(batch, first):
        calls.append((first, [list(o) for o in batch]))
        return [
            JobReturn(status=JobStatus.COMPLETED, _return_value=float(first + i)) for i in range(len(batch))
        ]

    batches = LauncherBatches(launch, n_jobs=3)
    for number in (4, 5, 6):
        batches.start(number, [f"x={number}"])
    assert not batches.has_room() and batches.running == [4, 5, 6]
    assert [(n, o.value) for n, o in batches.wait_any()] == [(4, 4.0), (5, 5.0), (6, 6.0)]
    assert calls == [(4, [["x=4"], ["x=5"], ["x=6"]])] and batches.running == []
    batches.start(8, ["x=8"])
    batches.start(10, ["x=10"])
    assert [n for n, _ in batches.wait_any()] == [8, 10]
    assert calls[1:] == [(8, [["x=8"]]), (10, [["x=10"]])]  # a gap: one launch each, numbers kept


def test_a_focused_study_without_its_earlier_study_is_one_line(compose_cfg, tmp_path):
    with pytest.raises(SweeplabError, match=r"^hydra\.sweeper\.focus\.from='\?\?\?': needs a value"):
        _plan(compose_cfg, tmp_path, ["hparams_search=optuna_focused"])
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    ("overrides", "under"),
    [
        (["hparams_search=optuna_fast"], "multirun/digits_test_resnet/digits_test_resnet_fast/"),
        (
            ["hparams_search=optuna", "hydra.sweeper.study_name=doc cls/v2"],
            "multirun/digits_test_resnet/doc_cls_v2/",
        ),
        (["model=resnet18"], "multirun/digits_resnet18/"),  # not a study: the basic sweeper's multirun
    ],
)
def test_a_studys_sweep_dir_is_named_after_the_study(compose_cfg, overrides, under):
    cfg = compose_cfg(overrides, keep_hydra=True)
    sweep_dir = str(cfg.hydra.sweep.dir)
    assert sweep_dir.startswith(under) and re.fullmatch(
        r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", sweep_dir[len(under) :]
    )


def test_latest_points_at_the_newest_sweep_dir_and_a_real_folder_is_left_alone(tmp_path, caplog):
    first, second = tmp_path / "study" / "2026-01-01_00-00-00", tmp_path / "study" / "2026-01-02_00-00-00"
    for sweep_dir in (first, second):
        sweep_dir.mkdir(parents=True)
        link_latest(sweep_dir)
        assert (tmp_path / "study" / "latest").resolve() == sweep_dir.resolve()
    assert os.readlink(tmp_path / "study" / "latest") == second.name  # relative: the tree can move
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == [first.name, second.name, "latest"]

    (tmp_path / "other" / "latest").mkdir(parents=True)
    (tmp_path / "other" / "run").mkdir()
    link_latest(tmp_path / "other" / "run")
    assert not (tmp_path / "other" / "latest").is_symlink() and "is not a link" in caplog.text


def test_quick_validation_leaves_a_key_the_space_searches_and_does_not_claim_it(compose_cfg, tmp_path):
    searched = _plan(compose_cfg, tmp_path, ["hparams_search=optuna_fast"])  # data.batch_size: choice(32, 48)
    assert "trainer.max_epochs=3" in searched.quick_overrides
    assert not [o for o in searched.quick_overrides if o.startswith("data.batch_size=")]
    fixed = _plan(compose_cfg, tmp_path, ["hparams_search=optuna_fast", "~search"])
    assert "data.batch_size=32" in fixed.quick_overrides  # the preset's, when the batch size is not searched


def _unpacked_and_called(packed: bytes, send) -> None:
    from sweeplab.launching.jobs import unpack_task

    context, task = unpack_task(packed)
    send.send((context, task(OmegaConf.create({"x": 3.0, "y": 1, "z": 4.0}))))


def test_a_task_function_travels_to_a_fresh_process_by_name_when_hydra_main_wraps_it_else_by_value():
    from tests.apps.sphere import sphere  # as @hydra.main left it: the app's name for its wrapper

    task = inspect.unwrap(sphere)  # what Hydra hands a sweeper
    assert _TaskRef.of(task) == _TaskRef("tests.apps.sphere", "sphere")
    offset = 2.0

    def local(cfg) -> float:  # reachable by no name: it travels with cloudpickle
        return cfg.x * offset

    assert _TaskRef.of(local) is None
    spawn = mp.get_context("spawn")  # a fresh interpreter, as a trial's process is
    for fn, expected in ((local, 6.0), (task, 2.0)):
        receive, send = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_unpacked_and_called, args=(pack_task("the context", fn), send))
        child.start()
        assert receive.recv() == ("the context", expected)
        child.join(120)


def test_a_named_task_function_travels_by_name_beside_resolvers_that_need_cloudpickle():
    from tests.apps.sphere import sphere

    task = inspect.unwrap(sphere)
    OmegaConf.register_new_resolver("sweeplab_test_twice", lambda x: 2 * x)  # Hydra ships it: a closure
    try:
        _, sent, _ = pickle.loads(pack_task("the context", task))
    finally:
        OmegaConf.clear_resolver("sweeplab_test_twice")
    assert sent == _TaskRef("tests.apps.sphere", "sphere")  # the app's classes stay the same classes


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        ([], {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1}),
        (["hydra/sweeper/pruner=none"], {"_target_": "optuna.pruners.NopPruner"}),
        (["hydra/sweeper/pruner=median"], {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5}),
    ],
)
def test_the_balanced_presets_pruner_is_replaced_whole_by_one_picked_on_the_command_line(
    compose_cfg, pruner, expected
):
    """The preset's pruner settings live in a pruner config of their own, so none of them is left behind
    on another pruner (a NopPruner given n_startup_trials fails to build)."""
    cfg = compose_cfg(["hparams_search=optuna", *pruner], keep_hydra=True)
    chosen = OmegaConf.to_container(cfg.hydra.sweeper.pruner)
    assert {k: chosen.get(k) for k in expected} == expected
    if pruner == ["hydra/sweeper/pruner=none"]:
        assert chosen == expected
